"""`livegen render`: a recorded performance played through the engine on a virtual clock.
The same notes on every run, and the notes a real-time `livegen run --replay` of the
trace plays; an input that falls silent returns to neutral exactly `stale_after` after
its last reading."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_engine import (
    MODEL,
    RECORDER_TICK_S,
    ROOT,
    assert_same_music,
    lateness_s,
    recorded_note_ons,
    replay_run,
)

from livegen import config as config_module
from livegen.control import Controls
from livegen.engine import REPLAY_LEAD_S, REPLAY_START_LEAD_S, Engine, RunOptions

SECONDS = 8.0
GAP = (3.0, 5.5)  # readings cut out of the recording: longer than stale_after (2 s)
STALE_AFTER_S = 2.0


def sim_config(path: Path, record: Path | None = None) -> Path:
    """The default config's performer and rules (smoothed hand, EMG on velocity; denser
    playing, for more notes to compare), into a file only."""
    output = f'record = "{record}"' if record else ""
    path.write_text(f"""
[engine]
seed = 5

[output]
port = ""
panic_channels = [1]
{output}

[generators.charrnn]
model = "{MODEL}"

[inputs.sim]
type = "sim"
seed = 3
rate_hz = 30.0
stale_after = {STALE_AFTER_S}

[[map]]
source = "sim.hand.y"
target = "pitch"
smoothing = {{ min_cutoff = 1.0, beta = 0.5 }}

[[map]]
source = "sim.hand.x"
target = "density"
out_range = [0.6, 1.0]
smoothing = {{ min_cutoff = 1.0, beta = 0.5 }}

[[map]]
source = "sim.emg.total"
target = "velocity"
out_range = [0.4, 1.0]
""")
    return path


@pytest.fixture(scope="module")
def performance(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real trace: `livegen run --record` of the simulated performer, with the readings
    of GAP cut out, so that its input goes stale in the middle."""
    folder = tmp_path_factory.mktemp("performance")
    recorded = folder / "recorded.jsonl"
    done = subprocess.run([sys.executable, "-m", "livegen.cli", "run", "--config",
                           str(sim_config(folder / "record.toml")), "--record", str(recorded),
                           "--duration", str(SECONDS + 0.5)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    header, *lines = recorded.read_text().splitlines()
    kept = [line for line in lines if not GAP[0] <= json.loads(line)["t"] < GAP[1]]
    assert len(kept) > 150 and len(lines) - len(kept) > 60, (len(lines), len(kept))
    trace = folder / "performance.jsonl"
    trace.write_text("\n".join([header, *kept]) + "\n")
    return trace


def render(tmp_path: Path, trace: Path, out: Path) -> tuple[int, float, float]:
    """`livegen render` as a subprocess: (notes, seconds of music, wall seconds) from the
    line it prints."""
    done = subprocess.run([sys.executable, "-m", "livegen.cli", "render", "--replay",
                           str(trace), "--out", str(out), "--config",
                           str(sim_config(tmp_path / "render.toml")), "--duration",
                           str(SECONDS)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    line = re.fullmatch(r"render: (\d+) notes, ([\d.]+) s of music written to (.+) in "
                        r"([\d.]+) s\n", done.stdout)
    assert line, done.stdout
    assert line[3] == str(out)
    return int(line[1]), float(line[2]), float(line[4])


def test_render_writes_the_same_notes_on_every_run_faster_than_real_time(
        tmp_path: Path, performance: Path) -> None:
    first, second = tmp_path / "first.mid", tmp_path / "second.mid"
    notes, seconds, wall_s = render(tmp_path, performance, first)
    render(tmp_path, performance, second)
    ons = recorded_note_ons(first)
    assert len(ons) == notes >= 20
    assert seconds == SECONDS
    assert wall_s < SECONDS  # loose: `livegen render` takes a fraction of a second here
    assert ons == recorded_note_ons(second)
    assert first.read_bytes() == second.read_bytes()
    # The file's layout is a replay's: the music starts REPLAY_START_LEAD_S after the
    # start-up all-notes-off at time 0, and nothing plays from the end on.
    assert ons[0][0] >= REPLAY_START_LEAD_S and ons[-1][0] < REPLAY_START_LEAD_S + SECONDS


def test_render_plays_the_notes_a_real_time_replay_plays(
        tmp_path: Path, performance: Path) -> None:
    rendered = tmp_path / "rendered.mid"
    render(tmp_path, performance, rendered)
    recorded = tmp_path / "replayed.mid"
    figures = replay_run(sim_config(tmp_path / "run.toml", record=recorded), performance,
                         SECONDS, tmp_path / "stats.json")
    # The render's times are the plan's due times; the replay's are send times, each late
    # by up to the lateness its output measured; both rounded to the recorder's tick.
    assert_same_music(recorded_note_ons(rendered), recorded_note_ons(recorded),
                      lateness_s(figures) + 2 * RECORDER_TICK_S, figures["generators"])


def test_a_replayed_input_falls_stale_exactly_stale_after_its_last_reading(
        performance: Path) -> None:
    """Staleness is declared at the trace's time, in order with the readings, however
    late the housekeeping tick or the replay's task would have woken."""
    cfg = config_module.load(sim_config(performance.parent / "stale.toml"))
    events: list[tuple[str, float, object]] = []
    options = RunOptions(replay=performance)
    options.on_reading.append(lambda r: events.append(("reading", r.t, r)))
    options.on_controls.append(lambda c: events.append(("controls", c.t, c)))
    engine = Engine(cfg, options)
    engine.origin = 1000.0
    handovers = list(engine.replay_handovers(engine.open_replay()))
    # Handed over in trace order, each a lead before its time.
    assert handovers == sorted(handovers)
    readings = [t for kind, t, _ in events if kind == "reading"]
    assert [round(due + REPLAY_LEAD_S, 9) for due in handovers[:5]] == \
        [round(t, 9) for t in readings[:5]]
    last_before_gap = max(t for t in readings if t < engine.origin + GAP[0])
    neutral = dataclasses.replace(engine.mapper.neutral, version=0, t=0.0)
    stale = [(i, c) for i, (kind, _, c) in enumerate(events) if kind == "controls"
             and dataclasses.replace(c, version=0, t=0.0) == neutral]
    assert len(stale) == 2  # in the gap, and once more after the trace ends
    index, controls = stale[0]
    assert isinstance(controls, Controls)
    assert controls.t == pytest.approx(last_before_gap + STALE_AFTER_S, abs=1e-5)
    assert events[index - 1][1] == last_before_gap  # right after the last reading
    assert events[index + 1][1] >= engine.origin + GAP[1]  # before the first after it
