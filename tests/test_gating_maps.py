"""Gating maps (comad.gating_maps, tools/gating_maps.py) on a short run of the embedded demo.

The demo's teachers are related by construction (ibot = a linear image of mae, mocov3
independent), so what the maps are for can be asserted: after the alignment's fit the gate gives
the odd teacher out a smaller weight than either of the two that agree, over whole photos as in
the training crops.
"""
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "benchmark_configs" / "distill" / "comad_vit-tiny-demo_1xb16-120it_photos-64.py"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, run_demo_distill):
    """8 iterations of 4 images: the alignment fits on the first 6 (fit_images=24); iter_4 is
    saved inside the fit, iter_8 after it."""
    wd = tmp_path_factory.mktemp("gating") / "wd"
    r = run_demo_distill(wd, max_iters=8, interval=4)
    assert r.returncode == 0, r.stderr[-3000:]
    return wd


@pytest.mark.heavy
def test_maps_are_a_distribution_per_patch_and_down_weight_the_odd_teacher(demo_run):
    from comad.data.demo import load_demo_photo
    from comad.gating_maps import gating_maps, load_distiller, prepare_images

    model = load_distiller(CONFIG, demo_run / "iter_8.pth")
    images = prepare_images([load_demo_photo(n) for n in ("chelsea", "coffee", "astronaut")], 64)
    assert images.shape == (3, 64, 64, 3) and images.dtype == np.uint8
    maps = gating_maps(model, images, seed=0)
    assert maps.teachers == ["mae", "ibot", "mocov3"]
    assert maps.weights.shape == maps.agreement.shape == maps.affinity.shape == (3, 3, 4, 4)  # K, B, 64/16, 64/16
    np.testing.assert_allclose(maps.weights.sum(0), 1.0, atol=1e-5)  # every teacher saw every patch
    assert (maps.weights >= 0).all() and np.abs(maps.agreement).max() <= 1 + 1e-5
    mean = maps.weights.mean(axis=(1, 2, 3))
    assert mean[2] < mean[0] and mean[2] < mean[1], mean  # mocov3, the independent one, weighs least
    assert (maps.agreement[2].mean() < maps.agreement[0].mean()) and (maps.agreement[2].mean() < maps.agreement[1].mean())
    again = gating_maps(model, images, seed=0)
    np.testing.assert_array_equal(again.weights, maps.weights)  # the student's mask is seeded


@pytest.mark.heavy
def test_tool_draws_a_png_with_its_summary_and_refuses_a_checkpoint_inside_the_fit(demo_run, tmp_path):
    py = str(ROOT / ".venv" / "bin" / "python")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = tmp_path / "maps.png"
    r = subprocess.run([py, "tools/gating_maps.py", str(CONFIG), str(demo_run), "--photos", "chelsea,coffee",
                        "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "iter_8.pth" in r.stdout  # the newest checkpoint
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["teachers"] == ["mae", "ibot", "mocov3"] and summary["images"] == ["chelsea", "coffee"]
    assert all(abs(sum(w) - 1) < 1e-3 for w in summary["mean_weight"])
    bad = subprocess.run([py, "tools/gating_maps.py", str(CONFIG), str(demo_run / "iter_4.pth"), "--photos", "chelsea",
                          "--out", str(tmp_path / "no.png")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode != 0 and "inside the alignment's fit phase" in bad.stderr
    assert not (tmp_path / "no.png").exists()
    none = subprocess.run([py, "tools/gating_maps.py", str(CONFIG), str(demo_run), "--out", str(tmp_path / "x.png")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert none.returncode == 2 and "give image files and/or --photos" in none.stderr
