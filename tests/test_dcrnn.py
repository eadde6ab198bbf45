"""The DCRNN: training data from real corpus pieces (onsets keep repeated notes apart, split
by piece, transposition stays in range), the nets, a tiny training run, the export's parity
with torch, the runtime's checks, the segment generator's determinism and its response to
the key and the noise code, and the evaluation's figures on hand-made rolls.

A tiny random-weight net is exported once for this module through the real export path;
the shipped model has its own test at the end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from livegen import evaluate
from livegen.control import Controls
from livegen.errors import LivegenError
from livegen.generators.dcrnn import DCRNN, DCRNNConfig, fixed_code
from livegen.generators.segment import SegmentRequest
from livegen.music import roll as rolls
from livegen.train import roll_data

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "dcrnn.json"
SOURCES = (("chorales", "bach/bwv1.6"), ("chorales", "bach/bwv10.7"),
           ("palestrina", "palestrina/Agnus_01.krn"))


@pytest.fixture(scope="module")
def pieces() -> list[roll_data.RollPiece]:
    """Three real pieces, parsed from music21's bundled corpus as training parses them."""
    found = []
    for source in SOURCES:
        [(piece_id, collection, notes, starts)] = roll_data.parse_source(source)
        found.append(roll_data.RollPiece(piece_id, collection, notes, starts))
    return found


# ---------------------------------------------------------------- data

def test_a_chorale_becomes_a_roll_whose_onsets_keep_repeated_notes_apart(pieces):
    chorale = pieces[0]
    notes = chorale.notes
    whole = chorale.roll()
    # A repeated note: the same pitch struck again the very step the note before it ends.
    repeats = [(a, b) for a in notes for b in notes
               if a[0] == b[0] and a[2] == b[1]]
    assert repeats
    pitch, _, end = repeats[0][0]
    assert whole[end - 1, pitch] > 0 and whole[end, pitch] == rolls.ONSET
    planes = rolls.roll_planes(whole, 24, 108)
    assert planes[1, end, pitch - 24] == 1  # struck again, though it sounded just before
    found = {(n.pitch, n.start, n.end) for n in rolls.grid_notes(whole)}
    assert {tuple(map(int, n)) for n in notes} <= found | _merged_unisons(notes)
    # Without the onset plane the repeated notes merge: the frames alone cannot tell them.
    frames_only = (planes[0] > 0).astype(np.uint8)
    merged = rolls.grid_notes(np.pad(frames_only, ((0, 0), (24, 20))))
    assert len(merged) < len(rolls.grid_notes(whole))


def _merged_unisons(notes: np.ndarray) -> set[tuple[int, int, int]]:
    """Notes of two voices on one key overlap in the merged roll; those are allowed to be
    read back differently."""
    return {tuple(map(int, a)) for a in notes for b in notes
            if a is not b and a[0] == b[0] and a[1] < b[2] and b[1] < a[2]}


def test_ties_are_merged_by_pitch_as_files_write_them():
    from music21 import chord, note, stream, tie

    def tied(element, mark):
        element.tie = tie.Tie(mark) if mark else None
        return element

    part = stream.Part()
    for offset, element in [
            (0.0, tied(note.Note(60, quarterLength=1), "start")),   # start ... stop
            (1.0, tied(note.Note(60, quarterLength=2), "stop")),
            (3.0, tied(note.Note(62, quarterLength=1), "start")),   # the stop left out
            (4.0, tied(note.Note(62, quarterLength=1), None)),
            (5.0, tied(note.Note(64, quarterLength=1), "start")),   # start, continue, stop
            (6.0, tied(note.Note(64, quarterLength=1), "continue")),
            (7.0, tied(note.Note(64, quarterLength=1), "stop")),
            (8.0, tied(note.Note(65, quarterLength=1), "start")),   # a rest between:
            (10.0, tied(note.Note(65, quarterLength=1), "stop")),   # two notes
            (11.0, tied(chord.Chord([60, 64], quarterLength=1), "start")),
            (12.0, tied(chord.Chord([60, 64], quarterLength=1), "stop")),
            (13.0, note.Note(67, quarterLength=1)),                 # struck again:
            (14.0, note.Note(67, quarterLength=1))]:                # not tied
        part.insert(offset, element)
    grace = note.Note(69).getGrace()
    part.insert(15.0, grace)
    assert roll_data.tied_notes(part) == [
        (0.0, 3.0, (60,)), (3.0, 2.0, (62,)), (5.0, 3.0, (64,)), (8.0, 1.0, (65,)),
        (10.0, 1.0, (65,)), (11.0, 2.0, (60, 64)), (13.0, 1.0, (67,)), (14.0, 1.0, (67,))]


def test_segments_start_on_full_bars_of_the_written_beat(pieces):
    chorale, _, palestrina = pieces
    # bwv1.6 is in 4/4 with a one-beat pickup: bars start at step 4, then every 16 steps.
    assert chorale.starts[0] == 4 and set(np.diff(chorale.starts)) == {16}
    # Palestrina writes in 4/2: a half note is the beat, so a bar is 16 steps too.
    assert palestrina.starts[0] == 0 and set(np.diff(palestrina.starts)) == {16}


def test_a_piece_in_three_or_compound_time_gives_no_segments():
    [(_, _, notes, starts)] = roll_data.parse_source(("chorales", "bach/bwv269"))  # 3/4
    assert len(notes) > 100 and len(starts) == 0


def test_split_is_by_piece_and_drops_duplicates(pieces, monkeypatch):
    many = [(f"{c}/piece{i:02d}", c, p.notes + np.asarray([0, 8 * i, 8 * i]), p.starts)
            for i in range(30) for c, p in (("chorales", pieces[0]),
                                            ("palestrina", pieces[2]))]
    many.append(("chorales/zz-copy", "chorales", many[0][2], many[0][3]))
    arrays = {"ids": np.asarray([m[0] for m in many]),
              "collections": np.asarray([m[1] for m in many]),
              "note_offsets": np.concatenate(([0], np.cumsum([len(m[2]) for m in many]))),
              "notes": np.concatenate([m[2] for m in many]),
              "start_offsets": np.concatenate(([0], np.cumsum([len(m[3]) for m in many]))),
              "starts": np.concatenate([m[3] for m in many])}
    monkeypatch.setattr(roll_data, "corpus_rolls", lambda workers=None: arrays)
    corpus = roll_data.load_pieces()
    splits = [{p.id for p in corpus.split(name)} for name in ("train", "valid", "test")]
    assert sum(map(len, splits)) == 60 and len(set().union(*splits)) == 60
    assert "chorales/zz-copy" not in set().union(*splits)
    for name in ("valid", "test"):
        assert {p.collection for p in corpus.split(name)} == {"chorales", "palestrina"}
    again = roll_data.load_pieces()
    assert [p.id for p in again.train] == [p.id for p in corpus.train]


def test_segments_are_transposed_within_the_keys_and_carry_their_scale(pieces):
    source = roll_data.SegmentSource(pieces, 32, 24, 108)
    a = source.draw(64, np.random.default_rng(3))
    b = source.draw(64, np.random.default_rng(3))
    assert np.array_equal(a.rolls, b.rolls) and a.origins == b.origins
    assert not a.rolls[:, :, :24].any() and not a.rolls[:, :, 108:].any()
    shifts = {shift for _, _, shift in a.origins}
    assert len(shifts) > 3 and all(-6 <= s <= 6 for s in shifts)
    by_id = {p.id: p for p in pieces}
    for segment, scale, (piece_id, start, shift) in zip(a.rolls, a.scales, a.origins,
                                                         strict=True):
        original = by_id[piece_id].roll()[start:start + 32]
        assert np.array_equal(segment, rolls.transpose_roll(original, shift))
        assert np.allclose(scale, rolls.scale_of(segment))
        assert start in by_id[piece_id].starts


def test_scale_of_is_the_set_of_sounding_pitch_classes():
    roll = np.zeros((16, 128), np.uint8)
    roll[0:4, [60, 64, 67, 72]] = rolls.SUSTAIN  # C E G C
    scale = rolls.scale_of(roll)
    assert np.allclose(scale[[0, 4, 7]], 1 / 3) and scale.sum() == pytest.approx(1)
    assert np.allclose(rolls.scale_of(np.zeros((16, 128))), 1 / 12)


# ---------------------------------------------------------------- binarisation

def test_hysteresis_holds_a_wavering_note_that_a_threshold_cuts():
    frames = np.full((1, 8, 12), -1.0, np.float32)
    frames[0, :, 0] = [0.6, 0.4, -0.1, 0.3, -0.2, 0.5, -0.9, -0.9]  # held, wavering
    onsets = np.full_like(frames, -1.0)
    planes = np.concatenate([frames, onsets])
    cut = rolls.grid_notes(rolls.binarise(planes, 60, method="threshold"))
    held = rolls.grid_notes(rolls.binarise(planes, 60, method="hysteresis", sustain=-0.5))
    assert [(n.start, n.end) for n in cut] == [(0, 2), (3, 4), (5, 6)]
    assert [(n.pitch, n.start, n.end) for n in held] == [(60, 0, 6)]


def test_the_onset_plane_strikes_a_held_key_again():
    planes = np.full((2, 8, 12), -1.0, np.float32)
    planes[0, 0:8, 4] = 1.0
    planes[1, 4, 4] = 1.0  # struck again at step 4
    for method in ("threshold", "hysteresis"):
        notes = rolls.grid_notes(rolls.binarise(planes, 48, method=method))
        assert [(n.pitch, n.start, n.end) for n in notes] == [(52, 0, 4), (52, 4, 8)]


def test_sampling_draws_from_the_uniforms_it_is_given():
    planes = np.zeros((2, 16, 12), np.float32)  # probability 0.5 everywhere
    uniforms = np.random.default_rng(0).random(planes.shape)
    a = rolls.binarise(planes, 24, method="sample", uniforms=uniforms)
    assert np.array_equal(a, rolls.binarise(planes, 24, method="sample", uniforms=uniforms))
    assert 0.3 < (a[:, 24:36] > 0).mean() < 0.7
    with pytest.raises(ValueError, match="uniforms"):
        rolls.binarise(planes, 24, method="sample")


# ---------------------------------------------------------------- nets and training

TINY = dict(noise_size=16, high_size=16, frame_size=16, critic_filters=(4, 4, 8, 8))


def test_generator_shapes_range_and_causality():
    import torch

    from livegen.train.nets import DCRNNCritic, DCRNNGenerator, DCRNNShape

    torch.manual_seed(0)
    shape = DCRNNShape(**TINY)
    generator = DCRNNGenerator(shape).eval()
    z = torch.rand(3, 16) * 2 - 1
    scale = torch.full((3, 12), 1 / 12)
    with torch.no_grad():
        two_bars = generator(z, scale, 32)
        one_bar = generator(z, scale, 16)
    assert two_bars.shape == (3, 2, 32, 84) and shape.low % 12 == 0  # blocks start at a C
    assert two_bars.abs().max() <= 1
    assert torch.allclose(two_bars[:, :, :16], one_bar, atol=1e-6)
    critic = DCRNNCritic(shape, 32)
    assert critic(two_bars, scale).shape == (3,)
    with pytest.raises(ValueError, match="multiple of 4"):
        generator(z, scale, 30)


def test_the_scale_gate_silences_keys_outside_the_scale():
    import torch

    from livegen.train.nets import DCRNNGenerator, DCRNNShape

    torch.manual_seed(0)
    gated = DCRNNGenerator(DCRNNShape(**TINY, scale_gate=True)).eval()
    z = torch.rand(2, 16) * 2 - 1
    c_major = torch.from_numpy(evaluate.major_scale_condition(0))[None].repeat(2, 1)
    with torch.no_grad():
        gated.scale_bias.fill_(-50.0)
        planes = gated(z, c_major, 16)
        no_key = gated(z, torch.full((2, 12), 1 / 12), 16)
        gated.scale_bias.fill_(0.0)
        open_gate = gated(z, c_major, 16)
    outside = (torch.arange(84) + 24) % 12
    outside = torch.isin(outside, torch.tensor([1, 3, 6, 8, 10]))
    assert (planes[..., outside] == -1).all()  # C#, D#, F#, G#, A# never sound
    assert torch.equal(planes[..., ~outside], open_gate[..., ~outside])
    assert (no_key[..., outside] > -1).any()  # no key: nothing is outside


def test_the_critic_sees_binary_fakes_and_the_gradient_passes_through():
    import torch

    from livegen.train.dcrnn import critic_view

    fake = torch.tensor([-0.7, -0.1, 0.2, 0.9], requires_grad=True)
    view = critic_view(fake, "straight_through")
    assert view.tolist() == [-1, -1, 1, 1]
    (view * torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    assert fake.grad.tolist() == [1, 2, 3, 4]


def test_out_of_scale_counts_the_keys_sounding_outside_the_condition():
    import torch

    from livegen.train.dcrnn import UNIFORM_SCALE, out_of_scale

    planes = -torch.ones(2, 2, 32, 84)  # 84 keys from C1
    planes[:, 0, :, 1] = 1  # C#1 sounds throughout: outside C major
    planes[:, 0, :16, 0] = 1  # C1 for half the time: inside
    c_major = torch.from_numpy(evaluate.major_scale_condition(0))
    scales = torch.stack([c_major, torch.from_numpy(UNIFORM_SCALE)])
    assert out_of_scale(planes[:1], scales[:1], 24).item() == 1.0
    assert out_of_scale(planes[1:], scales[1:], 24).item() == 0.0  # no key: nothing outside
    everything = torch.ones(1, 2, 32, 84)
    assert out_of_scale(everything, scales[:1], 24).item() == 35  # 5 of 12 classes x 7


def test_the_differentiable_features_are_the_evaluations_and_reach_the_planes(pieces):
    import torch

    from livegen.train.dcrnn import FeatureMatch, torch_segment_features

    source = roll_data.SegmentSource(pieces, 32, 24, 108)
    real = source.draw(24, np.random.default_rng(3)).rolls
    rng = np.random.default_rng(4)
    # Random planes, some quiet, some silent: fragments, repeated strikes, chords.
    noise = torch.from_numpy(rng.uniform(-1, 1, (8, 2, 32, 84)).astype(np.float32))
    noise[:4] -= torch.linspace(0.2, 1.5, 4)[:, None, None, None]
    noise[7] = -1
    planes = torch.cat([torch.from_numpy(rolls.roll_planes(real, 24, 108)), noise])
    planes.requires_grad_(True)
    found = torch_segment_features(planes, 24)
    played = np.concatenate([real, [rolls.binarise(p, 24, method="threshold")
                                    for p in noise.numpy()]])
    expected = evaluate.segment_features(played)
    assert np.allclose(found.detach().numpy(), expected, atol=1e-4)
    assert (expected[-1] == 0).all() and (expected[:24, 0] > 0).all()
    # With a slope the values are the same; the gradient goes to the cells near 0.
    cells = torch.tensor([[[[-0.9, -0.02, 0.03, 0.9]] * 32] * 2])
    cells.requires_grad_(True)
    sloped = torch_segment_features(cells, 24, slope=0.1)
    assert torch.equal(sloped, torch_segment_features(cells.detach(), 24))
    sloped[:, -1].sum().backward()  # the mean number of sounding keys
    far, near = cells.grad[0, 0, 0, [0, 3]], cells.grad[0, 0, 0, [1, 2]]
    assert (near > 10 * far).all()
    match = FeatureMatch(expected[:24], batch=len(planes), device=torch.device("cpu"))
    loss = match(found)
    loss.backward()
    assert loss.item() > 0 and planes.grad.abs().sum() > 0
    assert match(torch.from_numpy(np.quantile(expected[:24], (np.arange(32) + 0.5) / 32,
                                              axis=0)).float()).item() < 1e-6


def test_the_autoencoding_term_reads_codes_against_the_prior():
    import torch

    from livegen.train.dcrnn import code_distance, noise, rebuilt_loss
    from livegen.train.nets import DCRNNEncoder, DCRNNShape

    g = torch.Generator().manual_seed(0)
    prior = noise(256, 32, torch.device("cpu"), g)
    spread_alike = code_distance(noise(256, 32, torch.device("cpu"), g), prior).item()
    collapsed = code_distance(noise(256, 32, torch.device("cpu"), g) * 0.1, prior).item()
    assert abs(spread_alike) < 0.02 < collapsed
    encoder = DCRNNEncoder(DCRNNShape(**TINY))
    codes = encoder(torch.ones(3, 2, 32, 84), torch.full((3, 12), 1 / 12))
    assert codes.shape == (3, 16) and codes.abs().max() < 1
    real = torch.where(torch.rand(2, 2, 32, 84, generator=g) > 0.9, 1.0, -1.0)
    assert rebuilt_loss(real * 0.999, real) < 0.01 < rebuilt_loss(-real * 0.5, real)


def test_the_gradient_penalty_weighs_each_sample_on_its_own():
    import torch

    from livegen.train.dcrnn import gradient_penalty
    from livegen.train.nets import DCRNNCritic, DCRNNShape

    torch.manual_seed(0)
    critic = DCRNNCritic(DCRNNShape(**TINY), 32)
    real = torch.ones(4, 2, 32, 84)
    fake = -torch.ones(4, 2, 32, 84)
    seen = []
    original = critic.forward
    critic.forward = lambda planes, scale: (seen.append(planes.detach()),
                                            original(planes, scale))[1]
    penalty = gradient_penalty(critic, real, fake, torch.full((4, 12), 1 / 12))
    weights = seen[0][:, 0, 0, 0]  # w * 1 + (1 - w) * -1 = 2w - 1
    assert penalty.item() >= 0 and len(set(weights.tolist())) == 4


def test_a_tiny_run_trains_checkpoints_and_resumes(tmp_path, monkeypatch, pieces):
    import torch

    from livegen.train import dcrnn

    corpus = roll_data.RollCorpus(tuple(pieces), tuple(pieces[:1]), tuple(pieces[1:2]),
                                  split_seed=0)
    monkeypatch.setattr(roll_data, "load_pieces", lambda workers=None: corpus)
    monkeypatch.setattr(dcrnn, "VALID_SEGMENTS", 16)
    torch.set_num_threads(1)
    options = dict(out=tmp_path, device="cpu", minutes=None, steps=3, batch=4,
                   critic_steps=2, scale_gate=False, feature_weight=1.0, ema=0.5,
                   autoencode=1.0, **TINY)
    best = dcrnn.train(dcrnn.DCRNNOptions(**options))
    checkpoint = dcrnn.load_checkpoint(tmp_path / "last.pt")
    assert best.is_file() and checkpoint["state"]["step"] == 3
    assert checkpoint["state"]["history"][-1]["gap"] >= 0
    assert checkpoint["state"]["history"][-1]["features"] > 0
    # What is played is the weights' moving average, which lags the last weights.
    averaged, last = checkpoint["generator_ema"], checkpoint["generator"]
    assert any(not torch.equal(averaged[k], last[k]) for k in last)
    played = dcrnn.generator_from_checkpoint(checkpoint).state_dict()
    assert all(torch.equal(played[k], averaged[k]) for k in averaged)
    torch.manual_seed(1)  # the run's seed: the same initial weights
    initial = dcrnn.DCRNNGenerator(dcrnn.DCRNNShape(**TINY)).state_dict()
    assert any(not torch.equal(initial[k], checkpoint["generator"][k]) for k in initial)
    dcrnn.train(dcrnn.DCRNNOptions(**{**options, "steps": 5, "resume": True,
                                      "command": "resumed"}))
    state = dcrnn.load_checkpoint(tmp_path / "last.pt")["state"]
    assert state["step"] == 5
    assert [c["from_step"] for c in state["commands"]] == [0, 3]
    assert state["commands"][1]["command"] == "resumed"
    with pytest.raises(ValueError, match="resume with the same sizes"):
        dcrnn.train(dcrnn.DCRNNOptions(**{**options, "steps": 6, "resume": True,
                                          "high_size": 8}))
    # A net with the scale gate starts from these weights; the gate is new.
    dcrnn.train(dcrnn.DCRNNOptions(**{**options, "out": tmp_path / "gated", "steps": 1,
                                      "scale_gate": True, "init": tmp_path / "last.pt"}))
    started = dcrnn.load_checkpoint(tmp_path / "gated" / "last.pt")["state"]
    assert started["initialised_from"]["new_parameters"] == ["scale_bias"]
    assert started["initialised_from"]["steps"] == 5
    from livegen.train.dcrnn_ship import lineage

    runs = lineage(dcrnn.load_checkpoint(tmp_path / "gated" / "last.pt"))
    assert [r["steps"] for r in runs] == [1, 5]  # this run, then the one it started from
    assert [c["command"] for c in runs[1]["commands"]][1] == "resumed"


# ---------------------------------------------------------------- export and runtime

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(torch generator, manifest path) of a freshly exported tiny net with random
    weights, at both segment lengths."""
    import torch

    from livegen.train.dcrnn_ship import build_manifest, export_onnx
    from livegen.train.nets import DCRNNGenerator, DCRNNShape
    from livegen.train.ship import write_manifest

    torch.manual_seed(0)
    shape = DCRNNShape(**TINY)
    net = DCRNNGenerator(shape).eval()
    with torch.no_grad():  # larger weights: livelier planes that react to every input
        for parameter in net.parameters():
            parameter.mul_(3)
    folder = tmp_path_factory.mktemp("dcrnn")
    files = {}
    for steps in (16, 32):
        export_onnx(net, steps, folder / f"tiny.{steps}.onnx")
        files[steps] = {"fp32": folder / f"tiny.{steps}.onnx"}
    checkpoint = {"shape": shape.to_dict(), "options": {"seed": 0}, "state": {}}
    write_manifest(folder / "tiny.json", build_manifest(checkpoint, files, "fp32"))
    return net, folder / "tiny.json"


@pytest.fixture
def copy(tiny, tmp_path) -> Path:
    for path in tiny[1].parent.iterdir():
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / tiny[1].name


def test_onnx_matches_torch_at_both_lengths(tiny):
    from livegen.train.dcrnn_ship import parity

    net, manifest = tiny
    model = DCRNN(manifest)
    assert sorted(model.sessions) == [16, 32]
    for steps in (16, 32):
        assert parity(net, model, steps) < 1e-4


def test_a_tampered_graph_is_refused_before_anything_runs(copy):
    path = copy.parent / "tiny.16.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(LivegenError, match=r"tiny\.16\.onnx: sha256 .* does not match"):
        DCRNN(copy)


def test_a_manifest_that_promises_other_shapes_is_refused(copy):
    manifest = json.loads(copy.read_text())
    manifest["graphs"]["16"]["tensors"]["outputs"]["planes"]["shape"][3] = 96
    copy.write_text(json.dumps(manifest))
    with pytest.raises(LivegenError, match=r"tensor 'planes' is float32 \['batch', 2, 16, "
                                           r"84\] in the graph"):
        DCRNN(copy)


def test_a_missing_graph_and_another_kind_are_named(copy):
    manifest = json.loads(copy.read_text())
    copy.with_name("charrnn.json").write_text(json.dumps({**manifest, "kind": "charrnn"}))
    with pytest.raises(LivegenError, match="kind is 'charrnn', expected 'dcrnn'"):
        DCRNN(copy.with_name("charrnn.json"))
    (copy.parent / "tiny.32.onnx").unlink()
    with pytest.raises(LivegenError, match=r"tiny\.32\.onnx: model file missing"):
        DCRNN(copy)


def _request(bar: int = 0, bars: int = 2, key: int = 0, noise: dict[int, float] | None = None,
             beats: int = 4) -> SegmentRequest:
    values = [0.0] * 64
    for i, v in (noise or {}).items():
        values[i] = v
    return SegmentRequest(bar=bar, bars=bars, beats_per_bar=beats, bpm=120.0,
                          controls=Controls(key=key, noise=tuple(values)), deadline=0.0)


def _played(segment) -> list[tuple[float, float, int]]:
    return [(n.beat, n.length, n.pitch) for n in segment.notes]


def test_segments_are_deterministic_and_bars_are_windows_of_one_phrase(tiny):
    model = DCRNN(tiny[1], threshold=-0.2, sustain=-0.6)
    model.warm_up()
    two = model.segment(_request(0, 2))
    assert two.notes and _played(two) == _played(model.segment(_request(0, 2)))
    assert all(0 <= n.beat < 8 and n.beat + n.length <= 8 for n in two.notes)
    first, second = model.segment(_request(0, 1)), model.segment(_request(1, 1))
    # Bar 1 alone is bar 0 of the phrase cut at the bar line; bar 2 restarts held notes.
    cut = [(b, min(length, 4 - b), p) for b, length, p in _played(two) if b < 4]
    assert _played(first) == cut
    tail = sorted([(b - 4, length, p) for b, length, p in _played(two) if b >= 4]
                  + [(0.0, b + length - 4, p) for b, length, p in _played(two)
                     if b < 4 < b + length])
    assert sorted(_played(second)) == tail
    # The next phrase under the same controls repeats the first: a held gesture loops.
    assert _played(model.segment(_request(2, 2))) == _played(two)
    # A two-bar request from an odd bar spans two phrases.
    assert model.segment(_request(1, 2)).figures["phrases"] == 2


def test_driven_noise_moves_the_music_and_the_rest_is_fixed_by_seed(tiny):
    model = DCRNN(tiny[1], threshold=-0.2, sustain=-0.6)
    base = _played(model.segment(_request()))
    assert _played(model.segment(_request(noise={0: 0.9, 3: -0.8}))) != base
    assert _played(model.segment(_request(noise={20: 0.9}))) == base  # not driven
    code = model.code([0.5] * 64)
    assert np.allclose(code[:8], 0.5) and np.array_equal(code[8:], fixed_code(0, 16)[8:])
    other_seed = DCRNN(tiny[1], threshold=-0.2, sustain=-0.6, seed=1)
    assert _played(other_seed.segment(_request())) != base
    wider = DCRNN(tiny[1], threshold=-0.2, sustain=-0.6, driven=(0, 10))
    assert _played(wider.segment(_request(noise={10: 0.9}))) != base
    with pytest.raises(ValueError, match=r"outside this model's code noise\[0..15\]"):
        DCRNN(tiny[1], driven=(16,))


def test_the_key_reaches_the_model(tiny):
    model = DCRNN(tiny[1], threshold=-0.2, sustain=-0.6)
    c_major = _played(model.segment(_request(key=0)))
    assert c_major != _played(model.segment(_request(key=6)))
    assert c_major != _played(model.segment(_request(key=12)))  # no key: uniform


def test_config_builds_the_generator(tiny):
    config = DCRNNConfig(model=tiny[1], bars=1, binarisation="threshold", seed=3,
                         driven=(1, 2), velocity=90, variant="default",
                         providers=("CPUExecutionProvider",))
    model = DCRNN.from_config(config)
    assert (model.bars, model.binarisation, model.seed, model.driven) == (1, "threshold", 3,
                                                                          (1, 2))
    assert model.providers == ["CPUExecutionProvider"]
    segment = model.segment(_request())
    assert {n.velocity for n in segment.notes} <= {90}


def test_importing_and_running_the_runtime_never_imports_torch(tiny):
    code = f"""
import sys
from livegen.control import Controls
from livegen.generators.dcrnn import DCRNN
from livegen.generators.segment import SegmentRequest
model = DCRNN({str(tiny[1])!r}, threshold=-0.2)
segment = model.segment(SegmentRequest(0, 2, 4, 120.0, Controls(), 0.0))
assert segment.notes
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'music21'))
print('IMPORTED', heavy)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "IMPORTED []" in done.stdout


# ---------------------------------------------------------------- evaluation figures

def _roll(steps: int = 32, cells=()) -> np.ndarray:
    roll = np.zeros((steps, 128), np.uint8)
    for pitch, start, end in cells:
        roll[start:end, pitch] = rolls.SUSTAIN
        roll[start, pitch] = rolls.ONSET
    return roll


def test_bar_figures_on_hand_made_rolls():
    # Bar 1: C E G held 8 steps, then a C repeated twice (1 step each); bar 2: empty.
    roll = _roll(32, [(60, 0, 8), (64, 0, 8), (67, 0, 8), (72, 8, 9), (72, 9, 10)])
    rolls_ = roll[None]
    assert evaluate.empty_bar_rate(rolls_) == 0.5
    assert evaluate.pitch_classes_per_bar(rolls_) == 3  # C, E, G in the non-empty bar
    assert evaluate.polyphony_rate(rolls_) == 8 / 32
    assert sorted(evaluate.note_lengths(rolls_).tolist()) == [1, 1, 8, 8, 8]
    figures = evaluate.roll_figures(rolls_, np.asarray([evaluate.major_scale_condition(0)]))
    assert figures["one_step_share"] == 0.4 and figures["notes_per_bar"] == 2.5
    assert figures["length_histogram"][0] == 0.4  # "1"
    assert figures["length_histogram"][5] == 0.6  # "7-8"
    assert figures["in_scale_ratio"] == 1.0
    d_major = np.asarray([evaluate.major_scale_condition(2)])  # C is not in D major
    assert evaluate.in_scale_ratio(rolls_, d_major) == pytest.approx(2 / 5)


def test_feature_overlap_is_one_for_alike_sets_and_zero_for_disjoint_ones():
    rng = np.random.default_rng(0)
    a = rng.normal(size=500)
    assert evaluate.histogram_overlap(a, a) == pytest.approx(1)
    assert evaluate.histogram_overlap(a, a + 100) == 0
    assert 0.5 < evaluate.histogram_overlap(a, rng.normal(size=500)) < 1


def test_copied_bars_finds_runs_up_to_transposition():
    # Four bars of different shapes: a quarter, two eighths, a half, a 16th third.
    piece = _roll(64, [(60, 0, 4), (62, 16, 18), (62, 18, 20), (64, 32, 40), (65, 48, 49),
                       (69, 48, 49)])
    index = evaluate.bar_index([(piece, [0, 16, 32, 48])])
    # Bars 1-2 of the piece up a fifth, then a bar the piece does not have.
    copied = _roll(48, [(67, 0, 4), (69, 16, 18), (69, 18, 20), (50, 32, 33)])
    result = evaluate.copied_bars([copied], index)
    assert result == {"bars": 3, "found_share": round(2 / 3, 4), "longest_run_bars": 2}
    shuffled = _roll(32, [(62, 0, 2), (62, 2, 4), (60, 16, 20)])  # bars 2 then 1
    assert evaluate.copied_bars([shuffled], index)["longest_run_bars"] == 1


def test_nearest_centroid_accuracy_tells_clusters_apart():
    rng = np.random.default_rng(0)
    centres = np.asarray([[0, 0], [5, 0], [0, 5]])
    labels = np.repeat(np.arange(3), 20)
    features = centres[labels] + rng.normal(0, 0.5, (60, 2))
    train = np.tile(np.arange(20) < 10, 3)
    assert evaluate.nearest_centroid_accuracy(features, labels, train) == 1.0
    noise_only = rng.normal(0, 1, (60, 2))
    assert evaluate.nearest_centroid_accuracy(noise_only, labels, train) < 0.8


def test_the_eval_runs_end_to_end_on_real_pieces(tiny, pieces, monkeypatch):
    corpus = roll_data.RollCorpus(tuple(pieces), tuple(pieces[:1]), tuple(pieces[1:]),
                                  split_seed=0)
    monkeypatch.setattr(roll_data, "load_pieces", lambda workers=None: corpus)
    report = evaluate.evaluate_dcrnn(tiny[1], untrained_path=tiny[1], count=16,
                                     noise_seeds=2, gesture_seeds=2, trials=6,
                                     timing_requests=10)
    data = report["figures"]["data"]
    assert data["in_scale_ratio"] == 1.0  # a segment's scale is the classes it sounds
    assert data["empty_bar_rate"] == 0.0 and data["notes_per_bar"] > 4
    assert set(report["figures"]) == {"data", "model", "random", "untrained"}
    assert {"threshold", "sample", "hysteresis -0.5"} <= set(report["binarisation_choice"])
    assert 0 <= report["gestures"]["accuracy"] <= 1
    assert report["copying"]["held_out_data"]["bars"] > 0
    assert report["segment_time"]["2_bar"]["p99_ms"] > 0
    text = evaluate.format_dcrnn_report(report)
    assert "in-scale ratio under a key" in text and "nearest-centroid" in text


def test_random_rolls_keep_the_reference_density():
    reference = np.stack([_roll(32, [(60 + i % 5, 2 * i, 2 * i + 2) for i in range(16)])
                          for _ in range(20)])
    random = evaluate.random_rolls(reference, 200, np.random.default_rng(0))
    assert evaluate.roll_figures(random)["notes_per_bar"] == pytest.approx(8, rel=0.15)
    assert set(np.flatnonzero(random.any(axis=(0, 1)))) <= set(range(60, 65))


def test_the_shipped_model_loads_verified_and_plays_in_key():
    manifest = json.loads(SHIPPED.read_text())
    assert manifest["trained"] and manifest["training"]["steps"] > 0
    assert manifest["binarisation"]["method"] in rolls.BINARISATIONS  # measured, recorded
    model = DCRNN(SHIPPED)
    assert sorted(model.sessions) == [16, 32] and model.noise_size >= 16
    c_major = {0, 2, 4, 5, 7, 9, 11}
    for gesture in ("rest", "wave_in", "wave_out"):
        levels = np.asarray(evaluate.GESTURES[gesture]) * 2 - 1
        segment = model.segment(_request(noise=dict(enumerate(levels))))
        assert len(segment.notes) >= 8
        assert {n.pitch % 12 for n in segment.notes} <= c_major
    rest = _played(model.segment(_request(noise=dict.fromkeys(range(8), -0.9))))
    wave = _played(model.segment(_request(noise=dict(enumerate(
        np.asarray(evaluate.GESTURES["wave_out"]) * 2 - 1)))))
    assert rest != wave
    untrained = json.loads(SHIPPED.with_name("dcrnn-untrained.json").read_text())
    assert untrained["trained"] is False
