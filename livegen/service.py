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

from livegen.config import CHECKOUT_ROOT, SHARED_DATA
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


def install(root: Path, executable: Path, source: Path = CHECKOUT_ROOT) -> list[Path]:
    """Install the unit, the default config, the models and the device profiles under root.

    Layout: /etc/livegen/config.toml with models/ and devices/ beside it as links into
    /usr/share/livegen, so the shipped config's relative paths work unchanged. An existing
    /etc/livegen/config.toml is kept. Returns the files written. Raises LivegenError (one
    line) when root is not a folder or a file cannot be written.
    """
    unit_template = source / "systemd" / "livegen.service"
    if not unit_template.is_file():
        raise LivegenError(f"{unit_template} not found: install-service runs from a livegen "
                           "checkout or an installed copy with its systemd/ folder")
    if root.exists() and not root.is_dir():
        raise LivegenError(f"install-service --root: {root} is a file, not a folder; name a "
                           "folder (it is made if it does not exist)")
    try:
        return _install(root, executable, source, unit_template)
    except OSError as exc:  # shutil.Error too: it is an OSError with a list of failures
        where = f" {exc.filename}" if exc.filename else ""
        fix = ("run it as root (sudo), or pass --root DIR to install into a folder of your "
               "own" if isinstance(exc, PermissionError) or exc.errno == errno.EROFS
               else "move what is in the way, or pass another --root")
        raise LivegenError(f"install-service: cannot write{where} under {root}: "
                           f"{exc.strerror or exc}; {fix}") from None


def _install(root: Path, executable: Path, source: Path, unit_template: Path) -> list[Path]:
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
    unit.write_text(unit_template.read_text().replace("@LIVEGEN@", str(executable)))
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
    # The livegen beside the running interpreter: the one this very install belongs to.
    executable = Path(sys.executable).parent / "livegen"
    if not executable.exists():
        executable = Path(shutil.which("livegen") or sys.argv[0]).resolve()
    for path in install(root, executable):
        print(f"installed {path}")
    if root == Path("/"):
        print("next: systemd-sysusers && udevadm control --reload && "
              "systemctl daemon-reload && systemctl enable --now livegen")
    return 0
