"""Training data and the training loop: the split is by piece, controls line up with the
tokens they describe, transposition keeps the music, and a tiny run trains, checkpoints and
resumes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from livegen.music import events, features
from livegen.train import data


@pytest.fixture(scope="module")
def chorale() -> data.Piece:
    """One real piece, parsed from music21's bundled corpus the way training parses it."""
    [(piece_id, collection, notes)] = data._parse_source(("chorales", "bach/bwv269"))
    return data.Piece(piece_id, collection, data._tokens_of(notes))


def test_split_is_by_piece_deterministic_and_covers_every_collection():
    ids = [f"{c}/piece{i}" for c in ("essen", "chorales", "ryans") for i in range(200)]
    collections = [i.split("/")[0] for i in ids]
    splits = data.split_ids(ids, collections, seed=5)
    again = data.split_ids(list(reversed(ids)), list(reversed(collections)), seed=5)
    assert splits == again
    members = [set(splits[name]) for name in ("train", "valid", "test")]
    assert not (members[0] & members[1] or members[0] & members[2] or members[1] & members[2])
    assert set().union(*members) == set(ids)
    for name in ("valid", "test"):
        assert {i.split("/")[0] for i in splits[name]} == {"essen", "chorales", "ryans"}
        assert 25 <= len(splits[name]) <= 35
    assert data.split_ids(ids, collections, seed=6) != splits


def test_duplicate_pieces_are_dropped_before_the_split(monkeypatch):
    rng = np.random.default_rng(0)
    tunes = [rng.integers(0, 388, 50).astype(np.int16) for _ in range(60)]
    tunes += [tunes[i].copy() for i in range(20)]  # the same tune under another name
    ids = [f"essen/tune{i:03d}" for i in range(len(tunes))]
    arrays = {"ids": np.asarray(ids), "collections": np.asarray(["essen"] * len(ids)),
              "offsets": np.concatenate(([0], np.cumsum([len(t) for t in tunes]))),
              "tokens": np.concatenate(tunes)}
    monkeypatch.setattr(data, "corpus_tokens", lambda workers=None: arrays)
    corpus = data.load_corpus()
    fingerprints = [{p.tokens.tobytes() for p in corpus.split(name)}
                    for name in ("train", "valid", "test")]
    assert sum(len(f) for f in fingerprints) == 60
    assert len(set().union(*fingerprints)) == 60


def test_a_real_piece_becomes_tokens_that_decode_to_its_notes(chorale):
    notes = chorale.notes
    assert len(notes) > 100
    assert chorale.tokens[0] == data.PRIMER_TOKEN  # every piece starts with its velocity
    assert {n.velocity for n in notes} == {events.bin_to_velocity(
        events.velocity_to_bin(data.VELOCITY))}
    # 120 bpm: a chorale's notes start on the 16th-note grid of 0.125 s (to the 10 ms step)
    assert all(abs(n.start / 0.125 - round(n.start / 0.125)) * 0.125 <= 0.005 for n in notes)
    assert notes[-1].end > 20


def test_controls_describe_the_music_from_the_target_on(chorale):
    tokens = chorale.tokens.astype(np.int64)
    windows = data.windows(tokens, length=64)
    starts = _token_times(tokens)
    checked = 0
    for row in range(len(windows.inputs)):
        for column in (0, 17, 40, 63):
            target = row * 64 + column + 1
            assert windows.targets[row, column] == tokens[target]
            assert windows.inputs[row, column] == tokens[target - 1]
            # the note-ons from the target token on, within WINDOW_S of its time
            ahead = [(t, p) for t, p in _note_on_times(tokens, target)
                     if t < starts[target] + features.WINDOW_S]
            expected = features.control_vector(*features.window_features(
                [t for t, _ in ahead], [p for _, p in ahead], start=starts[target]))
            assert np.allclose(windows.controls[row, column], expected)
            checked += 1
    assert checked >= 20


def test_zero_controls_for_the_ablation(chorale):
    windows = data.windows(chorale.tokens, length=64, zero_controls=True)
    assert not windows.controls.any()


def test_transposition_moves_notes_and_keeps_time(chorale):
    moved = data.transpose_tokens(chorale.tokens, 5)
    before, after = chorale.notes, events.tokens_to_notes(moved.tolist())
    assert [(n.pitch + 5, n.start, n.end) for n in before] == \
           [(n.pitch, n.start, n.end) for n in after]
    with pytest.raises(ValueError):
        data.transpose_tokens(chorale.tokens, 100)


def test_training_stream_stays_in_range_and_is_seeded(chorale):
    pieces = [chorale] * 5
    a = data.stream(pieces, np.random.default_rng(1))
    b = data.stream(pieces, np.random.default_rng(1))
    assert np.array_equal(a, b)
    assert a.min() >= 0 and a.max() < events.VOCAB_SIZE
    assert not np.array_equal(a, data.stream(pieces))


def test_a_tiny_run_trains_checkpoints_and_resumes(tmp_path, monkeypatch, chorale):
    import torch  # the [train] extra, part of dev

    from livegen.train.charrnn import TrainOptions, load_checkpoint, train

    pieces = tuple(data.Piece(f"chorales/{i}", "chorales", chorale.tokens) for i in range(3))
    corpus = data.Corpus(pieces, pieces[:1], pieces[:1], split_seed=0)
    monkeypatch.setattr(data, "load_corpus", lambda workers=None: corpus)
    torch.set_num_threads(1)
    options = dict(out=tmp_path, device="cpu", epochs=2, minutes=None, hidden=32, layers=1,
                   embedding=8, window=32, batch=4, lr=1e-2)
    best = train(TrainOptions(**options))
    history = load_checkpoint(tmp_path / "last.pt")["state"]["history"]
    assert best.is_file() and len(history) == 2
    assert history[-1]["valid_nll"] < math.log(events.VOCAB_SIZE) - 1  # it learned
    train(TrainOptions(**{**options, "epochs": 3, "resume": True}))
    resumed = load_checkpoint(tmp_path / "last.pt")["state"]["history"]
    assert [e["epoch"] for e in resumed] == [1, 2, 3]
    with pytest.raises(ValueError, match="resume with the same"):
        train(TrainOptions(**{**options, "hidden": 16, "epochs": 4, "resume": True}))


def test_a_run_starts_from_the_weights_it_is_given(tmp_path, monkeypatch, chorale):
    import torch

    from livegen.train.charrnn import TrainOptions, load_checkpoint, train

    pieces = tuple(data.Piece(f"chorales/{i}", "chorales", chorale.tokens) for i in range(2))
    corpus = data.Corpus(pieces, pieces[:1], pieces[:1], split_seed=0)
    monkeypatch.setattr(data, "load_corpus", lambda workers=None: corpus)
    torch.set_num_threads(1)
    options = dict(device="cpu", epochs=1, minutes=None, hidden=32, layers=1, embedding=8,
                   window=32, batch=4, lr=1e-2)
    train(TrainOptions(out=tmp_path / "a", **options))
    first = load_checkpoint(tmp_path / "a" / "best.pt")["state"]["history"][0]["valid_nll"]
    # The same run again, from the first's weights at a learning rate too small to move
    # them: it starts where the first ended, far below a fresh start.
    train(TrainOptions(out=tmp_path / "b", init=tmp_path / "a" / "best.pt",
                       **{**options, "lr": 1e-9}))
    train(TrainOptions(out=tmp_path / "c", **{**options, "lr": 1e-9}))
    again = load_checkpoint(tmp_path / "b" / "best.pt")
    fresh = load_checkpoint(tmp_path / "c" / "best.pt")["state"]["history"][0]["valid_nll"]
    assert again["state"]["history"][0]["valid_nll"] == pytest.approx(first, rel=1e-3)
    assert fresh > first + 0.5
    assert again["options"]["init"] == str(tmp_path / "a" / "best.pt")
    with pytest.raises(ValueError, match="give the same --hidden"):
        train(TrainOptions(out=tmp_path / "d", init=tmp_path / "a" / "best.pt",
                           **{**options, "hidden": 16}))


def test_the_data_beside_a_model_is_written_recorded_and_read_back(tmp_path, chorale):
    from livegen.train.ship import attach_data

    pieces = tuple(data.Piece(f"chorales/{i}", "chorales", data.transpose_tokens(
        chorale.tokens, i).astype(np.int16)) for i in range(4))
    corpus = data.Corpus(pieces[:2], pieces[2:3], pieces[3:], split_seed=0)
    manifest = {"training": {}}
    attach_data(manifest, tmp_path, "m", corpus)
    assert set(manifest["data"]) == {"train_notes", "guide", "eval_split"}
    assert len(manifest["key_profile"]) == 12
    split = data.EvalSplit.load(tmp_path / manifest["data"]["eval_split"]["path"])
    assert [t.tolist() for t in split.test] == [pieces[3].tokens.tolist()]
    assert split.test_ids == ("chorales/3",) and len(split.train_sample) == 2
    assert split.train_counts.sum() == sum(len(p.tokens) for p in pieces[:2])
    notes = data.load_train_notes(tmp_path / manifest["data"]["train_notes"]["path"])
    assert [n.tolist() for n in notes] == [p.tokens[p.tokens < 128].tolist()
                                           for p in pieces[:2]]
    # The same data, the same bytes: a re-export changes no hash it need not.
    again = {"training": {}}
    attach_data(again, tmp_path, "m", corpus)
    assert again["data"] == manifest["data"]


def _token_times(tokens: np.ndarray) -> np.ndarray:
    """The time (s) before each token is applied."""
    decoder = events.TokenDecoder()
    times = []
    for token in tokens:
        times.append(decoder.time)
        decoder.feed(int(token))
    return np.asarray(times)


def _note_on_times(tokens: np.ndarray, first: int = 0):
    """(time, pitch) of the note-ons made by tokens[first:] (times from the piece start)."""
    decoder = events.TokenDecoder()
    for index, token in enumerate(tokens):
        for event in decoder.feed(int(token)):
            if event.velocity > 0 and index >= first:
                yield event.time, event.pitch


def test_an_extracted_cache_is_read_where_music21_is_not_installed(tmp_path, monkeypatch):
    from livegen.errors import LivegenError

    monkeypatch.setattr(data, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(data, "music21_version", lambda: "*")
    key = f"v1-m21-{data.music21_version()}-abc"

    def build():
        raise AssertionError("parsed the corpus without music21")

    with pytest.raises(LivegenError, match="pip install music21"):
        data._cached("rolls", key, build)
    np.savez(tmp_path / "rolls-v1-m21-10.5.1-abc.npz", notes=np.arange(3))
    assert data._cached("rolls", key, build)["notes"].tolist() == [0, 1, 2]
