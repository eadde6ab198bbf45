"""config.toml validation: every kind of bad value is named by its key path, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from livegen import config
from livegen.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def problems_of(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.loads(text, base_dir=tmp_path, source="t.toml")
    return info.value.problems


def test_shipped_config_is_valid_and_needs_no_hardware() -> None:
    cfg = config.load(ROOT / "config.toml")
    assert {c.type for c in cfg.inputs.values()} == {"sim"}
    assert cfg.generators.charrnn.model == ROOT / "models" / "charrnn.json"


def test_effective_config_round_trips(tmp_path: Path) -> None:
    cfg = config.load(ROOT / "config.toml")
    again = config.loads(config.dumps(cfg), base_dir=tmp_path, source="x.toml")
    assert again.map == cfg.map
    assert again.inputs == cfg.inputs
    assert again.output == cfg.output and again.engine == cfg.engine


def test_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "c.toml").write_text(
        '[generators.charrnn]\nmodel = "models/m.json"\n[output]\nrecord = "/abs/x.mid"\n')
    cfg = config.load(tmp_path / "etc" / "c.toml")
    assert cfg.generators.charrnn.model == tmp_path / "etc" / "models" / "m.json"
    assert cfg.output.record == Path("/abs/x.mid")


@pytest.mark.parametrize(("text", "expected"), [
    ("[engine]\nlookahed_ms = 3\n",
     "engine.lookahed_ms: unknown key; did you mean 'lookahead_ms'?"),
    ("[engine]\nlatency_budget_ms = 'fast'\n",
     "engine.latency_budget_ms: expected a number, got 'fast' (string)"),
    ("[engine]\nlatency_budget_ms = 0\n",
     "engine.latency_budget_ms: 0.0 is out of range; expected between 0.5 and 1000.0"),
    ("[engine]\nlookahead_ms = 50\ncommit_ms = 60\n",
     "engine.commit_ms: 60.0 must be smaller than engine.lookahead_ms"),
    ("[output]\napi = 'jak'\n", "output.api: 'jak' (string) is not one of"),
    ("[output]\npanic_channels = [1, 17]\n", "output.panic_channels[1]: 17 is out of range"),
    ("[output]\nchannel = 1.5\n", "output.channel: expected a whole number, got 1.5"),
    ("[output]\nrealtime = 'yes'\n", "output.realtime: expected true or false"),
    ("[output]\nconnect = 'synth'\n", "output.connect: expected an array"),
    ("engine = 3\n", "engine: expected a table, got 3"),
    ("[inputs.cam]\ntype = 'camra'\n", "inputs.cam.type: unknown input type 'camra'"),
    ("[inputs.cam]\nrate = 3\n", "inputs.cam.type: missing"),
    ("[inputs.sim]\ntype = 'sim'\nrate_hz = 0\n", "inputs.sim.rate_hz: 0.0 is out of range"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.hand.y'\ntarget = 'pich'\n",
     "map[0].target: unknown target 'pich'; did you mean 'pitch'?"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.x'\ntarget = 'noise[64]'\n",
     "map[0].target: noise index 64 is out of range"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'cam.x'\ntarget = 'pitch'\n",
     "map[0].source: no input named 'cam'"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.x'\ntarget = 'pitch'\n"
     "in_range = [0, 1, 2]\n", "map[0].in_range: expected 2 values"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.x'\ntarget = 'pitch'\n"
     "curve = 'expo'\n", "map[0].curve: 'expo' (string) is not one of"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.x'\ntarget = 'pitch'\n"
     "smoothing = { min_cutoff = -1 }\n", "map[0].smoothing.min_cutoff: -1.0 is out of range"),
    ("[inputs.sim]\ntype = 'sim'\n[[map]]\ntarget = 'pitch'\n", "map[0].source: missing"),
    ("[engine]\ngenerator = 'charnn'\n",
     "engine.generator: unknown generator 'charnn'; did you mean 'charrnn'?"),
    ("[engine\n", "not valid TOML"),
])
def test_each_kind_of_bad_value_names_its_key_path(text: str, expected: str,
                                                   tmp_path: Path) -> None:
    problems = problems_of(text, tmp_path)
    assert any(expected in p for p in problems), problems


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of("[engine]\nlookahed_ms = 3\n[output]\napi = 'x'\nchannel = 99\n",
                           tmp_path)
    assert len(problems) == 3


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livegen.cli", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_check_config_exits_2_with_one_line_per_problem_and_no_traceback(
        tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[inputs.sim]\ntype = 'sim'\n[[map]]\nsource = 'sim.hand.y'\n"
                   "target = 'pich'\n[output]\nmax_note_s = -1\n")
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert any("map[0].target: unknown target 'pich'; did you mean 'pitch'?" in line
               for line in lines)
    assert any("output.max_note_s" in line for line in lines)


def test_check_config_prints_the_effective_config() -> None:
    result = run_cli("check-config", str(ROOT / "config.toml"))
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout
    assert "lookahead_ms = 400.0" in result.stdout  # defaults filled in
    assert "[[map]]" in result.stdout


def test_missing_config_file_is_one_clear_line(tmp_path: Path) -> None:
    result = run_cli("check-config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "no such file" in result.stderr and "Traceback" not in result.stderr
