"""From a trained DCRNN checkpoint to shipped models: one ONNX graph per segment length,
the torch/ONNX parity gate, int8 and its qualification, and the manifest.

    models/NAME.16.onnx, NAME.32.onnx   the generator for one and two 4/4 bars (fp32)
    models/NAME.16.int8.onnx, ...       dynamic int8, only if it qualifies
    models/NAME.json                    the manifest the runtime checks before it runs
    models/NAME-untrained.json, .32.onnx  the same net with its initial weights (seeded),
                                        a baseline for `livegen eval dcrnn`, never played

A graph: (z float32 (B, noise_size), scale float32 (B, 12)) -> planes float32 (B, 2, T,
keys), B dynamic. The recurrent layers run from the zero state, so the 16-step graph gives
the first bar of the 32-step one.
"""

from __future__ import annotations

import datetime
import json
import logging
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from livegen.generators import runtime
from livegen.generators.dcrnn import DCRNN, KIND, tensors
from livegen.train import roll_data
from livegen.train.dcrnn import SEGMENT_STEPS, generator_from_checkpoint, load_checkpoint
from livegen.train.export import OPSET
from livegen.train.nets import DCRNNGenerator, DCRNNShape
from livegen.train.ship import cpu_name, file_entry, write_manifest

log = logging.getLogger(__name__)

LENGTHS = (16, 32)  # one and two 4/4 bars
PARITY_TOLERANCE = 1e-4
INT8_CELL_AGREEMENT = 0.99  # int8 ships only if its binarised cells agree this often
CONDITION_LAYOUT = ("12 pitch classes C, C#, ..., B: 1/k on each of the k classes of the "
                    "scale (roll.scale_of); the uniform 1/12 is 'no key'")


class FixedLength(nn.Module):
    """The generator at one segment length, for export."""

    def __init__(self, net: DCRNNGenerator, steps: int) -> None:
        super().__init__()
        self.net, self.steps = net, steps

    def forward(self, z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self.net(z, scale, self.steps)


def export_onnx(net: DCRNNGenerator, steps: int, path: Path) -> None:
    """Write the graph of `net` at `steps` steps to `path` (weights inline: one file, one
    hash)."""
    import onnx

    module = FixedLength(net.cpu().eval(), steps).eval()
    batch = 2  # not 1, so the exporter cannot specialise the batch dimension away
    example = (torch.zeros(batch, net.shape.noise_size), torch.full((batch, 12), 1 / 12))
    batch_dim = torch.export.Dim("batch", min=1, max=4096)
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with torch.no_grad():
        program = torch.onnx.export(module, example, input_names=["z", "scale"],
                                    output_names=["planes"],
                                    dynamic_shapes={"z": {0: batch_dim},
                                                    "scale": {0: batch_dim}},
                                    opset_version=OPSET, dynamo=True, external_data=False)
    program.optimize()
    model = program.model_proto
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path), save_as_external_data=False)
    log.info("exported %s (%.2f MB)", path, path.stat().st_size / 1e6)


def quantize_int8(source: Path, target: Path) -> None:
    """Dynamic int8 quantization (per-channel weights) of the MatMuls and Gemms, weights
    as uint8. With int8 weights (U8S8) ONNX Runtime multiplies with VPMADDUBSW on CPUs
    without VNNI (AVX2 only), whose 16-bit pair sums saturate: on such a CPU (an AMD EPYC
    here) the shipped graph's planes agreed with fp32 in sign on 98.4 % of cells, against
    99.87 % on the Intel CPU it was checked on, and two gestures' bars came out alike.
    U8U8 widens before it multiplies and cannot saturate: 99.87 % on that CPU too (a
    VNNI CPU was not at hand to compare)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QUInt8, per_channel=True,
                     op_types_to_quantize=["MatMul", "Gemm"])


def lineage(checkpoint: dict, depth: int = 10) -> list[dict[str, Any]]:
    """Every run these weights come from, newest first: each checkpoint's command, steps
    and minutes, then those of the checkpoint it started from (--init), as far as those
    files are still there to read."""
    runs = []
    while checkpoint is not None and len(runs) < depth:
        state = checkpoint.get("state", {})
        commands = state.get("commands") or [
            {"command": checkpoint.get("options", {}).get("command", ""), "from_step": 0}]
        runs.append({"commands": commands, "steps": state.get("step", 0),
                     "minutes": round(state.get("elapsed_s", 0.0) / 60, 1)})
        source = (state.get("initialised_from") or {}).get("path")
        checkpoint = (load_checkpoint(Path(source)) if source and Path(source).is_file()
                      else None)
        if source and checkpoint is None:
            runs.append({"path": source, "missing": True})
    return runs


def build_manifest(checkpoint: dict, files: dict[int, dict[str, Path]], default_variant: str,
                   *, trained: bool = True) -> dict[str, Any]:
    """The manifest of DESIGN.md's Models section: per length its files and tensors; the
    phrase graph's also at the top, where runtime.load_manifest looks."""
    shape = DCRNNShape.from_dict(checkpoint["shape"])
    options = checkpoint.get("options", {})
    state = checkpoint.get("state", {})
    graphs = {str(steps): {"files": {v: file_entry(p) for v, p in variants.items()},
                           "tensors": tensors(shape.noise_size, shape.keys, steps)}
              for steps, variants in files.items()}
    phrase = graphs[str(SEGMENT_STEPS)]
    history = state.get("history", [])
    return {
        "kind": KIND,
        "format": runtime.MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "trained": trained,
        "files": phrase["files"],
        "default_variant": default_variant,
        "tensors": phrase["tensors"],
        "graphs": graphs,
        "phrase_steps": SEGMENT_STEPS,
        "steps_per_beat": 4,
        "noise_size": shape.noise_size,
        "noise_range": [-1.0, 1.0],
        "condition": {"size": 12, "layout": CONDITION_LAYOUT},
        "keys": {"low": shape.low, "count": shape.keys,
                 "note": "12-key blocks from a C (MIDI low = C1)"},
        "planes": ["frames", "onsets"],
        "net": shape.to_dict(),
        "training": {
            "corpus": "music21 bundled corpus, all parts merged: " + ", ".join(
                roll_data.COLLECTIONS) + f" (Palestrina: {roll_data.PALESTRINA_CAP} "
                f"movements, seed {roll_data.SOURCE_SEED})",
            "pieces": checkpoint.get("corpus", {}), "split_seed": roll_data.data.SPLIT_SEED,
            "split_fractions": list(roll_data.data.SPLIT_FRACTIONS),
            "transpose": roll_data.TRANSPOSE, "segment_steps": SEGMENT_STEPS,
            "command": options.get("command", ""), "commands": state.get("commands", []),
            "initialised_from": state.get("initialised_from"),
            "lineage": lineage(checkpoint),
            "device": checkpoint.get("device"),
            "torch": checkpoint.get("torch"), "steps": state.get("step", 0),
            "minutes": round(state.get("elapsed_s", 0.0) / 60, 1),
            "batch": options.get("batch"), "critic_steps": options.get("critic_steps"),
            "lr": options.get("lr"), "gp_weight": options.get("gp_weight"),
            "binary": options.get("binary"), "no_key": options.get("no_key"),
            "feature_weight": options.get("feature_weight", 0.0),
            "feature_slope": options.get("feature_slope"),
            "autoencode": options.get("autoencode", 0.0), "ema": options.get("ema", 0.0),
            "seed": options.get("seed"), "best_gap": state.get("best_gap"),
            "validation_data": checkpoint.get("validation_data"),
            "history": history},
        "metrics": {},
    }


def parity(net: DCRNNGenerator, model: DCRNN, steps: int, count: int = 64,
           seed: int = 0) -> float:
    """Max |torch - ONNX Runtime| over the planes of `count` random codes and scales."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(-1, 1, (count, net.shape.noise_size)).astype(np.float32)
    scale = rng.random((count, 12)).astype(np.float32)
    scale /= scale.sum(axis=1, keepdims=True)
    with torch.no_grad():
        reference = net(torch.from_numpy(z), torch.from_numpy(scale), steps).numpy()
    return float(np.abs(reference - model.planes(z, scale, steps)).max())


def segment_latency(model: DCRNN, steps: int, calls: int = 300) -> dict[str, float]:
    """ms per single-segment graph call (batch 1), after 20 untimed calls."""
    z = model.fixed[None]
    scale = np.full((1, 12), 1 / 12, dtype=np.float32)
    timings = []
    for i in range(calls + 20):
        started = time.perf_counter()
        model.planes(z, scale, steps)
        if i >= 20:
            timings.append(time.perf_counter() - started)
    timings_ms = np.asarray(timings) * 1e3
    return {"p50_ms": round(float(np.percentile(timings_ms, 50)), 3),
            "p99_ms": round(float(np.percentile(timings_ms, 99)), 3)}


def _cell_agreement(a: DCRNN, b: DCRNN, count: int = 128) -> float:
    """The share of binarised cells (frames and onsets at 0) on which two models agree."""
    rng = np.random.default_rng(1)
    z = rng.uniform(-1, 1, (count, a.noise_size)).astype(np.float32)
    scale = np.tile(np.asarray([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], np.float32) / 7,
                    (count, 1))
    return float(((a.planes(z, scale) > 0) == (b.planes(z, scale) > 0)).mean())


def ship(checkpoint_path: Path, models: Path, name: str = "dcrnn", int8: str = "auto",
         untrained: bool = True) -> dict[str, Any]:
    """Export, check and describe the model; returns its manifest."""
    torch.set_num_threads(1)
    models.mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(checkpoint_path)
    net = generator_from_checkpoint(checkpoint)
    files: dict[int, dict[str, Path]] = {}
    for steps in LENGTHS:
        path = models / f"{name}.{steps}.onnx"
        export_onnx(net, steps, path)
        files[steps] = {"fp32": path}
    manifest_path = models / f"{name}.json"
    write_manifest(manifest_path, build_manifest(checkpoint, files, "fp32"))
    fp32 = DCRNN(manifest_path)
    report: dict[str, Any] = {"parity_max_abs_diff": {}, "latency": {},
                              "latency_machine": f"{cpu_name()}, {platform.machine()}, "
                                                 "1 thread, batch 1"}
    for steps in LENGTHS:
        difference = parity(net, fp32, steps)
        report["parity_max_abs_diff"][str(steps)] = difference
        log.info("%s.%d: torch vs ONNX Runtime max |diff| %.2e", name, steps, difference)
        if not difference <= PARITY_TOLERANCE:
            raise RuntimeError(f"{files[steps]['fp32']}: ONNX planes differ from torch by "
                               f"{difference:.2e} (> {PARITY_TOLERANCE}); not shipped")
        report["latency"][f"fp32.{steps}"] = segment_latency(fp32, steps)
    default = "fp32"
    int8_report: dict[str, Any] = {"shipped": False}
    if int8 != "no":
        for steps in LENGTHS:
            quantize_int8(files[steps]["fp32"], models / f"{name}.{steps}.int8.onnx")
            files[steps]["int8"] = models / f"{name}.{steps}.int8.onnx"
        write_manifest(manifest_path, build_manifest(checkpoint, files, "fp32"))
        quantized = DCRNN(manifest_path, variant="int8")
        agreement = _cell_agreement(DCRNN(manifest_path), quantized)
        for steps in LENGTHS:
            report["latency"][f"int8.{steps}"] = segment_latency(quantized, steps)
        faster = (report["latency"][f"int8.{SEGMENT_STEPS}"]["p50_ms"]
                  < report["latency"][f"fp32.{SEGMENT_STEPS}"]["p50_ms"])
        qualifies = agreement >= INT8_CELL_AGREEMENT and faster
        int8_report = {"cell_agreement": round(agreement, 5), "faster": faster,
                       "shipped": int8 == "yes" or qualifies}
        log.info("int8: %.3f%% of binarised cells agree with fp32; %s -> %s",
                 100 * agreement, "faster" if faster else "not faster",
                 "shipped" if int8_report["shipped"] else "not shipped")
        if not int8_report["shipped"]:
            for steps in LENGTHS:
                files[steps].pop("int8").unlink()
        elif qualifies:
            default = "int8"
    report["int8"] = int8_report
    manifest = build_manifest(checkpoint, files, default)
    manifest["export"] = report
    write_manifest(manifest_path, manifest)
    if untrained:
        ship_untrained(checkpoint, models, f"{name}-untrained")
    for variants in files.values():
        for variant, path in variants.items():
            log.info("shipped %s (%s, %.2f MB)", path, variant, path.stat().st_size / 1e6)
    return manifest


def ship_untrained(checkpoint: dict, models: Path, name: str) -> Path:
    """The same net with the initial weights of its training seed: `livegen eval dcrnn`'s
    untrained baseline (the manifest says trained: false)."""
    shape = DCRNNShape.from_dict(checkpoint["shape"])
    torch.manual_seed(checkpoint.get("options", {}).get("seed", 1))
    net = DCRNNGenerator(shape).eval()
    path = models / f"{name}.{SEGMENT_STEPS}.onnx"
    export_onnx(net, SEGMENT_STEPS, path)
    bare = {"shape": checkpoint["shape"], "options": {"seed": checkpoint.get("options", {})
                                                      .get("seed", 1)}}
    manifest = build_manifest(bare, {SEGMENT_STEPS: {"fp32": path}}, "fp32", trained=False)
    write_manifest(models / f"{name}.json", manifest)
    return models / f"{name}.json"


def export_command(argv: list[str]) -> int:
    """`livegen export dcrnn [options]`."""
    import argparse

    from livegen.errors import LivegenError

    parser = argparse.ArgumentParser(
        prog="livegen export dcrnn",
        description="Export the best DCRNN checkpoint to one ONNX graph per segment length "
                    "(16 and 32 steps) with the manifest; checks torch/ONNX parity, "
                    "quantizes to int8 and ships that too if it qualifies; writes the "
                    "untrained baseline beside it.")
    parser.add_argument("--checkpoint", type=Path, default=Path("out/dcrnn/best.pt"))
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="folder to write NAME.*.onnx and NAME.json to")
    parser.add_argument("--name", default="dcrnn")
    parser.add_argument("--int8", choices=["auto", "yes", "no"], default="auto",
                        help="auto: ship int8 only if >= 99%% of its binarised cells agree "
                             "with fp32 and it is faster")
    options = parser.parse_args(argv)
    if not options.checkpoint.is_file():
        raise LivegenError(f"{options.checkpoint}: no such checkpoint; train first "
                           "(`livegen train dcrnn`, README: The DCRNN)")
    manifest = ship(options.checkpoint, options.models, options.name, options.int8)
    print(json.dumps(manifest["export"], indent=2))
    return 0

