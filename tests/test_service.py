"""The systemd side: the unit passes verify and the security threshold, the installer
writes a working layout into a temporary root, sd_notify reaches a real socket."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from livegen import config
from livegen.service import Notifier, install

ROOT = Path(__file__).resolve().parents[1]
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None and not os.environ.get("CI"),
    reason="systemd-analyze is not installed (apt-get install systemd)")


@pytest.fixture
def installed(tmp_path: Path) -> Path:
    install(tmp_path, Path("/opt/livegen/bin/livegen"))
    return tmp_path


def test_install_writes_unit_config_and_shared_data(installed: Path) -> None:
    unit = (installed / "etc/systemd/system/livegen.service").read_text()
    assert "ExecStart=/opt/livegen/bin/livegen run --config /etc/livegen/config.toml" in unit
    assert (installed / "etc/livegen/config.toml").is_file()
    assert os.readlink(installed / "etc/livegen/models") == "/usr/share/livegen/models"
    assert "u livegen" in (installed / "usr/lib/sysusers.d/livegen.conf").read_text()


def test_installed_config_resolves_models_beside_it(installed: Path) -> None:
    cfg = config.load(installed / "etc/livegen/config.toml")
    assert cfg.generators["charrnn"].model == installed / "etc/livegen/models/charrnn.json"


def test_install_keeps_an_existing_config(tmp_path: Path) -> None:
    etc = tmp_path / "etc/livegen"
    etc.mkdir(parents=True)
    (etc / "config.toml").write_text("# mine\n")
    install(tmp_path, Path("/usr/bin/livegen"))
    assert (etc / "config.toml").read_text() == "# mine\n"


@needs_systemd_analyze
def test_unit_passes_systemd_analyze_verify(installed: Path) -> None:
    unit = installed / "etc/systemd/system/livegen.service"
    # verify checks that ExecStart exists: point it at a real executable for the check.
    text = unit.read_text().replace("/opt/livegen/bin/livegen", shutil.which("true"))
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "livegen.service" not in result.stderr, result.stderr


@needs_systemd_analyze
def test_unit_exposure_is_at_most_4(installed: Path) -> None:
    unit = installed / "etc/systemd/system/livegen.service"
    result = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for livegen\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 4.0


def receive(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.mark.parametrize("abstract", [False, True])
def test_notifications_arrive_on_a_real_datagram_socket(tmp_path: Path,
                                                        abstract: bool) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"@livegen-test-{os.getpid()}" if abstract else str(tmp_path / "notify")
    server.bind("\0" + name[1:] if abstract else name)
    server.settimeout(5)
    notifier = Notifier(name)
    try:
        notifier.notify("READY=1", "STATUS=playing")
        assert receive(server) == "READY=1\nSTATUS=playing"
        notifier.notify("WATCHDOG=1")
        assert receive(server) == "WATCHDOG=1"
    finally:
        notifier.close()
        server.close()


def test_without_systemd_notifying_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.notify("READY=1")  # nothing to send to, nothing raised


def test_watchdog_interval_is_half_of_watchdog_sec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert Notifier("").watchdog_interval() == 5.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier("").watchdog_interval() is None


def install_service(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "livegen.cli", "install-service", "--root",
                           str(root)], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_install_service_with_a_file_for_its_root_is_one_line(tmp_path: Path) -> None:
    root = tmp_path / "root.txt"
    root.write_text("not a folder\n")
    result = install_service(root)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"livegen: install-service --root: {root} is a file, not a folder; name a folder "
        "(it is made if it does not exist)"]


def test_install_service_that_cannot_write_says_where_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "etc").write_text("a file where /etc should be a folder\n")
    result = install_service(tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == (f"livegen: install-service: cannot write {tmp_path / 'etc/livegen'} "
                        f"under {tmp_path}: Not a directory; move what is in the way, or "
                        "pass another --root")
