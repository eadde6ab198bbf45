"""The one build step pyproject.toml cannot declare: the wheel carries what livegen ships.

A checkout keeps the default config, the models, the device profiles (with the udev rules),
the systemd unit and the examples at its root, where the tests, the docs and the training
scripts expect them. A wheel has no root, so the build copies them into the package as
livegen/data/, where livegen.config.SHIPPED_DATA finds them. Everything else about the
distribution is in pyproject.toml; MANIFEST.in puts the same files into the sdist.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# What the wheel ships, as (path in the checkout, glob patterns inside it).
SHIPPED = {
    "config.toml": [],
    "README.md": [],
    "models": ["*.onnx", "*.onnx.data", "*.json", "*.npz"],
    "devices": ["*.toml", "*.rules"],
    "systemd": ["*.service"],
    "examples": ["*.toml"],
}


class BuildWithShippedData(build_py):
    """build_py, then the shipped files into build/lib/livegen/data."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install runs from the checkout itself
            return
        data = Path(self.build_lib) / "livegen" / "data"
        for name, patterns in SHIPPED.items():
            source = HERE / name
            if not patterns:
                data.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, data / name)
                continue
            for pattern in patterns:
                for path in sorted(source.glob(pattern)):
                    (data / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, data / name / path.name)


setup(cmdclass={"build_py": BuildWithShippedData})
