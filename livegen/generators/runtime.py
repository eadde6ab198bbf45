"""ONNX Runtime sessions and model manifests, shared by every generator.

A shipped model is models/NAME.onnx (+ variants) and models/NAME.json, its manifest. Before
anything runs, `load_manifest` reads the manifest, `model_file` checks the ONNX file's
sha256 against it, and `check_graph` compares the session's inputs and outputs with the
tensors the manifest promises. Every mismatch is a LivegenError naming the file and the
fix; nothing is left to fail mid-show.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from livegen.errors import LivegenError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = 1
FIX = ("restore the shipped models with `git checkout models/`, or export this one again "
       "with `livegen export KIND` (KIND: the manifest's kind)")
_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64",
              "tensor(int32)": "int32", "tensor(float16)": "float16"}


class ModelError(LivegenError):
    """A model or manifest that cannot be used as it is."""


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(path: Path, kind: str) -> dict[str, Any]:
    """The manifest at `path`, checked to be readable JSON of the right kind and format."""
    try:
        manifest = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model manifest; {FIX}, or train one "
                         f"(`livegen train {kind}`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not a readable manifest ({exc}); {FIX}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != kind:
        found = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise ModelError(f"{path}: manifest kind is {found!r}, expected {kind!r}; {FIX}")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise ModelError(f"{path}: manifest format {manifest.get('format')!r} is not "
                         f"{MANIFEST_FORMAT}; {FIX}")
    for key in ("files", "default_variant", "tensors"):
        if key not in manifest:
            raise ModelError(f"{path}: manifest has no {key!r}; {FIX}")
    return manifest


def variants(manifest: Mapping[str, Any]) -> list[str]:
    """The variants a manifest ships (e.g. "fp32", "int8")."""
    return sorted(manifest["files"])


def model_file(manifest_path: Path, manifest: Mapping[str, Any], variant: str | None) -> Path:
    """The ONNX file of a variant (None: the manifest's default), after checking that it
    exists and that its sha256 matches the manifest."""
    variant = variant or manifest["default_variant"]
    entry = manifest["files"].get(variant)
    if entry is None:
        raise ModelError(f"{manifest_path}: no variant {variant!r} (shipped: "
                         f"{', '.join(variants(manifest))}); set the config's variant to one")
    path = Path(manifest_path).parent / entry["path"]
    if not path.is_file():
        raise ModelError(f"{path}: model file missing (named by {manifest_path}); {FIX}")
    actual = sha256_of(path)
    if actual != entry["sha256"]:
        raise ModelError(f"{path}: sha256 {actual[:12]}… does not match the manifest's "
                         f"{entry['sha256'][:12]}… ({manifest_path}); the file was changed "
                         f"or belongs to another export; {FIX}")
    return path


def choose_providers(preferred: Sequence[str]) -> list[str]:
    """The preferred execution providers that this ONNX Runtime really has, in order; the
    CPU provider is always last as the fallback."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    chosen = [p for p in preferred if p in available]
    skipped = [p for p in preferred if p not in available]
    if skipped:
        log.debug("execution providers not available here: %s", ", ".join(skipped))
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def make_session(path: Path, providers: Sequence[str] = ("CPUExecutionProvider",),
                 threads: int = 1):
    """An ONNX Runtime InferenceSession for `path` with `threads` intra-op threads, on the
    first of `providers` that is available. Logs the providers that really run."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(path), sess_options=options,
                                       providers=choose_providers(providers))
    except Exception as exc:  # ORT raises its own types for a corrupt or foreign graph
        raise ModelError(f"{path}: ONNX Runtime cannot load it ({exc}); {FIX}") from None
    log.info("%s runs on %s (%d thread%s)", path.name, ", ".join(session.get_providers()),
             threads, "" if threads == 1 else "s")
    return session


def _describe(shape: Sequence[Any]) -> list[Any]:
    # ORT reports a dynamic dimension by its name (or None); the manifest names it too.
    return [d if isinstance(d, int) else "batch" for d in shape]


def check_graph(session, manifest: Mapping[str, Any], path: Path) -> None:
    """The session's inputs and outputs must be exactly the manifest's tensors: names,
    element types and shapes (a dynamic dimension is written "batch")."""
    expected = manifest["tensors"]
    for side, found in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        promised = expected[side]
        actual = {t.name: {"dtype": _ORT_TYPES.get(t.type, t.type), "shape": _describe(t.shape)}
                  for t in found}
        if list(actual) != list(promised):
            raise ModelError(f"{path}: graph {side} {list(actual)} differ from the manifest's "
                             f"{list(promised)}; {FIX}")
        for name, spec in promised.items():
            if actual[name] != {"dtype": spec["dtype"], "shape": list(spec["shape"])}:
                raise ModelError(f"{path}: tensor {name!r} is {actual[name]['dtype']} "
                                 f"{actual[name]['shape']} in the graph but "
                                 f"{spec['dtype']} {spec['shape']} in the manifest; {FIX}")
