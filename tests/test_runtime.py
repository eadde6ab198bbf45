"""Model loading refuses anything that is not the model its manifest describes: a tampered
file, a changed shape, a missing file, another vocabulary. Each refusal is one clear
LivegenError naming the file and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnxruntime
import pytest

from livegen.errors import LivegenError
from livegen.generators import runtime
from livegen.generators.charrnn import CharRNN

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "charrnn.json"

@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the shipped manifest and its ONNX files in tmp_path."""
    manifest = json.loads(SHIPPED.read_text())
    for entry in manifest["files"].values():
        shutil.copy(SHIPPED.parent / entry["path"], tmp_path / entry["path"])
    shutil.copy(SHIPPED, tmp_path / SHIPPED.name)
    return tmp_path / SHIPPED.name


def _edit(manifest_path: Path, change) -> None:
    manifest = json.loads(manifest_path.read_text())
    change(manifest)
    manifest_path.write_text(json.dumps(manifest))


def test_an_untouched_copy_loads(copy):
    model = CharRNN(copy)
    assert model.path.parent == copy.parent
    assert model.variant == json.loads(copy.read_text())["default_variant"]


def test_a_flipped_byte_is_refused_before_anything_runs(copy):
    manifest = json.loads(copy.read_text())
    onnx_file = copy.parent / manifest["files"][manifest["default_variant"]]["path"]
    data = bytearray(onnx_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx_file.write_bytes(bytes(data))
    with pytest.raises(LivegenError, match=r"sha256 .* does not match") as error:
        CharRNN(copy)
    message = str(error.value)
    assert onnx_file.name in message and "git checkout models/" in message
    assert "\n" not in message


def test_a_changed_shape_is_refused(copy):
    def widen(manifest):
        manifest["tensors"]["inputs"]["controls"]["shape"] = ["batch", 33]

    _edit(copy, widen)
    with pytest.raises(LivegenError, match=r"tensor 'controls' is float32 \['batch', 32\] in "
                                           r"the graph but float32 \['batch', 33\]"):
        CharRNN(copy)


def test_a_graph_with_other_state_size_is_refused(copy):
    def state(manifest):
        for side in ("inputs", "outputs"):
            for name, spec in manifest["tensors"][side].items():
                if name in ("h", "c", "h_out", "c_out"):
                    spec["shape"] = [spec["shape"][0], "batch", spec["shape"][2] + 1]

    _edit(copy, state)
    with pytest.raises(LivegenError, match="in the graph but"):
        CharRNN(copy)


def test_another_vocabulary_is_refused(copy):
    _edit(copy, lambda m: m["vocabulary"]["layout"][2].__setitem__(2, 99))
    with pytest.raises(LivegenError, match="vocabulary"):
        CharRNN(copy)


def test_another_control_layout_is_refused(copy):
    _edit(copy, lambda m: m["controls"].__setitem__("density_edges", [1.0, 2.0]))
    with pytest.raises(LivegenError, match="control layout"):
        CharRNN(copy)


def test_a_missing_onnx_file_is_named(copy):
    manifest = json.loads(copy.read_text())
    (copy.parent / manifest["files"]["fp32"]["path"]).unlink()
    with pytest.raises(LivegenError, match="model file missing"):
        CharRNN(copy, variant="fp32")


def test_a_missing_or_broken_manifest_is_named(tmp_path, copy):
    with pytest.raises(LivegenError, match="no such model manifest"):
        CharRNN(tmp_path / "nothing.json")
    copy.write_text("{ not json")
    with pytest.raises(LivegenError, match="not a readable manifest"):
        CharRNN(copy)


def test_an_unshipped_variant_is_named(copy):
    with pytest.raises(LivegenError, match="no variant 'fp16'"):
        CharRNN(copy, variant="fp16")


def test_another_kind_is_refused(copy):
    _edit(copy, lambda m: m.__setitem__("kind", "dcrnn"))
    with pytest.raises(LivegenError, match="kind is 'dcrnn', expected 'charrnn'"):
        CharRNN(copy)


def test_providers_are_filtered_to_the_available_ones():
    chosen = runtime.choose_providers(["NoSuchExecutionProvider", "CPUExecutionProvider"])
    assert chosen == ["CPUExecutionProvider"]
    assert runtime.choose_providers([])[-1] == "CPUExecutionProvider"


def test_the_session_reports_the_provider_that_runs(copy):
    model = CharRNN(copy, providers=("CUDAExecutionProvider", "CPUExecutionProvider"))
    assert model.providers[-1] == "CPUExecutionProvider"
    assert set(model.providers) <= set(onnxruntime.get_available_providers())
