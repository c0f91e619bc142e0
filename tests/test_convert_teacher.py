"""tools/convert_teacher.py: each official layout -> a safetensors file timm loads strictly."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from comad.teachers.synthetic import write_checkpoint

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "convert_teacher.py"
DIM, DEPTH, IMG = 64, 2, 64
LAYOUTS = {"mae": "mae", "mocov3": "mocov3", "mocov3_deit": "mae", "ibot": "ibot",
           "ibot_teacher": "ibot_teacher", "timm": "timm"}


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("convert_teacher", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def tiny_timm_vit_base(**kw) -> torch.nn.Module:
    """``vit_base_patch16_224`` with the tiny test shapes (create_model kwargs override the widths)."""
    return timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0, img_size=IMG, embed_dim=DIM,
                             depth=DEPTH, num_heads=1, **kw)


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_each_layout_converts_and_timm_loads_strictly(tool, tmp_path, fmt, capsys):
    src = tmp_path / f"{fmt}.pth"
    expected = write_checkpoint(fmt, src, embed_dim=DIM, depth=DEPTH, img_size=IMG, seed=3)
    dst = tmp_path / f"{fmt}.safetensors"
    assert tool.main([str(src), str(dst)]) == 0
    assert f"({LAYOUTS[fmt]}, encoder" in capsys.readouterr().out
    sd = load_file(str(dst))
    assert sd.keys() == expected.keys() and all(torch.equal(sd[k], v) for k, v in expected.items())
    model = tiny_timm_vit_base()
    model.load_state_dict(sd, strict=True)
    with safe_open(str(dst), "pt") as f:
        meta = f.metadata()
    assert meta["format"] == LAYOUTS[fmt] and meta["source"] == str(src)
    assert json.loads(meta["missing_keys"]) == [] and json.loads(meta["unexpected_keys"]) == []
    assert json.loads(meta["arch"])["embed_dim"] == DIM


def test_encoder_and_format_options(tool, tmp_path):
    src = tmp_path / "moco.pth.tar"
    momentum = write_checkpoint("mocov3", src, embed_dim=DIM, depth=DEPTH, img_size=IMG, return_encoder="momentum")
    dst = tmp_path / "m.safetensors"
    assert tool.main([str(src), str(dst), "--format", "mocov3", "--encoder", "momentum"]) == 0
    sd = load_file(str(dst))
    assert all(torch.equal(sd[k], v) for k, v in momentum.items())
    deit = tmp_path / "deit.pth"
    write_checkpoint("mocov3_deit", deit, embed_dim=DIM, depth=DEPTH, img_size=IMG)
    assert tool.main([str(deit), str(tmp_path / "d.safetensors"), "--format", "mocov3_deit"]) == 0
    with safe_open(str(tmp_path / "d.safetensors"), "pt") as f:
        assert f.metadata()["format"] == "mocov3_deit"


def test_errors_name_the_file_and_keep_the_output(tool, tmp_path, capsys):
    bad = tmp_path / "resnet50.pth"
    torch.save({"state_dict": {"module.layer1.0.conv1.weight": torch.zeros(1)}}, bad)
    dst = tmp_path / "out.safetensors"
    dst.write_bytes(b"previous")
    assert tool.main([str(bad), str(dst)]) == 2
    err = capsys.readouterr().err
    assert re.search(rf"convert_teacher: error: checkpoint {re.escape(str(bad))}: unknown layout.*module\.layer1\.0\.conv1\.weight", err)
    assert dst.read_bytes() == b"previous"  # nothing half-written
    vits = tmp_path / "vits.pth"
    write_checkpoint("timm", vits, embed_dim=DIM, depth=DEPTH, img_size=IMG)
    assert tool.main([str(vits), str(dst), "--arch", "vit_base"]) == 2
    assert "expected embed_dim=768, depth=12, patch_size=16 (vit_base) but the file holds embed_dim=64" in capsys.readouterr().err
    assert tool.main([str(vits), str(tmp_path / "out.pth")]) == 2
    assert "out.pth: the file name must end in .safetensors" in capsys.readouterr().err
    assert dst.read_bytes() == b"previous"


def test_command_line_help_and_run(tmp_path):
    help_ = subprocess.run([sys.executable, str(TOOL), "--help"], capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0
    assert "--format {auto,mocov3,ibot,comad_student,comad_student_pth,ibot_teacher,mae,mocov3_deit,dinov2,timm}" in help_.stdout and "--encoder" in help_.stdout
    src = tmp_path / "checkpoint.pth"
    expected = write_checkpoint("ibot", src, embed_dim=DIM, depth=DEPTH, img_size=IMG, return_encoder="student")
    dst = tmp_path / "ibot_student.safetensors"
    run = subprocess.run([sys.executable, str(TOOL), str(src), str(dst), "--encoder", "student"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "(ibot, encoder student)" in run.stdout and "missing keys [], unexpected keys []" in run.stdout
    sd = load_file(str(dst))
    assert all(torch.equal(sd[k], v) for k, v in expected.items())
    bad = subprocess.run([sys.executable, str(TOOL), str(tmp_path / "missing.pth"), str(dst)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "missing.pth: no such file" in bad.stderr


@pytest.mark.heavy
def test_full_size_vit_b16_loads_in_timm_vit_base(tool, tmp_path):
    src = tmp_path / "mae_pretrain_vit_base.pth"
    expected = write_checkpoint("mae", src)  # the real ViT-B/16 shapes (86 M parameters)
    dst = tmp_path / "mae_vitb16.safetensors"
    assert tool.main([str(src), str(dst), "--arch", "vit_base"]) == 0
    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    model.load_state_dict(load_file(str(dst)), strict=True)
    assert torch.equal(model.state_dict()["blocks.11.mlp.fc2.weight"], expected["blocks.11.mlp.fc2.weight"])
