"""The `livegen` command line: lengths that are not positive refused in one line, the
logging flags after the command as before it, and the --stats line honest about what was
not measured yet and about dropped data."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from livegen.engine import format_stats

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "charrnn.json"


def livegen(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livegen.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def sim_config(path: Path) -> Path:
    path.write_text(f"""
[output]
port = ""
record = "{path.with_suffix('.mid')}"

[generators.charrnn]
model = "{MODEL}"

[inputs.sim]
type = "sim"

[[map]]
source = "sim.hand.y"
target = "pitch"
""")
    return path


@pytest.mark.parametrize(("args", "expected"), [
    (["run", "--duration", "0"], "livegen run: error: argument --duration: 0 seconds: give "
                                 "more than 0 (see livegen run -h)"),
    (["run", "--duration", "-1"], "argument --duration: -1 seconds: give more than 0"),
    (["run", "--stats", "-5"], "argument --stats: -5 seconds: give 0 or more"),
    (["demo", "--seconds", "0"], "livegen demo: error: argument --seconds: 0 seconds: give "
                                 "more than 0"),
    (["demo", "--seconds", "-1"], "argument --seconds: -1 seconds: give more than 0"),
    (["demo", "--seconds", "nan"], "argument --seconds: nan seconds: give more than 0"),
    (["demo", "--seconds", "soon"], "argument --seconds: 'soon' is not a number of seconds"),
])
def test_a_length_that_is_not_positive_is_refused_in_one_line(
        args: list[str], expected: str, tmp_path: Path) -> None:
    config = sim_config(tmp_path / "c.toml")
    result = livegen(*args, "--config", str(config), *(
        ["--out", str(tmp_path / "out")] if args[0] == "demo" else []))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / "c.mid").exists() and not (tmp_path / "out").exists()


def test_the_logging_flags_work_after_the_command_too(tmp_path: Path) -> None:
    config = sim_config(tmp_path / "c.toml")
    quiet = livegen("run", "--config", str(config), "--duration", "1", "-q")
    assert quiet.returncode == 0, quiet.stderr
    assert "INFO" not in quiet.stderr
    loud = livegen("-v", "run", "--config", str(config), "--duration", "1", "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "DEBUG" in loud.stderr  # one -v before the command and one after make -vv
    assert livegen("check-config", "-q", str(config)).returncode == 0


def test_the_stats_line_says_what_was_not_measured_yet_and_what_was_dropped() -> None:
    nan = float("nan")
    figures = {
        "generators": {"charrnn": {"step_ms": {"n": 0}, "control_latency_ms": {"n": 0},
                                   "budget_overruns": 0, "late": 0, "stalls": 0}},
        "output": {"lateness_p50_ms": nan, "lateness_p99_ms": nan, "lateness_max_ms": nan,
                   "messages": 16},
        "inputs": {"knobs": {"dropped": {"nan": 6, "garbage": 25}}, "cam": {"dropped": {}}},
        "cpu_percent": 3.0, "rss_mb": 120.4}
    assert format_stats(figures) == (
        "charrnn step -, control latency: no changes yet, late 0, stalls 0 | "
        "send lateness -, 16 sent | dropped knobs 31 (garbage 25, nan 6) | cpu 3% rss 120 MB")


def test_the_stats_lines_of_a_run_count_dropped_data_and_print_no_nan(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        osc_port = probe.getsockname()[1]
    config = tmp_path / "c.toml"
    config.write_text(f"""
[output]
port = ""

[generators.charrnn]
model = "{MODEL}"

[inputs.phone]
type = "osc"
port = {osc_port}

[[map]]
source = "phone.fader"
target = "pitch"
""")
    log_path = tmp_path / "run.log"
    with log_path.open("w") as log:
        run = subprocess.Popen([sys.executable, "-m", "livegen.cli", "run", "--config",
                                str(config), "--duration", "3", "--stats", "0.5"],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 60
            while "listening on udp" not in log_path.read_text():
                assert run.poll() is None and time.monotonic() < deadline, log_path.read_text()
                time.sleep(0.05)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for _ in range(20):
                    sender.sendto(b"not OSC at all", ("127.0.0.1", osc_port))
            status = run.wait(60)
        finally:
            if run.poll() is None:
                run.kill()
    text = log_path.read_text()
    assert status == 0, text
    stats = [line for line in text.splitlines() if "stats: " in line]
    assert len(stats) >= 3, text
    assert not any("nan" in line or "0/0" in line for line in stats), stats
    assert all("control latency: no changes yet" in line for line in stats), stats
    assert "dropped phone 20 (unparsable 20)" in stats[-1], stats
