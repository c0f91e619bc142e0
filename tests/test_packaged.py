"""comad.teachers.packaged and the pins experiments/evidence_setup.sh installs (tools/pins.py)."""
from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from comad.teachers import packaged
from comad.teachers.packaged import PackagedWeights, packaged_weights

ROOT = Path(__file__).resolve().parents[1]


def pins(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "pins.py"), *args], capture_output=True, text=True)


def test_missing_package_or_name_is_a_clear_error(monkeypatch, tmp_path):
    with pytest.raises(KeyError, match=r"'resnet50': not known; choose one of \['dinov2_vits14_onnx', 'efficientnet_lite0', 'mobilenet_v2'\]"):
        packaged_weights("resnet50")
    monkeypatch.setitem(packaged.PACKAGED_WEIGHTS, "ghost",
                        PackagedWeights("comad_no_such_package", "ghost-weights==1.0", "w.pth", "a test entry"))
    with pytest.raises(FileNotFoundError, match=r"w\.pth package 'comad_no_such_package' is not installed; install "
                                                r"ghost-weights==1.0 \(experiments/evidence_setup\.sh"):
        packaged_weights("ghost")
    (tmp_path / "fakepkg").mkdir()
    (tmp_path / "fakepkg" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (tmp_path / "fakepkg" / "w.pth").write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(packaged.PACKAGED_WEIGHTS, "fake", PackagedWeights("fakepkg", "fake==1", "w.pth", "test"))
    assert packaged_weights("fake") == tmp_path / "fakepkg" / "w.pth"  # found without importing the package


def test_every_packaged_file_has_its_pin_in_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extra = pins("--extra", "evidence")
    no_deps = pins("--no-deps")
    assert extra.returncode == 0 and no_deps.returncode == 0
    assert extra.stdout.split() == pyproject["project"]["optional-dependencies"]["evidence"]
    assert no_deps.stdout.split() == pyproject["tool"]["comad"]["no-deps"]
    pinned = extra.stdout.split() + no_deps.stdout.split()
    for entry in packaged.PACKAGED_WEIGHTS.values():
        assert entry.distribution.split()[0] in pinned, entry
    bad = pins("--extra", "nope")
    extras = sorted(pyproject["project"]["optional-dependencies"])
    assert bad.returncode != 0 and f"--extra takes one of {extras}" in bad.stderr
