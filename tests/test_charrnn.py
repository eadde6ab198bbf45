"""The Char-RNN runtime (generators/charrnn.py): the export's parity with torch, the sampler,
the step API the engine uses, and that running it never imports torch.

A tiny random-weight net is exported once for this module (the export path is the real
one); the shipped model has its own test at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livegen.generators import charrnn
from livegen.generators.charrnn import CharRNN, control_vector, major_scale, sample, uniform
from livegen.music import events, features

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "charrnn.json"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(torch net, manifest path) of a freshly exported 2 x 24 net with random weights."""
    import torch  # the [train] extra, part of dev

    from livegen.train.export import export_onnx
    from livegen.train.nets import CharRNN as TorchCharRNN
    from livegen.train.nets import NetShape
    from livegen.train.ship import build_manifest, write_manifest

    torch.manual_seed(0)
    net = TorchCharRNN(NetShape(embedding_size=8, hidden_size=24, layers=2)).eval()
    with torch.no_grad():  # larger weights than the default init: livelier, sharper logits
        for parameter in net.parameters():
            parameter.mul_(3)
    folder = tmp_path_factory.mktemp("tiny")
    export_onnx(net, folder / "tiny.onnx")
    checkpoint = {"shape": net.shape.to_dict(),
                  "options": {"window": 8, "batch": 1, "lr": 0.0, "seed": 0},
                  "state": {"epoch": 0, "step": 0, "elapsed_s": 0.0, "best_valid": 0.0,
                            "history": []}}
    manifest = build_manifest(checkpoint, {"fp32": folder / "tiny.onnx"}, "fp32", {},
                              zero_controls=False)
    write_manifest(folder / "tiny.json", manifest)
    return net, folder / "tiny.json"


@pytest.fixture(scope="module")
def model(tiny):
    return CharRNN(tiny[1])


@pytest.fixture(scope="module")
def soft(tiny, tmp_path_factory):
    """The tiny net's graph under a manifest of the soft encoding (as a run of
    `livegen train charrnn` with its defaults records it)."""
    from livegen.train.ship import build_manifest, write_manifest

    folder = tiny[1].parent
    checkpoint = {"shape": tiny[0].shape.to_dict(),
                  "options": {"window": 8, "batch": 1, "lr": 0.0, "seed": 0,
                              "encoding": "soft", "augment": True},
                  "state": {"epoch": 0, "step": 0, "elapsed_s": 0.0, "best_valid": 0.0,
                            "history": []}}
    manifest = build_manifest(checkpoint, {"fp32": folder / "tiny.onnx"}, "fp32", {},
                              zero_controls=False)
    write_manifest(folder / "soft.json", manifest)
    return CharRNN(folder / "soft.json")


def test_onnx_matches_torch_over_500_fed_back_steps(tiny, model):
    from livegen.train.ship import parity

    net, _ = tiny
    rng = np.random.default_rng(1)
    controls = np.stack([control_vector(rng.random(), rng.random(), rng.random(12))
                         for _ in range(50)])
    assert parity(net, model, controls, steps=500) <= 1e-4


def test_uniform_depends_only_on_seed_and_index():
    draws = [uniform(7, i) for i in range(2000)]
    assert draws == [uniform(7, i) for i in range(2000)]
    assert all(0 <= u < 1 for u in draws)
    assert uniform(7, 3) != uniform(8, 3)
    assert abs(np.mean(draws) - 0.5) < 0.03  # roughly uniform


def test_sample_is_a_function_of_logits_and_the_uniform():
    logits = np.random.default_rng(0).normal(size=388).astype(np.float32)
    tokens = [sample(logits, temperature=0.9, top_p=0.9, uniform=u)
              for u in np.linspace(0, 0.999, 50)]
    again = [sample(logits, temperature=0.9, top_p=0.9, uniform=u)
             for u in np.linspace(0, 0.999, 50)]
    assert tokens == again


def test_top_p_keeps_only_the_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    p = charrnn.probabilities(logits, top_p=0.75)
    assert p[2] == 0 and p[3] == 0
    assert p[:2] == pytest.approx([0.625, 0.375])
    # however small top_p is, the most likely token stays
    assert charrnn.probabilities(logits, top_p=0.01).tolist() == [1, 0, 0, 0]
    seen = {sample(logits, top_p=0.75, uniform=u) for u in np.linspace(0, 0.999, 200)}
    assert seen == {0, 1}


def test_temperature_sharpens_and_flattens():
    logits = np.log(np.array([0.6, 0.3, 0.1]))
    cold = charrnn.probabilities(logits, temperature=0.3)
    warm = charrnn.probabilities(logits, temperature=3.0)
    assert cold[0] > 0.9
    assert warm.max() - warm.min() < 0.2
    assert charrnn.probabilities(logits, temperature=1.0) == pytest.approx([0.6, 0.3, 0.1])
    with pytest.raises(ValueError):
        charrnn.probabilities(logits, temperature=0)


def test_step_is_pure_and_rollback_regenerates_the_same_tokens(model):
    controls = control_vector(0.5, 0.5, major_scale(0))
    seed = 11

    def play(state, token, start, count):
        tokens, states = [], []
        for index in range(start, start + count):
            logits, state = model.step(token, controls, state)
            token = sample(logits, top_p=0.95, uniform=uniform(seed, index))
            tokens.append(token)
            states.append((state, token))
        return tokens, states

    first, states = play(model.initial_state(), model.primer_token, 0, 60)
    saved_state, saved_token = states[29]
    h_before = saved_state.h.copy()
    again, _ = play(saved_state, saved_token, 30, 30)  # roll back to event 30, regenerate
    assert again == first[30:]
    assert np.array_equal(saved_state.h, h_before)  # stepping never changed it
    with pytest.raises(ValueError):
        saved_state.h[0, 0, 0] = 1.0  # states are read-only


def test_generate_is_deterministic_under_a_seed(model):
    vector = control_vector(0.5, 0.5, np.zeros(12))
    a = charrnn.generate(model, 3.0, vector, seeds=[1, 2])
    b = charrnn.generate(model, 3.0, vector, seeds=[1, 2])
    c = charrnn.generate(model, 3.0, vector, seeds=[3])
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert a[0].tokens != c[0].tokens
    for result in a:
        assert result.tokens[0] == model.primer_token
        assert all(0 <= n.start <= n.end <= 3.0 for n in result.notes)


def test_control_vector_is_features_controls_to_vector():
    vector = control_vector(1.0, 0.0, major_scale(0))
    assert vector.shape == (features.CONTROL_SIZE,)
    assert vector[features.PITCH_SLICE].argmax() == 9
    assert vector[features.DENSITY_SLICE].argmax() == 0
    assert vector[features.HISTOGRAM_SLICE].sum() == pytest.approx(1)
    assert np.array_equal(vector, features.controls_to_vector(1.0, 0.0, major_scale(0)))


def test_importing_and_running_the_runtime_never_imports_torch(tiny):
    _, manifest = tiny
    code = f"""
import sys
import numpy as np
from livegen.generators.charrnn import CharRNN, control_vector, generate
model = CharRNN({str(manifest)!r})
result = generate(model, 1.0, control_vector(0.5, 0.5, np.zeros(12)), seeds=[0])
assert result[0].tokens
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'music21'))
print('IMPORTED', heavy)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout


def test_manifest_records_the_shapes_the_graph_has(tiny):
    manifest = json.loads(tiny[1].read_text())
    assert manifest["tensors"]["inputs"]["h"]["shape"] == [2, "batch", 24]
    assert manifest["vocabulary"]["size"] == events.VOCAB_SIZE
    assert manifest["controls"]["density_edges"] == list(features.DENSITY_EDGES)


def test_the_shipped_model_loads_verified_and_plays():
    model = CharRNN(SHIPPED)
    result = charrnn.generate(model, 5.0, control_vector(0.5, 0.5, major_scale(0)),
                              seeds=[0])[0]
    assert len(result.notes) > 0
    assert model.providers[-1] == "CPUExecutionProvider"


def test_a_soft_model_is_told_positions_and_leaves_unasked_parts_zero(soft):
    from livegen.control import FREE_TARGETS, Controls
    from livegen.generators.charrnn_step import CharRNNStep

    assert soft.encoding == "soft" and soft.understands_unasked
    assert soft.manifest["controls"]["unasked"] == "zeros"
    gen = CharRNNStep(soft, seed=0)
    assert gen.free == "unasked"  # no guide ships with it
    state = gen.initial()
    vector = gen.plan(state, Controls(pitch=0.5, undriven=("density", "key"))).vector
    assert vector[features.PITCH_SLICE][[4, 5]].tolist() == [0.5, 0.5]
    assert not vector[features.DENSITY_SLICE].any()
    assert not vector[features.HISTOGRAM_SLICE].any()
    assert not gen.plan(state, Controls(undriven=FREE_TARGETS)).vector.any()
    keyed = gen.plan(state, Controls(key=7, undriven=("pitch", "density"))).vector
    np.testing.assert_allclose(keyed[features.HISTOGRAM_SLICE], soft.key_histogram(7))
    tokens = [soft.primer_token, 60, 256 + 49, 60 + 128]
    np.testing.assert_array_equal(soft.control_vectors(tokens),
                                  features.soft_control_vectors(tokens))


def test_data_beside_a_model_is_checked_by_its_hash(tiny, tmp_path):
    from livegen.generators.runtime import ModelError
    from livegen.train.ship import file_entry

    folder = tiny[1].parent
    manifest = json.loads(tiny[1].read_text())
    notes = folder / "tiny.notes.npz"
    np.savez(notes, pitches=np.asarray([60, 62, 64], np.uint8), offsets=np.asarray([0, 3]))
    manifest["data"] = {"train_notes": file_entry(notes)}
    (folder / "data.json").write_text(json.dumps(manifest))
    model = CharRNN(folder / "data.json")
    assert model.data_file("train_notes") == notes
    with pytest.raises(ModelError, match="names no 'guide'"):
        model.data_file("guide")
    notes.write_bytes(notes.read_bytes() + b"!")
    with pytest.raises(ModelError, match="does not match the manifest"):
        model.data_file("train_notes")
    notes.unlink()
    with pytest.raises(ModelError, match="data file missing"):
        model.data_file("train_notes")
