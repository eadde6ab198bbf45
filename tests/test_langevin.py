"""The Langevin chorale model: real chorales from music21's corpus become in-range tokens with
ties kept as holds; the score network trains, exports to ONNX and matches torch; the
numpy sampler fits its evaluations to the deadline, always returns, and keeps every given
cell; the segment generator is deterministic and returns a performer's melody as the
soprano; the evaluation's voice-leading counters count what they should and nothing else.

The model here is a tiny net trained for a few steps on three chorales: enough to run
every real part (music21, torch, the ONNX exporter, ONNX Runtime), not a musical model.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from music21 import corpus, note, stream

from livegen.control import Controls
from livegen.errors import LivegenError
from livegen.evaluate import chorale_figures, voice_leading
from livegen.generators import langevin
from livegen.generators.langevin import (
    LangevinConfig,
    LangevinGenerator,
    ScoreModel,
    plan_evaluations,
    sample,
)
from livegen.generators.segment import MelodyNote, SegmentRequest
from livegen.music import roll
from livegen.train import chorale_data
from livegen.train import langevin as training
from livegen.train.langevin_ship import ship
from livegen.train.nets import ScoreNet, ScoreShape

NAMES = ("bach/bwv269", "bach/bwv277", "bach/bwv311")


@pytest.fixture(scope="module")
def chorales() -> list[chorale_data.Chorale]:
    parsed = [chorale_data.parse_chorale(name) for name in NAMES]
    return [chorale_data.Chorale(i, t.astype(np.int64), b) for i, t, b, _ in parsed]


@pytest.fixture(scope="module")
def shipped(tmp_path_factory, chorales) -> Path:
    """A tiny net trained for a few steps on the real chorales, exported for T = 32."""
    folder = tmp_path_factory.mktemp("langevin")
    split = chorale_data.Chorales(train=tuple(chorales[:2]), valid=(chorales[2],),
                                  test=(chorales[2],), report={"corpus": "three chorales"})
    patch = pytest.MonkeyPatch()
    patch.setattr(chorale_data, "load_chorales", lambda: split)
    patch.setattr(training, "VALID_CROPS", 8)
    try:
        options = training.TrainOptions(out=folder / "run", device="cpu", minutes=None,
                                        steps=4, width=16, layers=1, heads=2,
                                        feedforward=32, lengths=(32,), batch=4)
        best = training.train(options)
    finally:
        patch.undo()
    ship(best, folder / "models", lengths=(32,))
    return folder / "models" / "langevin.json"


@pytest.fixture(scope="module")
def model(shipped) -> ScoreModel:
    return ScoreModel(shipped)


# ---------------------------------------------------------------- data

def test_real_chorales_become_four_voices_in_range_starting_on_bar_lines(chorales):
    for chorale in chorales:
        tokens = chorale.tokens
        assert tokens.shape[1] == 4 and len(tokens) > 64
        pitches, _ = roll.sounding_pitches(tokens)
        for voice, (low, high) in enumerate(roll.VOICE_RANGES):
            sounding = pitches[:, voice][pitches[:, voice] >= 0]
            assert len(sounding) and low <= sounding.min() and sounding.max() <= high
        assert (tokens != roll.PAD).all()
        assert 0 <= chorale.bar_starts[0] < 16  # the first bar line: after a pickup, if any
        assert np.all(np.diff(chorale.bar_starts) > 0)


def test_ties_are_holds_not_new_notes(chorales):
    score = corpus.parse("bach/bwv277")
    tokens = chorales[1].tokens
    continued = 0
    for voice, part in enumerate(score.parts):
        for element in part.flatten().notes:
            if element.tie is not None and element.tie.type in ("stop", "continue"):
                step = round(float(element.offset) * 4)
                assert tokens[step, voice] == roll.HOLD, (voice, step)
                continued += 1
    assert continued >= 2


def test_notes_off_the_grid_snap_and_colliding_ones_drop():
    part = stream.Part()
    for offset, length, pitch in ((0.0, 1 / 3, 72), (1 / 3, 1 / 3, 74), (2 / 3, 1 / 3, 76),
                                  (1.0, 0.0625, 72), (1.0625, 0.9375, 71)):
        part.insert(offset, note.Note(pitch, quarterLength=length))
    counts = {"grace_dropped": 0, "chords_reduced": 0, "off_grid_snapped": 0,
              "collided_dropped": 0}
    notes = chorale_data.voice_notes(part, 0, counts)
    starts = [n.start for n in notes]
    assert starts == sorted(set(starts))  # one note per step, in order
    assert all(n.end > n.start for n in notes)
    assert all(a.end <= b.start for a, b in itertools.pairwise(notes))
    assert counts["off_grid_snapped"] >= 3 and counts["collided_dropped"] == 1
    roll.voices_to_tokens([notes, [], [], []])  # a valid voice


def test_split_is_by_chorale_and_a_transposed_copy_never_lands_apart(chorales):
    many = [chorale_data.Chorale(f"c{i:02d}", chorales[i % 3].tokens[:64 + i],
                                 chorales[i % 3].bar_starts) for i in range(30)]
    tokens = many[0].tokens
    copy = chorale_data.Chorale("zz-transposed", roll.transpose_tokens(
        tokens, roll.transpositions_in_range(tokens).start), many[0].bar_starts)
    splits = chorale_data.split_chorales([*many, copy], seed=3)
    ids = {name: {c.id for c in part} for name, part in splits.items()}
    assert sum(len(part) for part in ids.values()) == 30
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["valid"])
    assert "zz-transposed" not in set().union(*ids.values())  # merged with its original
    assert splits == chorale_data.split_chorales([copy, *reversed(many)], seed=3)


def test_training_crops_are_transpositions_of_bar_aligned_chorale_crops(chorales):
    crops = chorale_data.random_crops(chorales, 12, 32, np.random.default_rng(0))
    assert crops.shape == (12, 32, 4)
    for crop in crops:
        sources = [chorale.tokens[start:start + 32] for chorale in chorales
                   for start in chorale_data.crop_starts(chorale, 32)]
        assert any(np.array_equal(crop, roll.transpose_tokens(source, shift))
                   for source in sources for shift in roll.transpositions_in_range(source))


# ---------------------------------------------------------------- net and training

def test_score_net_shapes_loss_and_a_step_that_learns():
    torch.manual_seed(0)
    for sigma_input in (True, False):
        net = ScoreNet(ScoreShape(width=16, layers=1, heads=2, feedforward=32,
                                  sigma_input=sigma_input))
        clean = training.onehot(torch.randint(1, 20, (4, 32, 4)))
        sigma = torch.tensor([0.05, 0.5, 5.0, 20.0])
        assert net(clean, sigma).shape == (4, 32, 105)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        noise = torch.randn_like(clean)
        before = net.loss(clean, sigma, noise).item()
        for _ in range(5):
            loss = net.loss(clean, sigma, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert np.isfinite(before) and net.loss(clean, sigma, noise).item() < before


def test_given_cells_stay_clean_and_out_of_the_loss():
    torch.manual_seed(0)
    net = ScoreNet(ScoreShape(width=16, layers=1, heads=2, feedforward=32, dropout=0.0))
    options = training.TrainOptions(given_share=1.0)
    cells = training.given_cells(64, 32, options, np.random.default_rng(0))
    assert cells.shape == (64, 32, 4) and cells.any() and not cells.all()
    assert any(c[:16].all() and not c[16:].any() for c in cells)  # a context bar
    assert any(c[:, 0].all() and c[:16].all() and not c[16:, 1:].any() for c in cells)
    given = training.expand(torch.from_numpy(cells))
    clean = training.onehot(torch.randint(1, 20, (64, 32, 4)))
    sigma = torch.full((64,), 2.0)
    noise = torch.randn_like(clean)
    other = torch.where(given, torch.randn_like(clean), noise)  # differs only where given
    assert torch.equal(net.noisy(clean, sigma, noise, given)[given], clean[given])
    assert net.loss(clean, sigma, noise, given).item() == pytest.approx(
        net.loss(clean, sigma, other, given).item(), rel=1e-6)
    assert net.loss(clean, sigma, noise).item() != pytest.approx(
        net.loss(clean, sigma, other).item(), rel=1e-6)


def test_dropout_is_off_when_not_training():
    net = ScoreNet(ScoreShape(width=16, layers=1, heads=2, feedforward=32, dropout=0.5))
    x, sigma = torch.randn(1, 32, 105), torch.ones(1)
    net.eval()
    assert torch.equal(net(x, sigma), net(x, sigma))


def test_training_checkpoints_and_resumes(shipped, chorales, tmp_path, monkeypatch):
    run = shipped.parent.parent / "run"
    checkpoint = training.load_checkpoint(run / "last.pt")
    assert checkpoint["state"]["step"] == 4 and checkpoint["state"]["history"]
    assert set(checkpoint) >= {"model", "ema", "optimizer", "shape", "options"}
    split = chorale_data.Chorales(train=tuple(chorales[:2]), valid=(chorales[2],),
                                  test=(chorales[2],), report={})
    monkeypatch.setattr(chorale_data, "load_chorales", lambda: split)
    monkeypatch.setattr(training, "VALID_CROPS", 8)
    (tmp_path / "last.pt").write_bytes((run / "last.pt").read_bytes())
    options = training.TrainOptions(out=tmp_path, device="cpu", minutes=None, steps=6,
                                    width=16, layers=1, heads=2, feedforward=32,
                                    lengths=(32,), batch=4, resume=True)
    training.train(options)
    resumed = training.load_checkpoint(tmp_path / "last.pt")
    assert resumed["state"]["step"] == 6
    assert [h["step"] for h in resumed["state"]["history"]] == [4, 6]


# ---------------------------------------------------------------- export

def test_export_matches_torch_and_the_manifest_describes_it(shipped, model):
    manifest = json.loads(shipped.read_text())
    assert manifest["kind"] == "langevin"
    assert manifest["metrics"]["parity_max_abs_diff"]["32"] <= 1e-4
    assert manifest["tensors"]["32"]["inputs"]["x"]["shape"] == ["batch", 32, 105]
    assert manifest["encoding"] == langevin.encoding()
    assert model.lengths == (32,)
    x = np.zeros((2, 32, 105), np.float32)
    assert model.denoise(x, np.ones(2, np.float32)).shape == (2, 32, 105)


def test_a_changed_graph_file_is_refused(shipped, tmp_path):
    for path in shipped.parent.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    graph = tmp_path / "langevin-t32.onnx"
    graph.write_bytes(graph.read_bytes()[:-1] + b"\x00")
    with pytest.raises(LivegenError, match="sha256"):
        ScoreModel(tmp_path / "langevin.json")


# ---------------------------------------------------------------- sampling

def test_planner_fits_fewer_evaluations_when_the_deadline_is_near():
    far = plan_evaluations(1.0, 0.002, margin_s=0.04, most=256)
    near = plan_evaluations(0.1, 0.002, margin_s=0.04, most=256)
    past = plan_evaluations(-0.5, 0.002, margin_s=0.04, most=256, fewest=1)
    assert far == 256 and near == 24 and past == 1
    assert near in langevin.LADDER


def test_sampler_always_returns_and_stops_at_the_deadline(model):
    given = np.full((1, 32, 4), roll.REST)
    known = np.zeros((1, 32, 4), dtype=bool)
    full = sample(model.denoise, given, known, evaluations=20,
                  rng=np.random.default_rng(0))
    assert full.evaluations == 20 and not full.cut_short
    late = sample(model.denoise, given, known, evaluations=20, rng=np.random.default_rng(0),
                  deadline=time.perf_counter() - 1.0, per_evaluation_s=0.001)
    assert late.evaluations == 1 and late.cut_short
    assert late.tokens.shape == (1, 32, 4) and (late.tokens != roll.PAD).all()


def test_inpainting_keeps_every_given_cell_exactly(model, chorales):
    rng = np.random.default_rng(1)
    truth = np.stack([chorales[0].tokens[:32], chorales[1].tokens[16:48]])
    known = rng.random(truth.shape) < 0.5
    known[:, :, 0] = True  # a whole melody as well
    for evaluations in (1, 3, 12):
        result = sample(model.denoise, truth, known, evaluations=evaluations, rng=rng)
        assert np.array_equal(result.tokens[known], truth[known])
    original = langevin.sample_original(model.denoise, truth, known, rng=rng, levels=2,
                                        steps_per_level=2)
    assert np.array_equal(original.tokens[known], truth[known])


# ---------------------------------------------------------------- the segment generator

def _generator(shipped, **changes) -> LangevinGenerator:
    config = LangevinConfig(model=shipped, providers=("CPUExecutionProvider",),
                            **{"anytime": False, "max_evaluations": 6, **changes})
    return LangevinGenerator(config)


def _request(bar=3, deadline_s=10.0, **changes) -> SegmentRequest:
    return SegmentRequest(bar=bar, bars=1, beats_per_bar=4, bpm=100.0,
                          controls=Controls(), deadline=time.monotonic() + deadline_s,
                          **changes)


def test_compose_is_deterministic_and_continues_the_previous_segment(shipped):
    generator = _generator(shipped)
    first = generator.segment(_request(bar=0))
    again = generator.segment(_request(bar=0))
    assert first.notes == again.notes and first.notes
    following = generator.segment(_request(bar=1, previous=first))
    assert following.bar == 1 and following.figures["evaluations"] == 6
    for n in following.notes:
        assert type(n.beat) is float and type(n.length) is float and type(n.pitch) is int
        low, high = roll.VOICE_RANGES[n.voice]
        assert 0 <= n.beat < 4 and n.beat + n.length <= 4 and low <= n.pitch <= high


def test_anytime_generator_uses_fewer_evaluations_when_the_deadline_is_near(shipped):
    generator = _generator(shipped, anytime=True, max_evaluations=256, margin_ms=0.0)
    generator.warm_up()
    roomy = generator.segment(_request(deadline_s=5.0))
    hurried = generator.segment(_request(deadline_s=0.0))
    assert hurried.figures["evaluations"] < roomy.figures["evaluations"]
    assert hurried.notes  # it still returns music


def test_harmonise_returns_the_melody_as_the_soprano(shipped):
    melody = (MelodyNote(0.0, 1.0, 67), MelodyNote(1.0, 0.5, 69), MelodyNote(1.5, 0.5, 71),
              MelodyNote(2.1, 1.0, 48),  # off the grid and below the soprano's range
              MelodyNote(3.0, 0.9, 72))
    generator = _generator(shipped, mode="harmonise")
    segment = generator.segment(_request(melody=melody))
    soprano = [(n.beat, n.length, n.pitch) for n in segment.notes if n.voice == 0]
    # Quantised to 16ths, moved by octaves into C4-G5, each held until the next (legato).
    assert soprano == [(0.0, 1.0, 67), (1.0, 0.5, 69), (1.5, 0.5, 71), (2.0, 1.0, 60),
                       (3.0, 1.0, 72)]
    assert all(0 <= n.voice <= 3 for n in segment.notes)


def test_continue_uses_the_melody_as_context(shipped):
    generator = _generator(shipped, mode="continue")
    melody = (MelodyNote(0.0, 2.0, 64), MelodyNote(2.0, 2.0, 62))
    tokens, known, context = generator.inputs(_request(melody=melody))
    assert context == 16 and known[:context, 0].all() and not known[context:].any()
    assert tokens[0, 0] == roll.FIRST_PITCH_TOKEN + 64 - 60
    assert generator.segment(_request(melody=melody)).notes


# ---------------------------------------------------------------- the evaluation's rules

def _tokens(*voices: list[int]) -> np.ndarray:
    """(T, 4) tokens of four voices given as one MIDI pitch per step (0 = hold)."""
    tokens = np.empty((len(voices[0]), 4), dtype=np.int64)
    for v, pitches in enumerate(voices):
        low = roll.VOICE_RANGES[v][0]
        tokens[:, v] = [roll.HOLD if p == 0 else roll.FIRST_PITCH_TOKEN + p - low
                        for p in pitches]
    return tokens


def test_a_parallel_fifth_is_counted_and_contrary_motion_is_not():
    # Soprano G4 -> A4 over alto C4 -> D4: a fifth, both moving up; tenor and bass hold.
    rising = _tokens([67, 69], [60, 62], [55, 0], [48, 0])
    counts = voice_leading(roll.sounding_pitches(rising)[0])
    assert counts["parallel_fifths"] == 1 and counts["motion_slices"] == 1
    assert counts["pair_moves"] == 1
    falling = _tokens([67, 62], [60, 55], [55, 0], [48, 0])  # G/C -> D/G, both down
    assert voice_leading(roll.sounding_pitches(falling)[0])["parallel_fifths"] == 1
    opposite = _tokens([67, 74], [60, 55], [55, 0], [48, 0])  # G/C -> D5/G3: contrary
    counts = voice_leading(roll.sounding_pitches(opposite)[0])
    assert counts["parallel_fifths"] == 0 and counts["contrary_fifths"] == 1


def test_octaves_crossing_and_octave_leaps():
    octaves = _tokens([72, 74], [60, 62], [55, 0], [48, 0])  # S and A in octaves, both up
    assert voice_leading(roll.sounding_pitches(octaves)[0])["parallel_octaves"] == 1
    leaps = _tokens([72, 0], [60, 72], [55, 0], [48, 60])  # A and B both leap an octave up
    counts = voice_leading(roll.sounding_pitches(leaps)[0])
    assert counts["pair_moves"] == 1 and counts["parallel_octaves"] == 0
    crossed = _tokens([64, 65], [67, 69], [55, 0], [48, 0])  # alto above soprano
    figures = chorale_figures([crossed], 1)
    assert figures["crossing_frames"] == 1 and figures["frames"] == 1
    assert figures["in_range"] == 1.0 and figures["notes"] == 2


def test_key_control_moves_the_context_into_the_key_and_register_leans_its_way():
    # A C major cadence, I-IV-V-I, one chord per beat.
    context = _tokens([72, 72, 71, 72], [64, 65, 62, 64], [55, 57, 55, 55], [48, 53, 55, 48])
    tokens = np.repeat(context, 4, axis=0)
    tokens[1::4] = tokens[2::4] = tokens[3::4] = roll.HOLD
    known = np.ones_like(tokens, dtype=bool)
    unchanged = langevin.steer(tokens, known, Controls(key=0))
    assert np.array_equal(unchanged, tokens)
    moved = langevin.steer(tokens, known, Controls(key=2))  # D major
    pitches, _ = roll.sounding_pitches(moved)
    d_major = langevin.scale_classes(2, False)
    assert set((pitches[pitches >= 0] % 12).tolist()) <= d_major
    up = langevin.steer(tokens, known, Controls(key=12, pitch=1.0))
    down = langevin.steer(tokens, known, Controls(key=12, pitch=0.0))
    shift_up = int((up - tokens)[tokens >= roll.FIRST_PITCH_TOKEN][0])
    shift_down = int((down - tokens)[tokens >= roll.FIRST_PITCH_TOKEN][0])
    assert shift_up >= 0 >= shift_down and shift_up - shift_down >= 5
    unknown = np.zeros_like(known)
    assert np.array_equal(langevin.steer(tokens, unknown, Controls(key=2)), tokens)


def test_harmonise_decoding_keeps_each_voice_under_the_one_above() -> None:
    """The plain per-voice argmax would put the alto on the melody's pitch (a unison: three
    voices heard) and the tenor above the alto; decoded under, each lies below the voice
    above it, its next most likely pitch, and a hold stays only while it lies below."""
    steps = 3
    scores = np.full((1, steps, roll.CHORALE_DIM), -5.0, np.float32)

    def prefer(step: int, voice: int, token: int, score: float) -> None:
        scores[0, step, roll.VOICE_SLICES[voice].start + token] = score

    def pitch_token(voice: int, pitch: int) -> int:
        return roll.FIRST_PITCH_TOKEN + pitch - roll.VOICE_RANGES[voice][0]

    given = np.full((1, steps, roll.VOICES), roll.REST, np.int64)
    known = np.zeros((1, steps, roll.VOICES), bool)
    given[0, :, 0] = [pitch_token(0, 67), roll.HOLD, pitch_token(0, 64)]  # G4, held, E4
    known[0, :, 0] = True
    for step in range(steps):
        prefer(step, 1, pitch_token(1, 67), 3.0)   # alto: the melody's G4 first,
        prefer(step, 1, pitch_token(1, 62), 2.0)   # then D4
        prefer(step, 2, pitch_token(2, 64), 3.0)   # tenor: E4 (above the D4) first,
        prefer(step, 2, pitch_token(2, 59), 2.0)   # then B3
        prefer(step, 3, roll.HOLD, 3.0)            # bass: hold first,
        prefer(step, 3, pitch_token(3, 43), 2.0)   # then G2
    prefer(1, 1, roll.HOLD, 4.0)  # the alto holds its D4 at step 1: below G4, kept
    plain = langevin.decode(scores, given, known)
    assert plain[0, 0, 1] == pitch_token(1, 67)  # the unison the plain argmax makes
    tokens = langevin.decode_under(scores, given, known)
    pitches, _ = roll.sounding_pitches(tokens[0])
    assert pitches.tolist() == [[67, 62, 59, 43], [67, 62, 59, 43], [64, 62, 59, 43]]
    assert tokens[0, 1, 1] == roll.HOLD and tokens[0, 1, 3] == roll.HOLD
    assert (tokens[0, :, 0] == given[0, :, 0]).all()  # the melody as given


def test_voiced_decoding_keeps_the_chorale_voice_leading() -> None:
    """Where the network's argmax moves alto and soprano in parallel fifths, puts the tenor
    above the alto and strikes a note out of the context's key, the live decoding takes
    each voice's next most likely token that does none of it."""
    scores = np.full((1, 2, roll.CHORALE_DIM), -5.0, np.float32)

    def token(voice: int, pitch: int) -> int:
        return roll.FIRST_PITCH_TOKEN + pitch - roll.VOICE_RANGES[voice][0]

    def prefer(step: int, voice: int, which: int, score: float) -> None:
        scores[0, step, roll.VOICE_SLICES[voice].start + which] = score

    # Step 0 is the given context, a C major chord: G4 C4 E3 C3 (alto a fifth below).
    given = np.full((1, 2, roll.VOICES), roll.REST, np.int64)
    known = np.zeros((1, 2, roll.VOICES), bool)
    given[0, 0] = [token(0, 67), token(1, 60), token(2, 52), token(3, 48)]
    known[0, 0] = True
    given[0, 1, 0] = token(0, 69)  # the soprano moves up to A4
    known[0, 1, 0] = True
    prefer(1, 1, token(1, 62), 3.0)  # alto D4: a fifth under A4 again, both up: parallel
    prefer(1, 1, token(1, 65), 2.0)  # F4 next
    prefer(1, 2, token(2, 66), 3.0)  # tenor F#4: above the alto's F4, out of C major
    prefer(1, 2, token(2, 61), 2.5)  # C#4: out of C major
    prefer(1, 2, token(2, 60), 2.0)  # C4
    prefer(1, 3, roll.HOLD, 3.0)     # the bass holds its C3
    plain = langevin.decode(scores, given, known)
    assert plain[0, 1, 1:].tolist() == [token(1, 62), token(2, 66), roll.HOLD]
    tokens = langevin.decode_voiced(scores, given, known)
    pitches, _ = roll.sounding_pitches(tokens[0])
    assert pitches[1].tolist() == [69, 65, 60, 48]
    figures = voice_leading(pitches)
    assert figures["parallel_fifths"] == figures["crossing_frames"] == 0
    assert voice_leading(roll.sounding_pitches(plain[0])[0])["parallel_fifths"] == 1
    assert (tokens[known] == given[known]).all()
