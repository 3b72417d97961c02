"""A clean install: the wheel, into a fresh virtual environment with no extras, converts against the real server.

That proves what the client promises: it installs and runs without torch and
without the training code (the wheel's ``gpgmnet`` is there, but cannot even be
imported without the ``net`` extra).
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fresh_environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new venv with only the project's wheel and its core dependencies."""
    work = tmp_path_factory.mktemp("install")
    wheels = work / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels),
                    str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("sritm-*.whl")
    environment = work / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    installed = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                                str(wheel)], capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stderr
    return environment


@pytest.mark.server
def test_the_wheel_alone_converts_an_image_and_has_no_torch(fresh_environment, triton_server, tmp_path):
    python, sritm = fresh_environment / "bin" / "python", fresh_environment / "bin" / "sritm"
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util, sys; import sritm_client, sritm_core.colour;"
         "print(importlib.util.find_spec('torch') is None)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,  # not the checkout: only what was installed
    )
    assert probe.returncode == 0 and probe.stdout.strip() == "True", probe.stderr
    training = subprocess.run([str(python), "-c", "import gpgmnet.train"], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
    assert training.returncode != 0 and "torch" in training.stderr

    picture = tmp_path / "in.png"
    yy, xx = np.mgrid[0:32, 0:48]
    cv2.imwrite(str(picture), np.stack([xx * 5, yy * 7, np.full_like(xx, 90)], axis=-1).astype(np.uint8))
    output = tmp_path / "out.png"
    converted = subprocess.run(
        [str(sritm), "convert", str(picture), str(output), "--url", triton_server.grpc_url, "--scale", "2"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert converted.returncode == 0, converted.stderr
    image = cv2.imread(str(output), cv2.IMREAD_UNCHANGED)
    assert image.shape == (64, 96, 3) and image.dtype == np.uint16
