"""From a trained score network to shipped models: one ONNX graph per window length, the
torch/ONNX parity gate, the time per evaluation, and the manifest.

    models/NAME-tN.onnx   the denoiser for windows of N 16ths: (x float32 (B, N, 105),
                          sigma float32 (B,)) -> denoised float32 (B, N, 105), B dynamic;
                          weights inline (one file, one hash)
    models/NAME.json      the manifest the runtime checks before it runs anything

N is fixed per graph: the exporter bakes the window length into the attention's reshapes
(GENERATORS.md section 4), so each segment length gets its own graph.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livegen.generators import langevin, runtime
from livegen.train.langevin import load_checkpoint, net_from_checkpoint
from livegen.train.nets import ScoreNet
from livegen.train.ship import cpu_name, file_entry

log = logging.getLogger(__name__)

OPSET = 18
PARITY_TOLERANCE = 1e-4
PARITY_SIGMAS = (0.05, 0.3, 1.0, 5.0, 20.0)


def tensors(steps: int) -> dict[str, Any]:
    """The graph's tensors as the manifest records them ("batch" = dynamic)."""
    window = {"dtype": "float32", "shape": ["batch", steps, langevin.roll.CHORALE_DIM]}
    return {"inputs": {"x": window, "sigma": {"dtype": "float32", "shape": ["batch"]}},
            "outputs": {"denoised": window}}


def export_onnx(net: ScoreNet, steps: int, path: Path) -> None:
    """Write the denoiser graph for windows of `steps` 16ths to `path` (weights inline)."""
    import onnx

    net = net.cpu().eval()  # dropout off: the original sampled with it on
    example = (torch.zeros(2, steps, net.shape.dim), torch.ones(2))
    batch = torch.export.Dim("batch", min=1, max=4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with torch.no_grad():
        program = torch.onnx.export(net, example, input_names=["x", "sigma"],
                                    output_names=["denoised"],
                                    dynamic_shapes={"x": {0: batch}, "sigma": {0: batch}},
                                    opset_version=OPSET, dynamo=True, external_data=False)
    program.optimize()
    model = program.model_proto
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=False)
    log.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)


def parity(net: ScoreNet, model: langevin.ScoreModel, steps: int, seed: int = 0) -> float:
    """Max |torch − ONNX Runtime| of the denoised output on noisy real-looking input at
    several noise levels, batch 3."""
    rng = np.random.default_rng(seed)
    worst = 0.0
    for sigma in PARITY_SIGMAS:
        tokens = np.stack([rng.integers(1, size, size=(3, steps))
                           for size in langevin.roll.VOICE_SIZES], axis=-1)
        x = (langevin.onehot(tokens) + sigma * rng.standard_normal(
            (3, steps, langevin.roll.CHORALE_DIM))).astype(np.float32)
        sigmas = np.full(3, sigma, np.float32)
        with torch.no_grad():
            reference = net(torch.from_numpy(x), torch.from_numpy(sigmas)).numpy()
        worst = max(worst, float(np.abs(reference - model.denoise(x, sigmas)).max()))
    return worst


def latency(manifest: Path, steps: int, evaluations: int = 400) -> dict[str, float]:
    """ms per evaluation at batch 1, one thread, in a fresh session."""
    model = langevin.ScoreModel(manifest, threads=1)
    model.measure(steps, 50)
    model._timed = 0  # the warm-up does not count
    model.measure(steps, evaluations)
    timings = model._timings[:evaluations] * 1e3
    return {"p50_ms": round(float(np.percentile(timings, 50)), 3),
            "p99_ms": round(float(np.percentile(timings, 99)), 3)}


def build_manifest(checkpoint: dict, files: dict[int, Path]) -> dict[str, Any]:
    """The manifest of DESIGN.md's Models section for the exported graphs."""
    options = checkpoint["options"]
    state = checkpoint["state"]
    history = state["history"]
    return {
        "kind": langevin.KIND,
        "format": runtime.MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "files": {f"fp32-t{steps}": file_entry(path) for steps, path in files.items()},
        "default_variant": "fp32",
        "graphs": {"fp32": {str(steps): f"fp32-t{steps}" for steps in files}},
        "tensors": {str(steps): tensors(steps) for steps in files},
        "encoding": langevin.encoding(),
        "output": "denoised: D(x, sigma), the estimate of the clean one-hots; "
                  "score = (D - x) / sigma^2",
        "schedule": {"sigma_max": langevin.SIGMA_MAX, "sigma_min": langevin.SIGMA_MIN,
                     "rho": langevin.RHO, "trained_sigma_range":
                         [options["sigma_min"], options["sigma_max"]],
                     "trained_sigma_distribution": {
                         "kind": options.get("sigma_distribution", "loguniform"),
                         "centre": options.get("sigma_centre"),
                         "spread": options.get("sigma_spread"), "per": "sample"},
                     "given_cells": "clean" if options.get("given_share", 0) > 0
                                    else "noised",
                     "sampler": "DDIM steps on the VE process over EDM-spaced levels, "
                                "final denoise, per-voice argmax; inpainting by replacement "
                                "(given cells as given_cells says)"},
        "net": checkpoint["shape"],
        "training": {
            "data": checkpoint["data"], "command": options.get("command", ""),
            "device": checkpoint.get("device"), "torch": checkpoint.get("torch"),
            "steps": state["step"], "minutes": round(state["elapsed_s"] / 60, 1),
            "batch": options["batch"], "lr": options["lr"], "ema": options["ema"],
            "seed": options["seed"], "crop_lengths": options["lengths"],
            "valid_loss": state["best_valid"], "valid_last": history[-1] if history else None,
            "history": history},
        "metrics": {},
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def ship(checkpoint_path: Path, models: Path, name: str = "langevin",
         lengths: tuple[int, ...] = (32, 48)) -> dict[str, Any]:
    """Export, check and describe the model; returns the manifest."""
    torch.set_num_threads(1)
    checkpoint = load_checkpoint(checkpoint_path)
    net = net_from_checkpoint(checkpoint)
    too_long = [n for n in lengths if n > net.shape.max_steps]
    if too_long:
        raise ValueError(f"windows {too_long} are longer than the net's {net.shape.max_steps} "
                         "positions")
    models.mkdir(parents=True, exist_ok=True)
    files = {steps: models / f"{name}-t{steps}.onnx" for steps in lengths}
    for steps, path in files.items():
        export_onnx(net, steps, path)
    manifest_path = models / f"{name}.json"
    manifest = build_manifest(checkpoint, files)
    write_manifest(manifest_path, manifest)
    model = langevin.ScoreModel(manifest_path)
    differences = {}
    for steps in lengths:
        differences[steps] = parity(net, model, steps)
        log.info("%s: torch vs ONNX Runtime: max |diff| %.2e", files[steps].name,
                 differences[steps])
        if not differences[steps] <= PARITY_TOLERANCE:
            raise RuntimeError(f"{files[steps]}: ONNX output differs from torch by "
                               f"{differences[steps]:.2e} (> {PARITY_TOLERANCE}); the export "
                               "is wrong, not shipped")
    manifest["metrics"] = {
        "parity_max_abs_diff": {str(k): v for k, v in differences.items()},
        "parity_tolerance": PARITY_TOLERANCE,
        "latency_per_evaluation": {str(steps): latency(manifest_path, steps)
                                   for steps in lengths},
        "latency_machine": f"{cpu_name()}, {platform.machine()}, 1 thread"}
    write_manifest(manifest_path, manifest)
    for path in files.values():
        log.info("shipped %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return manifest


def export_command(rest: list[str]) -> int:
    """`livegen export langevin [options]`."""
    import argparse

    from livegen.errors import LivegenError

    parser = argparse.ArgumentParser(
        prog="livegen export langevin",
        description="Export the best checkpoint to one ONNX graph per window length with "
                    "the manifest, after the torch/ONNX parity check.")
    parser.add_argument("--checkpoint", type=Path, default=Path("out/langevin/best.pt"))
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="folder to write NAME-tN.onnx and NAME.json to")
    parser.add_argument("--name", default="langevin")
    parser.add_argument("--lengths", default="32,48",
                        help="window lengths in 16ths: a bar of context plus the segment "
                             "(default %(default)s: 1- and 2-bar segments in 4/4)")
    options = parser.parse_args(rest)
    if not options.checkpoint.is_file():
        raise LivegenError(f"{options.checkpoint}: no such checkpoint; train first "
                           "(`livegen train langevin`, README: The Langevin chorale model)")
    try:
        lengths = tuple(int(n) for n in options.lengths.split(","))
        manifest = ship(options.checkpoint, options.models, options.name, lengths)
    except ValueError as exc:
        raise LivegenError(str(exc)) from None
    for steps, figures in manifest["metrics"]["latency_per_evaluation"].items():
        print(f"T={steps}: {figures['p50_ms']:.2f} ms/evaluation p50, "
              f"{figures['p99_ms']:.2f} ms p99")
    return 0
