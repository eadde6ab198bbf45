"""Mapping rules: ranges, curves, invert, deadband, One Euro smoothing, staleness."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from livegen import config
from livegen.config import OneEuroConfig
from livegen.control import CURVES, NO_KEY, Controls, Mapper, OneEuroFilter
from livegen.inputs.base import Reading


def mapper_for(rules: str, tmp_path: Path, stale_after: float = 2.0) -> Mapper:
    text = f"[inputs.hand]\ntype = 'sim'\nstale_after = {stale_after}\n{rules}"
    return Mapper(config.loads(text, base_dir=tmp_path))


def reading(t: float, **values: float) -> Reading:
    return Reading("hand", t, values)


def test_range_invert_and_out_range(tmp_path: Path) -> None:
    m = mapper_for("[[map]]\nsource = 'hand.y'\ntarget = 'pitch'\nin_range = [100, 200]\n"
                   "[[map]]\nsource = 'hand.x'\ntarget = 'temperature'\ninvert = true\n"
                   "out_range = [0.5, 1.5]\n", tmp_path)
    c = m.update(reading(1.0, y=150.0, x=0.25))
    assert c is not None and c.version == 1 and c.t == 1.0
    assert c.pitch == pytest.approx(0.5)
    assert c.temperature == pytest.approx(1.25)
    c = m.update(reading(1.1, y=1000.0, x=0.25))  # clipped to the in_range
    assert c.pitch == pytest.approx(1.0) and c.version == 2


def test_curves_keep_their_ends_and_bend_as_named() -> None:
    for name, curve in CURVES.items():
        assert curve(0.0) == pytest.approx(0.0) and curve(1.0) == pytest.approx(1.0), name
    assert CURVES["exponential"](0.5) < 0.5 < CURVES["logarithmic"](0.5)
    assert CURVES["s-curve"](0.25) < 0.25 and CURVES["s-curve"](0.75) > 0.75


def test_deadband_ignores_small_changes(tmp_path: Path) -> None:
    m = mapper_for("[[map]]\nsource = 'hand.y'\ntarget = 'pitch'\ndeadband = 0.05\n",
                   tmp_path)
    assert m.update(reading(0.0, y=0.4)) is not None
    assert m.update(reading(0.1, y=0.43)) is None
    assert m.update(reading(0.2, y=0.5)).pitch == pytest.approx(0.5)


def test_unchanged_value_makes_no_new_snapshot(tmp_path: Path) -> None:
    m = mapper_for("[[map]]\nsource = 'hand.y'\ntarget = 'pitch'\n", tmp_path)
    first = m.update(reading(0.0, y=0.3))
    assert m.update(reading(0.1, y=0.3)) is None
    assert m.controls is first


def test_one_euro_smooths_jitter_but_follows_moves() -> None:
    rng = np.random.default_rng(0)
    still = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.5))
    t = np.arange(0, 2, 1 / 60)
    noisy = 0.5 + 0.02 * rng.standard_normal(t.size)
    out = np.array([still(x, ti) for x, ti in zip(noisy, t, strict=True)])
    assert out[30:].std() < 0.3 * noisy[30:].std()
    moving = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=5.0))
    ramp = np.clip((t - 1.0) * 4, 0, 1)  # a fast move at t = 1 s
    out = np.array([moving(x, ti) for x, ti in zip(ramp, t, strict=True)])
    assert out[-1] == pytest.approx(1.0, abs=0.02)
    assert abs(out[90] - ramp[90]) < 0.15  # lags a little, 0.5 s into the move


def test_silent_source_holds_then_returns_to_neutral(tmp_path: Path) -> None:
    m = mapper_for("[[map]]\nsource = 'hand.y'\ntarget = 'pitch'\n"
                   "[[map]]\nsource = 'hand.x'\ntarget = 'noise[3]'\nin_range = [0, 1]\n"
                   "out_range = [-1, 1]\n", tmp_path, stale_after=0.5)
    c = m.update(reading(10.0, y=0.9, x=1.0))
    assert c.pitch == pytest.approx(0.9) and c.noise[3] == pytest.approx(1.0)
    assert m.tick(10.4) is None  # holds
    c = m.tick(10.6)
    assert c is not None and c.pitch == 0.5 and c.noise[3] == 0.0
    assert m.tick(11.0) is None


def test_key_and_generator_targets(tmp_path: Path) -> None:
    m = mapper_for("[[map]]\nsource = 'hand.x'\ntarget = 'key'\n", tmp_path)
    c = m.update(reading(0.0, x=7 / 11))  # G major
    assert c.key == 7
    hist = c.key_histogram()
    assert math.isclose(sum(hist), 1.0) and hist[6] > 0 and hist[5] == 0  # F# in, F out
    assert Controls(key=NO_KEY).key_histogram() == (1 / 12,) * 12


def test_neutral_controls_take_the_generators_settings(tmp_path: Path) -> None:
    cfg = config.loads("[generators.charrnn]\ntemperature = 0.8\ntop_p = 0.9\n",
                       base_dir=tmp_path)
    c = Mapper(cfg).controls
    assert (c.temperature, c.top_p, c.generator, c.version) == (0.8, 0.9, "charrnn", 0)
