"""An install that fits the user: a wheel built from this tree carries what livegen ships
and, installed into a fresh venv, plays the demo, checks its packaged config and installs
the service from a folder outside any checkout; the README's first command on a fresh
copy of the tree installs no torch and no test tools.

No network: each fresh venv gets the dependencies it needs from this venv through a .pth
file naming a folder of links to exactly those distributions (livegen's dependencies read
from pyproject.toml, followed transitively), and pip runs with no index and no build
isolation. So pip finds every requirement already satisfied, and a requirement outside
that set (torch, say) makes the install fail instead of quietly coming from this venv.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from livegen import config, service
from livegen.music.events import read_midi

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
SITE = f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
TIMEOUT = 300


# ---------------------------------------------------------------- helpers

def requirements(extras: Iterable[str] = ()) -> list[Requirement]:
    """livegen's own requirements (pyproject.toml), with those of the named extras."""
    wanted = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        for text in PROJECT["optional-dependencies"][extra]:
            requirement = Requirement(text)
            if canonicalize_name(requirement.name) == "livegen":
                wanted += requirements(requirement.extras)
            else:
                wanted.append(requirement)
    return wanted


def closure(wanted: Iterable[Requirement]) -> dict[str, importlib.metadata.Distribution]:
    """Every distribution installed here that `wanted` needs, transitively."""
    found: dict[str, importlib.metadata.Distribution] = {}
    todo = [(r, r.extras) for r in wanted]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found[name] = dist = importlib.metadata.distribution(requirement.name)
        for text in dist.requires or []:
            needed = Requirement(text)
            if needed.marker is None or any(needed.marker.evaluate({"extra": e})
                                            for e in {"", *extras}):
                todo.append((needed, needed.extras))
    return found


def link_site(folder: Path, dists: Iterable[importlib.metadata.Distribution]) -> Path:
    """A folder of links to the installed files of these distributions (their top-level
    modules and metadata), for a .pth file to put on a fresh venv's path."""
    folder.mkdir(parents=True)
    for dist in dists:
        assert dist.files is not None, f"{dist.metadata['Name']} has no RECORD"
        for top in {Path(f).parts[0] for f in dist.files}:
            link = folder / top
            if top != ".." and not link.exists():
                link.symlink_to(Path(dist.locate_file(top)))
    return folder


def offline_env(**extra: str) -> dict[str, str]:
    """This environment without pip's settings or a PYTHONPATH (which would put other code
    before the fresh venv's), with no index: nothing is downloaded."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "LIVEGEN_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def make_venv(folder: Path, deps: Path) -> Path:
    """A fresh venv, with nothing installed, that sees the linked `deps` folder (last on its
    path); its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True,
                   timeout=TIMEOUT)
    (folder / SITE / "livegen-test-deps.pth").write_text(f"{deps}\n")
    return folder / "bin" / "python"


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None,
        shell: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command if not shell else command[0], cwd=cwd, shell=shell,
                          env=env or offline_env(), capture_output=True, text=True,
                          timeout=TIMEOUT)


def copy_tree(dest: Path) -> Path:
    """What a fresh clone of this working tree holds: the tracked files and the new ones
    git does not ignore (no .venv, out/, build/ or caches)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True,
                            check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a file deleted but not yet committed is listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("install")


@pytest.fixture(scope="module")
def wheel(work: Path) -> Path:
    """The wheel built from a copy of this tree, as `pip wheel .` builds it."""
    source = copy_tree(work / "source")
    done = run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                "--no-build-isolation", "-w", str(work / "dist")], cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (work / "dist").glob("livegen-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(work: Path, wheel: Path) -> Path:
    """A fresh venv holding the wheel and livegen's core dependencies only: its bin/."""
    deps = link_site(work / "deps-core", closure(requirements()).values())
    python = make_venv(work / "venv", deps)
    done = run([sys.executable, "-m", "pip", "--python", str(python), "install", str(wheel)],
               cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    return python.parent


@pytest.fixture(scope="module")
def elsewhere(work: Path) -> Path:
    """A working folder outside any checkout."""
    folder = work / "elsewhere"
    folder.mkdir()
    return folder


# ---------------------------------------------------------------- the wheel

def test_wheel_carries_models_config_unit_udev_rules_and_profiles(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {"config.toml", "README.md", "systemd/livegen.service",
               "devices/99-livegen.rules"}
    shipped |= {f"devices/{p.name}" for p in (ROOT / "devices").glob("*.toml")}
    shipped |= {f"examples/{p.name}" for p in (ROOT / "examples").glob("*.toml")}
    for manifest in (ROOT / "models").glob("*.json"):
        shipped.add(f"models/{manifest.name}")
        files = json.loads(manifest.read_text())["files"]
        shipped |= {f"models/{entry['path']}" for entry in files.values()}
    missing = sorted(name for name in shipped if f"livegen/data/{name}" not in names)
    assert not missing, f"the wheel lacks {missing}"
    # Every file of the package itself, code and package data (the monitor page) alike.
    source = wheel.parent.parent / "source"  # the copy the wheel was built from
    package = [p.relative_to(source).as_posix() for p in (source / "livegen").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts]
    assert "livegen/cli.py" in package
    assert not sorted(set(package) - names), "the wheel lacks part of the package"


def test_wheel_requires_no_torch_music21_or_test_tools_to_play(wheel: Path) -> None:
    metadata = zipfile.ZipFile(wheel).read("livegen-0.1.0.dist-info/METADATA").decode()
    core = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
            if line.startswith("Requires-Dist:") and "extra ==" not in line]
    names = {canonicalize_name(Requirement(r).name) for r in core}
    assert "onnxruntime" in names and "python-rtmidi" in names
    assert not names & {"torch", "music21", "onnx", "pytest", "ruff", "matplotlib"}


def test_installed_wheel_plays_the_demo_outside_a_checkout(venv: Path,
                                                           elsewhere: Path) -> None:
    done = run([str(venv / "livegen"), "demo", "--seconds", "2", "--out", "out"],
               cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    assert read_midi(elsewhere / "out" / "demo.mid"), "the demo recorded no notes"
    # The core install has no matplotlib: the demo says so in one line and plays anyway.
    assert ("no out/demo.png: matplotlib is not installed; pip install 'livegen[plot]' "
            "(scripts/setup does)") in done.stdout.splitlines()
    assert not (elsewhere / "out" / "demo.png").exists()


def test_installed_wheel_runs_its_own_code_and_data(venv: Path, elsewhere: Path) -> None:
    done = run([str(venv / "python"), "-c", "import livegen.config as c; "
                "print(c.__file__); print(c.SHIPPED_DATA)"], cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    module, data = map(Path, done.stdout.split())
    assert module.is_relative_to(venv.parent) and data == module.parent / "data"


def test_installed_wheel_checks_its_packaged_config(venv: Path, elsewhere: Path) -> None:
    done = run([str(venv / "livegen"), "check-config"], cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    # /etc/livegen/config.toml comes first where a service is installed on this machine.
    packaged = venv.parent / SITE / "livegen" / "data" / "config.toml"
    expected = config.SYSTEM_CONFIG if config.SYSTEM_CONFIG.is_file() else packaged
    assert done.stdout.splitlines()[0] == f"# {expected}: valid"
    assert f'model = "{packaged.parent / "models" / "charrnn.json"}"' in done.stdout \
        or expected == config.SYSTEM_CONFIG


def test_installed_wheel_refuses_a_service_that_could_not_see_it(venv: Path,
                                                                 elsewhere: Path) -> None:
    hidden = service.hidden_folders((ROOT / "systemd" / "livegen.service").read_text())
    executable = venv / "livegen"
    # This venv lives in the temporary folder (PrivateTmp= hides /tmp): the unit's sandbox
    # would hide it, and where it does not, the install must go through.
    hiding = next(((f, s) for f, s in hidden.items() if executable.is_relative_to(f)), None)
    done = run([str(executable), "install-service", "--root", "root"], cwd=elsewhere)
    if hiding is None:
        assert done.returncode == 0, done.stderr
        return
    folder, setting = hiding
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"livegen: install-service: the service could not start: the livegen executable "
        f"{executable} lies under {folder}, which the unit's {setting} hides from it; "
        f"{service.SERVICE_INSTALL}"]
    assert not (elsewhere / "root").exists()


def test_installed_wheel_installs_the_service_into_a_root(venv: Path,
                                                          elsewhere: Path) -> None:
    done = run([str(venv / "livegen"), "install-service", "--root", "staged",
                "--executable", "/opt/livegen/bin/livegen"], cwd=elsewhere)
    assert done.returncode == 0, done.stdout + done.stderr
    root = elsewhere / "staged"
    unit = (root / "etc/systemd/system/livegen.service").read_text()
    assert "ExecStart=/opt/livegen/bin/livegen run --config /etc/livegen/config.toml" in unit
    assert "@LIVEGEN@" not in unit
    assert (root / "etc/livegen/config.toml").read_bytes() == (ROOT / "config.toml").read_bytes()
    assert os.readlink(root / "etc/livegen/models") == "/usr/share/livegen/models"
    for name in ("charrnn.json", "charrnn.int8.onnx"):
        assert ((root / "usr/share/livegen/models" / name).read_bytes()
                == (ROOT / "models" / name).read_bytes())
    assert ((root / "etc/udev/rules.d/99-livegen.rules").read_bytes()
            == (ROOT / "devices/99-livegen.rules").read_bytes())
    assert (root / "usr/share/livegen/devices/myo-bled112.toml").is_file()
    assert "u livegen" in (root / "usr/lib/sysusers.d/livegen.conf").read_text()
    # The installed config, read where it was installed, finds the models beside it.
    share = root / "usr/share/livegen"
    cfg = config.loads((root / "etc/livegen/config.toml").read_text(), base_dir=share)
    config.check_runnable(cfg)


# ---------------------------------------------------------------- the README's first command

def readme_command(index: int) -> str:
    """The README's set-up command number `index` (0, 1), without its comment."""
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return block.splitlines()[index].split("#", 1)[0].strip()


def test_first_readme_command_on_a_fresh_tree_installs_no_torch(work: Path) -> None:
    command = readme_command(0)
    assert command == "scripts/setup && .venv/bin/livegen demo"
    clone = copy_tree(work / "clone")
    # Everything a performer's install may need: the core and the plot extra; and pip, and
    # setuptools to build livegen itself without build isolation (a venv's own bundled
    # setuptools may be older than pyproject.toml's build-system asks).
    wanted = [*requirements(["plot"]), Requirement("pip"), Requirement("setuptools")]
    deps = link_site(work / "deps-play", closure(wanted).values())
    python = make_venv(clone / ".venv", deps)
    done = run([f"{command} --seconds 2"], cwd=clone, shell=True,
               env=offline_env(PIP_NO_BUILD_ISOLATION="0"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (clone / "out" / "demo.png").stat().st_size > 10_000
    assert read_midi(clone / "out" / "demo.mid"), "the demo recorded no notes"
    for absent in ("torch", "music21", "onnx", "pytest", "ruff"):
        shown = run([str(python), "-m", "pip", "show", absent], cwd=clone)
        assert shown.returncode != 0, f"{absent} is installed: {shown.stdout}"
    assert run([str(python), "-m", "pip", "show", "livegen"], cwd=clone).returncode == 0
    assert (clone / ".venv" / ".livegen-installed").read_text().strip() == "plot"
