"""Mapping rules: ranges, curves, invert, deadband, One Euro smoothing, staleness."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from livegen import config
from livegen.config import TARGETS, OneEuroConfig
from livegen.control import CURVES, NO_KEY, Controls, Mapper, OneEuroFilter
from livegen.inputs.base import Reading


def mapper_for(rules: str, tmp_path: Path, stale_after: float = 2.0) -> Mapper:
    # An OSC input takes any key, so the rules can name plain x and y.
    text = f"[inputs.hand]\ntype = 'osc'\nstale_after = {stale_after}\n{rules}"
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


# ---------------------------------------------------------------- nothing wild gets through

LIMITED = ["pitch", "density", "key", "temperature", "top_p", "velocity", "tempo",
           "generator", "noise[5]"]


def within_limits(c: Controls) -> None:
    for name in ("pitch", "density", "temperature", "top_p", "velocity", "tempo"):
        lo, hi = TARGETS[name].limits
        assert lo <= getattr(c, name) <= hi, (name, getattr(c, name))
    assert 0 <= c.key <= 11 and all(-1.0 <= v <= 1.0 for v in c.noise)
    assert math.isfinite(c.velocity_scale) and round(127 * c.velocity_scale) >= 0


@pytest.mark.parametrize("target", LIMITED)
def test_a_rule_built_in_code_past_the_config_checks_is_held_to_its_target(
        target: str, tmp_path: Path) -> None:
    cfg = config.loads(f"[inputs.hand]\ntype = 'osc'\n[[map]]\nsource = 'hand.y'\n"
                       f"target = '{target}'\n", base_dir=tmp_path)
    wild = dataclasses.replace(cfg.map[0], out_range=(-1e308, 1e308))
    m = Mapper(dataclasses.replace(cfg, map=(wild,)))
    for i, y in enumerate([0.0, 0.5, 1.0, 0.25]):
        c = m.update(reading(float(i), y=y))
        if c is not None:
            within_limits(c)
        lo, hi = TARGETS[m.rules[0].target].limits
        assert lo <= m.rules[0].output <= hi


def test_a_tempo_mapped_to_zero_in_code_is_held_to_the_slowest_tempo(tmp_path: Path) -> None:
    cfg = config.loads("[inputs.hand]\ntype = 'osc'\n[[map]]\nsource = 'hand.y'\n"
                       "target = 'tempo'\n", base_dir=tmp_path)
    m = Mapper(dataclasses.replace(cfg, map=(dataclasses.replace(cfg.map[0],
                                                                 out_range=(0.0, 0.0)),)))
    assert m.update(reading(0.0, y=0.7)).tempo == TARGETS["tempo"].limits[0]


def test_values_that_are_not_numbers_are_ignored_and_huge_ones_clipped(tmp_path: Path) -> None:
    m = mapper_for("[[map]]\nsource = 'hand.y'\ntarget = 'velocity'\nout_range = [0.0, 2.0]\n"
                   "smoothing = { min_cutoff = 1.0, beta = 0.5 }\n", tmp_path)
    assert m.update(reading(0.0, y=0.5)).velocity == pytest.approx(1.0)
    for i, y in enumerate([math.nan, math.inf, -math.inf]):
        assert m.update(reading(0.1 + 0.1 * i, y=y)) is None
    for i, y in enumerate([1.7e308, -1.7e308, 1e300]):
        c = m.update(reading(1.0 + 0.02 * i, y=y))
        if c is not None:
            within_limits(c)


def test_one_euro_filter_recovers_at_once_from_values_beyond_what_floats_hold() -> None:
    f = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.5))
    f(0.5, 0.0)
    f(1.7e308, 0.02)
    f(-1.7e308, 0.04)  # the jump overflows to -inf: the state restarts from here
    out = [f(0.5, 0.06 + 0.02 * i) for i in range(5)]
    assert all(math.isfinite(v) for v in out)
    assert out[-1] == pytest.approx(0.5)
    still = OneEuroFilter(OneEuroConfig(min_cutoff=1.0, beta=0.0))
    still(1.7e308, 0.0)
    assert still(-1.7e308, 1e-300) == -1.7e308  # a step past float range, at any dt
    assert math.isfinite(still(0.25, 1.0))


def test_smoothing_follows_the_hand_again_soon_after_wild_values(tmp_path: Path) -> None:
    m = mapper_for("[[map]]\nsource = 'hand.y'\ntarget = 'pitch'\n"
                   "smoothing = { min_cutoff = 1.0, beta = 0.0 }\n", tmp_path)
    for i, y in enumerate([1.7e308, -1.7e308, 1e300, -1e300, 5e-324]):
        m.update(reading(0.02 * i, y=y))
    for i in range(100):  # two seconds at 50 Hz: twelve time constants of a 1 Hz cutoff
        m.update(reading(0.1 + 0.02 * i, y=0.3))
    assert m.controls.pitch == pytest.approx(0.3, abs=1e-3)


def test_osc_controls_hold_after_a_faders_last_message(tmp_path: Path) -> None:
    m = Mapper(config.loads("[inputs.fader]\ntype = 'osc'\n[[map]]\nsource = 'fader.level'\n"
                            "target = 'density'\n", base_dir=tmp_path))
    assert m.update(Reading("fader", 10.0, {"level": 0.9})).density == pytest.approx(0.9)
    assert m.tick(10.0 + 600.0) is None  # ten minutes without moving it: it stays put
    assert m.controls.density == pytest.approx(0.9)


def test_a_rule_for_one_generator_moves_that_generator_alone() -> None:
    cfg = config.loads("""
[engine]
generators = ["charrnn", "lead"]
mode = "layer"
[generators.lead]
type = "charrnn"
channel = 2
temperature = 0.6
[inputs.sim]
type = "sim"
[[map]]
source = "sim.hand.y"
target = "lead.pitch"
[[map]]
source = "sim.hand.x"
target = "temperature"
""", base_dir=Path(__file__).parent)
    mapper = Mapper(cfg)
    # Before any rule drives temperature, each generator has its own configured one.
    assert mapper.controls.for_generator("lead").temperature == 0.6
    assert mapper.controls.for_generator("charrnn").temperature == 1.0
    controls = mapper.update(Reading("sim", 1.0, {"hand.y": 0.9, "hand.x": 1.0}))
    assert controls is not None
    lead, other = controls.for_generator("lead"), controls.for_generator("charrnn")
    assert lead.pitch == pytest.approx(0.9) and other.pitch == 0.5
    # A rule on temperature for all overrides each generator's own setting.
    assert lead.temperature == other.temperature == controls.temperature != 0.6


def test_the_melody_input_s_notes_become_the_performer_s_melody_in_beats() -> None:
    from livegen.clock import Grid
    from livegen.generators.segment import MelodyNote, melody_notes

    cfg = config.loads('[engine]\nmelody_input = "keys"\n[inputs.keys]\ntype = "midi"\n'
                       'virtual = true\n', base_dir=Path(__file__).parent)
    mapper = Mapper(cfg)
    mapper.update(Reading("keys", 10.0, {"note.60": 0.8, "note": 60 / 127, "velocity": 0.8}))
    mapper.update(Reading("keys", 10.5, {"note.60": 0.0}))
    controls = mapper.update(Reading("keys", 11.0, {"note.64": 0.7}))
    assert controls is not None
    assert controls.melody == ((10.0, 10.5, 60), (11.0, math.inf, 64))
    grid = Grid(t0=10.0, beat0=8.0, bpm=120.0, beats_per_bar=4)  # beat 8 at 10 s
    # What began in the bar of beats 8..12: in beats from 8; the held note lasts to 12.
    assert melody_notes(controls.melody, grid, 8.0, 12.0) == (
        MelodyNote(0.0, 1.0, 60), MelodyNote(2.0, 2.0, 64))
    assert melody_notes(controls.melody, grid, 12.0, 16.0) == ()
