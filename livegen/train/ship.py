"""From trained checkpoints to shipped models: ONNX export, the parity gate, int8
quantization and its qualification, held-out NLL with its baselines, and the manifest.

    models/NAME.int8.onnx       the conditional model, int8 (fp32 NAME.onnx instead when
                                int8 does not qualify)
    models/NAME.json            the manifest the runtime checks before it runs anything
    models/NAME.notes.npz       the training pieces' note-on pitches: the copy guard's index
                                and the eval's copying reference
    models/NAME.guide.npz       the validation pieces' tokens and keys: the guide that
                                undriven controls follow (charrnn.Guide)
    models/NAME.split.npz       the held-out test pieces, training token counts and a sample
                                of training pieces: `livegen eval charrnn` without a parse

The fp32 graph (the parity reference, the int8 source) and the ablation (the same net
trained with zeroed controls; its held-out NLL is recorded in the manifest) stay in the
staging folder beside the checkpoint (out/charrnn/export): models/ holds what plays.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import platform
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from livegen.generators import runtime
from livegen.generators.charrnn import (
    KIND,
    CharRNN,
    sample,
    step_latencies,
    uniform,
)
from livegen.music import events, features
from livegen.train import data
from livegen.train.charrnn import load_checkpoint, net_from_checkpoint
from livegen.train.export import export_onnx, quantize_int8, torch_rollout
from livegen.train.nets import CharRNN as TorchCharRNN

log = logging.getLogger(__name__)

PARITY_STEPS = 500
PARITY_TOLERANCE = 1e-4
INT8_NLL_TOLERANCE = 0.01  # int8 ships only within 1% of the fp32 held-out NLL


def tensors(layers: int, hidden: int) -> dict[str, Any]:
    """The graph's tensors as the manifest records them ("batch" = dynamic)."""
    state = {"dtype": "float32", "shape": [layers, "batch", hidden]}
    return {"inputs": {"token": {"dtype": "int64", "shape": ["batch"]},
                       "controls": {"dtype": "float32",
                                    "shape": ["batch", features.CONTROL_SIZE]},
                       "h": state, "c": state},
            "outputs": {"logits": {"dtype": "float32", "shape": ["batch", events.VOCAB_SIZE]},
                        "h_out": state, "c_out": state}}


def file_entry(path: Path) -> dict[str, Any]:
    return {"path": path.name, "sha256": runtime.sha256_of(path), "bytes": path.stat().st_size}


def build_manifest(checkpoint: dict, files: dict[str, Path], default_variant: str,
                   corpus_summary: dict, *, zero_controls: bool) -> dict[str, Any]:
    """The manifest of DESIGN.md's Models section for one exported net."""
    shape = checkpoint["shape"]
    options = checkpoint["options"]
    state = checkpoint["state"]
    encoding = options.get("encoding", "onehot")
    return {
        "kind": KIND,
        "format": runtime.MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "files": {variant: file_entry(path) for variant, path in files.items()},
        "default_variant": default_variant,
        "vocabulary": {"size": events.VOCAB_SIZE, "shift_s": events.SHIFT_S,
                       "layout": [[r.kind, r.first, r.size, r.first_value]
                                  for r in events.VOCABULARY]},
        "primer_token": data.PRIMER_TOKEN,
        "tensors": tensors(shape["layers"], shape["hidden_size"]),
        "state": {"layers": shape["layers"], "hidden_size": shape["hidden_size"]},
        "controls": features.control_layout(encoding),
        "zero_controls": zero_controls,
        "net": shape,
        "training": {
            "corpus": "music21 bundled corpus: Bach chorales (chorales.Iterator), Essen "
                      "folk songs, O'Neill's 1850, Ryan's Mammoth",
            "tempo_bpm": data.TEMPO_BPM, "velocity": data.VELOCITY,
            "transpose": data.TRANSPOSE, "split_seed": data.SPLIT_SEED,
            "split_fractions": list(data.SPLIT_FRACTIONS), "pieces": corpus_summary,
            "command": options.get("command", ""), "device": checkpoint.get("device"),
            "torch": checkpoint.get("torch"), "epochs": state["epoch"],
            "steps": state["step"], "minutes": round(state["elapsed_s"] / 60, 1),
            "valid_nll_windows": state["best_valid"], "window": options["window"],
            "augment": options.get("augment", False), "init": options.get("init"),
            "batch": options["batch"], "lr": options["lr"], "seed": options["seed"],
            "history": state["history"]},
        "metrics": {},
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def parity(net: TorchCharRNN, model: CharRNN, controls: np.ndarray,
           steps: int = PARITY_STEPS, seed: int = 0) -> float:
    """Max |torch - ONNX Runtime| over the logits of `steps` steps in which ONNX Runtime's
    own samples are fed back (controls: one row per step, cycled)."""
    state = model.initial_state()
    token = model.primer_token
    tokens, rows, ort_logits = [], [], []
    for i in range(steps):
        row = controls[i % len(controls)]
        logits, state = model.step(token, row, state)
        tokens.append(token)
        rows.append(row)
        ort_logits.append(logits)
        token = sample(logits, temperature=1.0, top_p=1.0, uniform=uniform(seed, i))
    reference = torch_rollout(net, np.asarray(tokens), np.asarray(rows))
    return float(np.abs(reference - np.stack(ort_logits)).max())


def _export_variant(checkpoint: dict, net: TorchCharRNN, models: Path, name: str,
                    corpus: data.Corpus, *, zero_controls: bool) -> tuple[Path, CharRNN]:
    """Export fp32 to models/NAME.onnx with a manifest there, and check its parity."""
    path = models / f"{name}.onnx"
    export_onnx(net, path)
    manifest = build_manifest(checkpoint, {"fp32": path}, "fp32", corpus.summary(),
                              zero_controls=zero_controls)
    write_manifest(models / f"{name}.json", manifest)
    model = CharRNN(models / f"{name}.json")
    controls = model.control_vectors(corpus.test[0].tokens)
    if zero_controls:
        controls = np.zeros_like(controls)
    difference = parity(net, model, controls)
    log.info("%s: torch vs ONNX Runtime over %d fed-back steps: max |diff| %.2e", path.name,
             PARITY_STEPS, difference)
    if not difference <= PARITY_TOLERANCE:
        raise RuntimeError(f"{path}: ONNX logits differ from torch by {difference:.2e} "
                           f"(> {PARITY_TOLERANCE}); the export is wrong, not shipped")
    return path, model


def ship(checkpoint_path: Path, ablation_path: Path | None, models: Path, name: str,
         int8: str = "auto", staging: Path | None = None) -> dict[str, Any]:
    """Export, check and describe the models; returns the conditional model's manifest.
    Everything is made in `staging` (default: beside the checkpoint, export/); models/
    gets the variant that plays, its manifest and data files."""
    from livegen.evaluate import UNIFORM_NLL, sequence_nll, unigram_nll

    torch.set_num_threads(1)  # latency figures below are for one thread, as the runtime
    staging = staging or checkpoint_path.parent / "export"
    corpus = data.load_corpus()
    test = [p.tokens for p in corpus.test]
    train = [p.tokens for p in corpus.train]
    models.mkdir(parents=True, exist_ok=True)

    checkpoint = load_checkpoint(checkpoint_path)
    net = net_from_checkpoint(checkpoint)
    fp32_path, fp32 = _export_variant(checkpoint, net, staging, name, corpus,
                                      zero_controls=False)
    nll = {"conditional": sequence_nll(fp32, test)[0], "unigram": unigram_nll(train, test),
           "uniform": UNIFORM_NLL}
    latency = {"fp32": _latency(staging / f"{name}.json", "fp32")}
    log.info("fp32: held-out NLL %.4f, step p50 %.3f ms p99 %.3f ms", nll["conditional"],
             latency["fp32"]["p50_ms"], latency["fp32"]["p99_ms"])

    shipped = "fp32"
    int8_report: dict[str, Any] = {"shipped": False}
    if int8 != "no":
        int8_path = staging / f"{name}.int8.onnx"
        quantize_int8(fp32_path, int8_path)
        trial = build_manifest(checkpoint, {"fp32": fp32_path, "int8": int8_path}, "int8",
                               corpus.summary(), zero_controls=False)
        write_manifest(staging / f"{name}.json", trial)
        quantized = CharRNN(staging / f"{name}.json", variant="int8")
        int8_nll = sequence_nll(quantized, test)[0]
        latency["int8"] = _latency(staging / f"{name}.json", "int8")
        within = int8_nll <= nll["conditional"] * (1 + INT8_NLL_TOLERANCE)
        # p50, not p99: on a shared machine the tail is other people's load.
        faster = latency["int8"]["p50_ms"] < latency["fp32"]["p50_ms"]
        int8_report = {"nll": int8_nll, "nll_ratio": int8_nll / nll["conditional"],
                       "faster": faster, "shipped": int8 == "yes" or (within and faster)}
        log.info("int8: held-out NLL %.4f (%+.2f%%), step p50 %.3f ms p99 %.3f ms -> %s",
                 int8_nll, 100 * (int8_nll / nll["conditional"] - 1),
                 latency["int8"]["p50_ms"], latency["int8"]["p99_ms"],
                 "shipped" if int8_report["shipped"] else "not shipped")
        if int8_report["shipped"]:
            shipped = "int8"
    source = staging / (f"{name}.int8.onnx" if shipped == "int8" else f"{name}.onnx")
    target = models / source.name
    for stale in (models / f"{name}.onnx", models / f"{name}.int8.onnx"):
        if stale != target:
            stale.unlink(missing_ok=True)
    shutil.copyfile(source, target)

    ablation_record = None
    previous = _previous_ablation(models / f"{name}.json", corpus)
    if ablation_path is None and previous is not None:
        # No new ablation: the one measured on this same test split still holds (it
        # never saw the controls this export changes).
        nll["ablation"], ablation_record = previous
        log.info("ablation: held-out NLL %.4f, recorded %s", nll["ablation"],
                 ablation_record.get("measured"))
    if ablation_path is not None:
        ablation_checkpoint = load_checkpoint(ablation_path)
        ablation_net = net_from_checkpoint(ablation_checkpoint)
        ablation_file, ablation = _export_variant(
            ablation_checkpoint, ablation_net, staging, f"{name}-ablation", corpus,
            zero_controls=True)
        nll["ablation"] = sequence_nll(ablation, test, zero_controls=True)[0]
        ablation_record = {"command": ablation_checkpoint["options"].get("command", ""),
                           "fp32_sha256": runtime.sha256_of(ablation_file),
                           "measured": datetime.date.today().isoformat()}
        log.info("ablation: held-out NLL %.4f", nll["ablation"])

    manifest = build_manifest(checkpoint, {shipped: target}, shipped, corpus.summary(),
                              zero_controls=False)
    manifest["metrics"] = {"nll": nll, "int8": int8_report, "latency": latency,
                           "latency_machine": f"{cpu_name()}, {platform.machine()}, "
                                              "1 thread",
                           "parity_max_abs_diff_tolerance": PARITY_TOLERANCE}
    if ablation_record is not None:
        manifest["ablation"] = ablation_record
    attach_data(manifest, models, name, corpus)
    write_manifest(models / f"{name}.json", manifest)
    log.info("shipped %s (%s, %.1f MB)", target, shipped, target.stat().st_size / 1e6)
    if not math.isfinite(nll["conditional"]):
        raise RuntimeError("held-out NLL is not finite")
    return manifest


def _previous_ablation(manifest_path: Path, corpus: data.Corpus
                       ) -> tuple[float, dict[str, Any]] | None:
    """(held-out NLL, provenance) of the ablation a shipped manifest recorded, if it was
    measured on this corpus's test split."""
    if not manifest_path.is_file():
        return None
    old = json.loads(manifest_path.read_text(encoding="utf-8"))
    recorded = old.get("metrics", {}).get("nll", {}).get("ablation")
    test = old.get("training", {}).get("pieces", {}).get("test", {}).get("ids_sha256")
    if recorded is None or test != corpus.summary()["test"]["ids_sha256"]:
        return None
    return float(recorded), old.get("ablation", {"measured": old.get("created")})


TRAIN_SAMPLE = 24          # training pieces whose control timelines the eval sends
TRAIN_SAMPLE_MIN_S = 30.0  # each at least this long


def attach_data(manifest: dict[str, Any], models: Path, name: str,
                corpus: data.Corpus) -> None:
    """Write the data files that ship beside the model (the module docstring) and record
    them, with their sha256, and the corpus's key profile, in the manifest."""
    keys = data.Keys.of(corpus.train)
    rng = np.random.default_rng(data.SPLIT_SEED)
    long_enough = [p for p in corpus.train
                   if events.tokens_to_notes(p.tokens.tolist())[-1].end >= TRAIN_SAMPLE_MIN_S]
    picks = rng.choice(len(long_enough), min(TRAIN_SAMPLE, len(long_enough)), replace=False)
    sample = [long_enough[i] for i in sorted(picks)]
    files = {"train_notes": models / f"{name}.notes.npz",
             "guide": models / f"{name}.guide.npz",
             "eval_split": models / f"{name}.split.npz"}
    data.write_train_notes(files["train_notes"], corpus.train)
    data.write_guide(files["guide"], corpus.valid)
    data.write_eval_split(files["eval_split"], corpus, sample)
    manifest["data"] = {kind: file_entry(path) for kind, path in files.items()}
    manifest["key_profile"] = [round(float(x), 6) for x in keys.profile]
    manifest["training"]["in_scale"] = round(keys.in_scale, 4)
    log.info("data beside the model: %s (%.2f MB); %.1f%% of the training note-ons lie in "
             "their piece's major scale", ", ".join(p.name for p in files.values()),
             sum(p.stat().st_size for p in files.values()) / 1e6, 100 * keys.in_scale)


def refresh_data(models: Path, name: str) -> dict[str, Any]:
    """(Re)write the data files of a shipped model and record them in its manifest,
    keeping its ONNX files (`livegen export charrnn --data-only`)."""
    path = models / f"{name}.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    attach_data(manifest, models, name, data.load_corpus())
    write_manifest(path, manifest)
    return manifest


def cpu_name() -> str:
    """The CPU's model name (Linux), for labelling timings."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _latency(manifest: Path, variant: str) -> dict[str, float]:
    # A fresh session: one that has just run batch-64 evaluation steps measured 20-150%
    # slower per single step (its memory arena has grown).
    timings = step_latencies(CharRNN(manifest, variant=variant), steps=3000) * 1e3
    return {"p50_ms": round(float(np.percentile(timings, 50)), 4),
            "p99_ms": round(float(np.percentile(timings, 99)), 4)}
