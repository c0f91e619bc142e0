"""tools/distill.sh (the embedded demo) runs from the command line and exports a student timm loads."""
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]



@pytest.mark.heavy
def test_demo_distill_exports_a_timm_loadable_student(tmp_path, run_demo_distill):
    import timm
    from safetensors import safe_open

    wd = tmp_path / "wd"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = run_demo_distill(wd, max_iters=4, interval=2)
    assert r.returncode == 0, r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert "DEMO RUN" in log and "CoMAD distillation finished: 4 iterations" in log
    st = wd / "student" / "student.safetensors"
    assert (wd / "iter_2.pth").is_file() and (wd / "iter_4.pth").is_file()
    assert (tmp_path / "LATEST_STUDENT").read_text().strip() == str(st.resolve())
    m = timm.create_model("vit_tiny_patch16_224", num_classes=0, pretrained=True,
                          pretrained_cfg_overlay=dict(file=str(st)))
    with safe_open(str(st), "pt") as f:
        meta = f.metadata()
        assert torch.equal(m.blocks[11].mlp.fc2.weight, f.get_tensor("blocks.11.mlp.fc2.weight"))
        assert f.get_tensor("pos_embed").shape == (1, 197, 192)  # exported at 224², no extra tokens
    assert meta["format"] == "comad-student" and json.loads(meta["arch"])["img_size"] == 224
    info = json.loads((wd / "run_info.json").read_text())
    assert info["demo"] is True and info["effective_batch"] == 4 and info["max_iters"] == 4
    ckpt = torch.load(wd / "student" / "student.pth", weights_only=True)
    assert set(ckpt["state_dict"]) == set(m.state_dict())
    # tools/export_student.py re-exports the same student from the last checkpoint
    r2 = subprocess.run([str(ROOT / ".venv/bin/python"), "tools/export_student.py", str(wd), "--out", str(tmp_path / "re")],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0, r2.stderr[-2000:]
    from safetensors.torch import load_file

    a, b = load_file(str(st)), load_file(str(tmp_path / "re" / "student.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_student_tool_refuses_a_foreign_checkpoint(tmp_path):
    bad = tmp_path / "x.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, bad)
    r = subprocess.run([str(ROOT / ".venv/bin/python"), "tools/export_student.py", str(bad)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and f"{bad}: not a CoMAD distillation checkpoint" in r.stderr
