"""The kiosk installs anywhere: the wheel carries the model, its card and the assets, and an installed copy
verifies a pair of photos from another folder. Training never overwrites the shipped model unless asked."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import wave
import zipfile
from pathlib import Path

import pytest

from kiosk import cli
from kiosk.paths import ASSETS_DIR, DEFAULT_WEIGHTS, MODEL_CARD, PROJECT_ROOT, WEIGHTS_DIR

SHIPPED_WEIGHTS = ("face_siamese.pt", "MODEL_CARD.md")
ASSETS = ("icon.svg", "icon.png", "style.qss", "admin.qss", "accept.wav", "reject.wav")


def test_checkout_finds_the_shipped_files():
    assert WEIGHTS_DIR == PROJECT_ROOT / "weights" and ASSETS_DIR == PROJECT_ROOT / "assets"
    assert DEFAULT_WEIGHTS.is_file() and MODEL_CARD.is_file()
    assert sorted(p.name for p in ASSETS_DIR.iterdir()) == sorted(ASSETS)


def test_assets_are_small_and_well_formed():
    for name in ("accept.wav", "reject.wav"):
        with wave.open(str(ASSETS_DIR / name)) as sound:
            seconds = sound.getnframes() / sound.getframerate()
            assert sound.getnchannels() == 1 and sound.getsampwidth() == 2
            assert 0.2 <= seconds <= 1.0, (name, seconds)
        assert (ASSETS_DIR / name).stat().st_size < 32_000
    assert (ASSETS_DIR / "icon.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in (ASSETS_DIR / "icon.svg").read_bytes()
    assert "QPushButton" in (ASSETS_DIR / "style.qss").read_text()


def test_training_refuses_to_overwrite_the_shipped_model(capsys):
    before = DEFAULT_WEIGHTS.read_bytes()
    assert cli.main(["train", "--out", str(DEFAULT_WEIGHTS)]) == 2
    assert "--replace-shipped" in capsys.readouterr().err
    assert DEFAULT_WEIGHTS.read_bytes() == before


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (no build/ or egg-info left in the checkout), with the
    setuptools already in this environment (no network)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("kiosk", "research", "weights", "assets"):
        if (PROJECT_ROOT / name).is_dir():
            shutil.copytree(PROJECT_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(PROJECT_ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(source),
                    "-w", str(out)], check=True, capture_output=True, cwd=out, timeout=300)
    (built,) = out.glob("siamese_kiosk-*.whl")
    return built


@pytest.mark.slow
def test_wheel_holds_the_model_its_card_the_assets_and_every_module(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for name in SHIPPED_WEIGHTS:
            assert archive.read(f"kiosk_data/weights/{name}") == (WEIGHTS_DIR / name).read_bytes()
        for name in ASSETS:
            assert archive.read(f"kiosk_data/assets/{name}") == (ASSETS_DIR / name).read_bytes()
    modules = {p.relative_to(PROJECT_ROOT).as_posix() for p in (PROJECT_ROOT / "kiosk").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules <= names, f"missing from the wheel (add the package to pyproject.toml): {modules - names}"
    assert not [n for n in names if n.startswith(("research/", "tests/"))], "research and tests stay in the checkout"
    # exactly the files pyproject.toml lists (and holds): no experiment records, no research weights
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    listed = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {n.rsplit("/", 1)[1] for n in names if n.startswith("kiosk_data/weights/")}
    assert shipped == {name for name in listed["kiosk_data.weights"] if (WEIGHTS_DIR / name).is_file()}
    assert not shipped & {"characters_siamese.pt", "results"}


@pytest.mark.slow
def test_installed_wheel_verifies_a_pair_from_another_folder(wheel, tmp_path, lfw_photos):
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # the installed copy first; torch, OpenCV etc. from this environment's site-packages
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import kiosk.paths as p; print(p.__file__); print(p.DEFAULT_WEIGHTS)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True, timeout=120)
    module, weights = where.stdout.split()
    assert Path(module).is_relative_to(target) and Path(weights) == target / "kiosk_data/weights/face_siamese.pt"

    first, second = lfw_photos("Tony_Blair")[:2]
    result = subprocess.run([sys.executable, str(target / "bin" / "kiosk"), "verify", str(first), str(second)],
                            cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ACCEPT" in result.stdout
