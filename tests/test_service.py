"""The systemd side: the unit passes verify and the security threshold, the installer
writes a working layout into a temporary root, sd_notify reaches a real socket."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from livegen import config
from livegen.errors import LivegenError
from livegen.service import SERVICE_INSTALL, Notifier, check_visible, hidden_folders, install

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
    # --executable: these tests are about the root, and this venv may live where the unit's
    # sandbox would hide it (see the tests below).
    return subprocess.run([sys.executable, "-m", "livegen.cli", "install-service", "--root",
                           str(root), "--executable", "/opt/livegen/bin/livegen"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


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


# ---------------------------------------------------------------- what the sandbox hides

UNIT = (ROOT / "systemd" / "livegen.service").read_text()
PYENV = Path("/home/me/.pyenv/versions/3.11.7/bin/python3.11")


def refusal(role: str, path: Path, folder: str, setting: str) -> str:
    return (f"install-service: the service could not start: {role} {path} lies under "
            f"{folder}, which the unit's {setting} hides from it; {SERVICE_INSTALL}")


def test_the_shipped_unit_hides_home_root_run_user_and_tmp() -> None:
    assert hidden_folders(UNIT) == {
        Path("/home"): "ProtectHome=yes", Path("/root"): "ProtectHome=yes",
        Path("/run/user"): "ProtectHome=yes", Path("/tmp"): "PrivateTmp=yes",
        Path("/var/tmp"): "PrivateTmp=yes"}


def test_a_unit_that_hides_nothing_refuses_nothing() -> None:
    unit = "[Service]\n# ProtectHome=yes\nProtectHome=read-only\nPrivateTmp=no\n"
    assert hidden_folders(unit) == {}
    check_visible(Path("/home/me/venv/bin/livegen"), unit)  # nothing raised


@pytest.mark.parametrize(("executable", "folder", "setting"), [
    ("/home/me/livegen/.venv/bin/livegen", "/home", "ProtectHome=yes"),
    ("/root/.local/bin/livegen", "/root", "ProtectHome=yes"),
    ("/run/user/1000/venv/bin/livegen", "/run/user", "ProtectHome=yes"),
    ("/tmp/venv/bin/livegen", "/tmp", "PrivateTmp=yes"),
    ("/var/tmp/venv/bin/livegen", "/var/tmp", "PrivateTmp=yes"),
])
def test_install_refuses_an_executable_the_sandbox_hides(
        tmp_path: Path, executable: str, folder: str, setting: str) -> None:
    with pytest.raises(LivegenError) as refused:
        install(tmp_path / "root", Path(executable))
    assert str(refused.value) == refusal("the livegen executable", Path(executable), folder,
                                         setting)
    assert not (tmp_path / "root").exists(), "a refused install wrote files"


def made_in(parent: str) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="livegen-test-", dir=parent))
    yield folder
    shutil.rmtree(folder)


@pytest.fixture
def visible_folder() -> Iterator[Path]:
    """A folder the unit's sandbox does not hide (tmp_path lies under /tmp, which it does)."""
    yield from made_in("/dev/shm")


@pytest.fixture
def hidden_folder() -> Iterator[Path]:
    """A folder the unit's PrivateTmp=yes hides, wherever $TMPDIR points."""
    yield from made_in("/tmp")


@pytest.mark.parametrize("script", [
    f"#!{PYENV}\nimport livegen\n",
    # pip's form when the interpreter's path is too long for a #! line
    f"#!/bin/sh\n'''exec' {PYENV} \"$0\" \"$@\"\n' '''\nimport livegen\n",
])
def test_install_refuses_a_script_whose_interpreter_is_hidden(
        tmp_path: Path, visible_folder: Path, script: str) -> None:
    executable = visible_folder / "livegen"
    executable.write_text(script)
    executable.chmod(0o755)
    with pytest.raises(LivegenError) as refused:
        install(tmp_path, executable)
    assert str(refused.value) == refusal("its interpreter", PYENV, "/home", "ProtectHome=yes")


def test_install_refuses_a_link_into_a_hidden_folder(tmp_path: Path, visible_folder: Path,
                                                     hidden_folder: Path) -> None:
    real = hidden_folder / "venv" / "bin" / "livegen"
    real.parent.mkdir(parents=True)
    real.write_text("#!/usr/bin/env python3\n")
    link = visible_folder / "livegen"
    link.symlink_to(real)
    with pytest.raises(LivegenError) as refused:
        install(tmp_path / "root", link)
    assert str(refused.value) == refusal("the livegen executable (its link's target)",
                                         real.resolve(), "/tmp", "PrivateTmp=yes")


def test_install_refuses_a_hidden_livegen_package(tmp_path: Path) -> None:
    package = Path("/home/me/livegen/livegen")
    with pytest.raises(LivegenError) as refused:
        install(tmp_path / "root", Path("/opt/livegen/bin/livegen"), package=package)
    assert str(refused.value) == refusal("the livegen package it imports", package, "/home",
                                         "ProtectHome=yes")


def test_install_accepts_a_visible_script(tmp_path: Path, visible_folder: Path) -> None:
    executable = visible_folder / "livegen"
    executable.write_text("#!/usr/bin/python3\nimport livegen\n")
    install(tmp_path, executable)
    unit = (tmp_path / "etc/systemd/system/livegen.service").read_text()
    assert f"ExecStart={executable} run --config /etc/livegen/config.toml" in unit


def test_install_service_refuses_a_relative_executable_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "livegen.cli", "install-service", "--root",
                           str(tmp_path), "--executable", "bin/livegen"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "livegen: install-service --executable: bin/livegen is not an absolute path; "
        "systemd runs absolute paths only, e.g. /opt/livegen/bin/livegen"]
