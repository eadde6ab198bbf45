"""Running under systemd: the sd_notify protocol, and installing the service.

sd_notify is a datagram on the AF_UNIX socket named by $NOTIFY_SOCKET ('@' = abstract
namespace); a dozen lines, so no library. Outside systemd every call is a no-op.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import socket
import sys
from pathlib import Path

from livegen.config import SHARED_DATA, SHIPPED_DATA
from livegen.errors import LivegenError

log = logging.getLogger(__name__)


class Notifier:
    """Sends READY=1, WATCHDOG=1, RELOADING=1, STOPPING=1 and STATUS=... to systemd."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def watchdog_interval(self) -> float | None:
        """Half the WatchdogSec systemd asked for (seconds), or None when there is none."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and int(pid) != os.getpid()):
            return None
        return int(usec) / 2e6

    def notify(self, *fields: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:  # systemd gone or socket full: never worth stopping the show
            log.debug("sd_notify %s failed: %s", fields, exc)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


# ---------------------------------------------------------------- installing

SHARE = SHARED_DATA.relative_to("/")
SYSUSERS = """\
# The user the livegen service runs as (systemd-sysusers).
u livegen - "livegen live MIDI instrument" /var/lib/livegen
m livegen audio
m livegen video
m livegen dialout
"""
# The folders each sandbox setting hides from the service (systemd.exec(5)).
HIDDEN_BY = {
    "ProtectHome": (Path("/home"), Path("/root"), Path("/run/user")),
    "PrivateTmp": (Path("/tmp"), Path("/var/tmp")),
}
HIDING_VALUES = {"ProtectHome": {"yes", "true", "on", "1", "tmpfs"},
                 "PrivateTmp": {"yes", "true", "on", "1"}}
# Where a service can run livegen from, said in the refusal.
SERVICE_INSTALL = ("install livegen where the service can see it, with a Python that lives "
                   "there too: `sudo /usr/bin/python3 -m venv /opt/livegen && sudo "
                   "/opt/livegen/bin/pip install LIVEGEN` (the checkout or the wheel), then "
                   "`sudo /opt/livegen/bin/livegen install-service`")
PIP_LONG_SHEBANG = "'''exec' "  # pip's second line after #!/bin/sh when #! would be too long


def install(root: Path, executable: Path, source: Path = SHIPPED_DATA,
            package: Path | None = None) -> list[Path]:
    """Install the unit, the default config, the models and the device profiles under root.

    Layout: /etc/livegen/config.toml with models/ and devices/ beside it as links into
    /usr/share/livegen, so the shipped config's relative paths work unchanged. An existing
    /etc/livegen/config.toml is kept. `source` holds what livegen ships (a checkout's root
    or a wheel's livegen/data). Returns the files written. Raises LivegenError (one line)
    when root is not a folder, when the unit's sandbox would hide the executable (or the
    `package` it imports) from the service, and when a file cannot be written.
    """
    unit_template = source / "systemd" / "livegen.service"
    if not unit_template.is_file():
        raise LivegenError(f"{unit_template} not found: this livegen lacks the files it "
                           "ships; reinstall it from a wheel or a checkout (pip install ...)")
    if root.exists() and not root.is_dir():
        raise LivegenError(f"install-service --root: {root} is a file, not a folder; name a "
                           "folder (it is made if it does not exist)")
    if not executable.is_absolute():
        raise LivegenError(f"install-service --executable: {executable} is not an absolute "
                           "path; systemd runs absolute paths only, e.g. "
                           "/opt/livegen/bin/livegen")
    unit_text = unit_template.read_text()
    check_visible(executable, unit_text, package)
    try:
        return _install(root, executable, source, unit_text)
    except OSError as exc:  # shutil.Error too: it is an OSError with a list of failures
        where = f" {exc.filename}" if exc.filename else ""
        fix = ("run it as root (sudo), or pass --root DIR to install into a folder of your "
               "own" if isinstance(exc, PermissionError) or exc.errno == errno.EROFS
               else "move what is in the way, or pass another --root")
        raise LivegenError(f"install-service: cannot write{where} under {root}: "
                           f"{exc.strerror or exc}; {fix}") from None


def hidden_folders(unit_text: str) -> dict[Path, str]:
    """The folders the unit's sandbox hides from the service, each with the setting (as
    the unit writes it) that hides it."""
    settings: dict[str, str] = {}
    for line in unit_text.splitlines():
        key, equals, value = line.strip().partition("=")
        if equals and not key.startswith(("#", ";")):
            settings[key.strip()] = value.strip()
    hidden: dict[Path, str] = {}
    for key, folders in HIDDEN_BY.items():
        if settings.get(key, "").lower() in HIDING_VALUES[key]:
            hidden.update((folder, f"{key}={settings[key]}") for folder in folders)
    return hidden


def check_visible(executable: Path, unit_text: str, package: Path | None = None) -> None:
    """Refuse, in one line with the fix (LivegenError), a unit that could not start: one
    whose sandbox hides the executable, where its links lead, its script's interpreter or
    the livegen package it imports."""
    hidden = hidden_folders(unit_text)
    for role, path in _what_the_service_runs(executable, package):
        for folder, setting in hidden.items():
            if path.is_relative_to(folder):
                raise LivegenError(f"install-service: the service could not start: {role} "
                                   f"{path} lies under {folder}, which the unit's {setting} "
                                   f"hides from it; {SERVICE_INSTALL}")


def _what_the_service_runs(executable: Path,
                           package: Path | None) -> list[tuple[str, Path]]:
    """(what it is, path) for each file the service needs to start livegen."""
    runs = [("the livegen executable", executable)]
    if executable.exists():
        runs.append(("the livegen executable (its link's target)", executable.resolve()))
        interpreter = _script_interpreter(executable)
        if interpreter is not None:
            runs.append(("its interpreter", interpreter))
            runs.append(("its interpreter (its link's target)", interpreter.resolve()))
    if package is not None:
        runs.append(("the livegen package it imports", package))
    return runs


def _script_interpreter(script: Path) -> Path | None:
    """The Python a console script runs: its #! line, or the exec line pip writes after
    #!/bin/sh when the path is too long for #!. None for a binary or /usr/bin/env."""
    try:
        with script.open("rb") as f:
            head = f.read(1024).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    words = head[0][2:].split()
    if words == ["/bin/sh"] and len(head) > 1 and head[1].startswith(PIP_LONG_SHEBANG):
        words = head[1].removeprefix(PIP_LONG_SHEBANG).split()
    if not words or Path(words[0]).name == "env":
        return None
    return Path(words[0].strip("'\""))


def _install(root: Path, executable: Path, source: Path, unit_text: str) -> list[Path]:
    written: list[Path] = []
    share = root / SHARE
    for folder in ("models", "devices", "examples"):
        if (source / folder).is_dir():
            shutil.copytree(source / folder, share / folder, dirs_exist_ok=True)
            written.append(share / folder)
    shutil.copy2(source / "README.md", share / "README.md")
    shutil.copy2(source / "config.toml", share / "config.toml")

    etc = root / "etc" / "livegen"
    etc.mkdir(parents=True, exist_ok=True)
    config = etc / "config.toml"
    if not config.exists():
        shutil.copy2(source / "config.toml", config)
        written.append(config)
    for folder in ("models", "devices"):
        link = etc / folder
        if not link.exists() and not link.is_symlink():
            link.symlink_to(Path("/") / SHARE / folder)
            written.append(link)

    unit = root / "etc" / "systemd" / "system" / "livegen.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    unit.write_text(unit_text.replace("@LIVEGEN@", str(executable)))
    written.append(unit)

    sysusers = root / "usr" / "lib" / "sysusers.d" / "livegen.conf"
    sysusers.parent.mkdir(parents=True, exist_ok=True)
    sysusers.write_text(SYSUSERS)
    written.append(sysusers)

    rules = source / "devices" / "99-livegen.rules"
    if rules.is_file():
        target = root / "etc" / "udev" / "rules.d" / rules.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rules, target)
        written.append(target)
    return written


def install_command(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    executable, package = args.executable, None
    if executable is None:
        # The livegen beside the running interpreter: the one this very install belongs
        # to, which imports this very package.
        executable = Path(sys.executable).parent / "livegen"
        if not executable.exists():
            executable = Path(shutil.which("livegen") or sys.argv[0]).resolve()
        package = Path(__file__).resolve().parent
    for path in install(root, executable, package=package):
        print(f"installed {path}")
    if root == Path("/"):
        print("next: systemd-sysusers && udevadm control --reload && "
              "systemctl daemon-reload && systemctl enable --now livegen")
    return 0
