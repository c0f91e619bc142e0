"""Kill -9 and resume: the resumed distillation equals an uninterrupted one bit for bit.

Runs the real entry point (``tools/distill.sh``) on the CPU with a tiny student. The killed run
dies by SIGKILL (a test-only hook sends it to its own process, so the iteration is exact) at a
random iteration after the first checkpoint; ``tools/distill.sh --resume`` then continues from
the newest checkpoint. Data order (sampler skip), augmentation (per-draw seeds), the mask
stream (``step`` buffer), the optimizer and the LR schedule must all come back for the exported
student and every logged loss and lr to match exactly.
"""
from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import torch

from comad.io import CheckpointError, safe_torch_load
from comad.mm_compat import mmengine_safe_globals
from test_reliability_support import (distill, logged_scalars, prepare_assets, run_inprocess, student_tensors, tail,
                                      tiny_config)

MAX_ITERS = 12


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_assets(tmp_path_factory.getbasetemp() / "reliability_assets")


@pytest.fixture(scope="module")
def baseline(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, work dir) of an uninterrupted 12-iteration run, 0 DataLoader workers."""
    root = tmp_path_factory.mktemp("resume_baseline")
    cfg = tiny_config(root / "tiny_resume.py", assets)
    wd = root / "wd"
    r = distill(cfg, wd)
    assert r.returncode == 0, tail(r)
    return cfg, wd


@pytest.mark.heavy
@pytest.mark.parametrize("workers", [0, 2])
def test_kill9_then_resume_equals_uninterrupted(baseline: tuple[Path, Path], tmp_path: Path, workers: int) -> None:
    cfg, base_wd = baseline
    kill_at = random.randint(5, MAX_ITERS - 1)  # after the checkpoint of iteration 4
    last_ckpt = 4 * (kill_at // 4)
    why = f"(killed at iteration {kill_at}, {workers} workers)"
    wd = tmp_path / "wd"
    opts = ["--cfg-options", f"train_dataloader.num_workers={workers}"]
    r = distill(cfg, wd, *opts, env={"RELIABILITY_KILL_AT": str(kill_at)})
    assert r.returncode == -9, f"{why} the run was to die by SIGKILL: {tail(r)}"
    assert not (wd / "student").exists() and (wd / f"iter_{last_ckpt}.pth").is_file()
    assert not (wd / f"iter_{last_ckpt + 4}.pth").exists()
    assert not list(wd.glob(".*.tmp")), "a temporary checkpoint file was left behind"

    r = distill(cfg, wd, "--resume", *opts)
    assert r.returncode == 0, f"{why} {tail(r)}"
    log = r.stdout + r.stderr
    assert f"resuming from {wd / f'iter_{last_ckpt}.pth'}" in log
    assert f"sampler skipped the draws of {last_ckpt} iterations" in log

    want, got = student_tensors(base_wd), student_tensors(wd)
    assert want.keys() == got.keys()
    differ = [k for k in want if not torch.equal(want[k], got[k])]
    assert not differ, f"{why} exported student differs from the uninterrupted run in {differ}"
    # every iteration the resumed run logged: same loss terms, same lr, same gate statistics
    a, b = logged_scalars(base_wd), logged_scalars(wd)
    assert sorted(b) == list(range(1, MAX_ITERS + 1))
    for it in range(last_ckpt + 1, MAX_ITERS + 1):
        for key in ("loss", "loss_token", "loss_map", "lr", "gate_mae", "agreement"):
            assert a[it][key] == b[it][key], f"{why} iteration {it}: {key} {a[it][key]} != {b[it][key]}"
    # the optimizer state too (AdamW moments and step count), via the last checkpoints
    ca = safe_torch_load(base_wd / f"iter_{MAX_ITERS}.pth", extra_globals=mmengine_safe_globals())
    cb = safe_torch_load(wd / f"iter_{MAX_ITERS}.pth", extra_globals=mmengine_safe_globals())
    for pa, pb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert torch.equal(ca["state_dict"]["step"], cb["state_dict"]["step"])


def _work_dir_with(baseline: tuple[Path, Path], tmp_path: Path, edit) -> tuple[Path, Path]:
    """A work dir holding the baseline's iter_4 and a damaged iter_8 (``edit(path)``)."""
    cfg, base_wd = baseline
    wd = tmp_path / "wd"
    wd.mkdir()
    for n in (4, 8):
        shutil.copy(base_wd / f"iter_{n}.pth", wd / f"iter_{n}.pth")
    edit(wd / "iter_8.pth")
    return cfg, wd


def _resume_fails(cfg: Path, wd: Path, monkeypatch: pytest.MonkeyPatch, match: str) -> None:
    monkeypatch.syspath_prepend(str(cfg.parent))
    keep = (wd / "iter_4.pth").read_bytes()
    with pytest.raises((CheckpointError, ValueError)) as e:
        run_inprocess(cfg, wd, resume=True)
    msg = str(e.value)
    assert str(wd / "iter_8.pth") in msg and match in msg, msg
    assert (wd / "iter_4.pth").read_bytes() == keep  # nothing written before is lost
    assert not (wd / "student").exists()


def test_resume_from_truncated_checkpoint_names_it(baseline, tmp_path, monkeypatch) -> None:
    def truncate(p: Path) -> None:
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])

    cfg, wd = _work_dir_with(baseline, tmp_path, truncate)
    _resume_fails(cfg, wd, monkeypatch, "truncated")


def test_resume_from_checkpoint_of_another_model_names_it(baseline, tmp_path, monkeypatch) -> None:
    """A student of another width: mmengine alone would only warn and go on from random weights."""
    def widen(p: Path) -> None:
        ck = safe_torch_load(p, extra_globals=mmengine_safe_globals())
        ck["state_dict"]["student.pos_embed"] = torch.zeros(1, 17, 48)
        torch.save(ck, p)

    cfg, wd = _work_dir_with(baseline, tmp_path, widen)
    _resume_fails(cfg, wd, monkeypatch, "size mismatch for student.pos_embed")


def test_resume_from_checkpoint_with_missing_keys_names_them(baseline, tmp_path, monkeypatch) -> None:
    def drop(p: Path) -> None:
        ck = safe_torch_load(p, extra_globals=mmengine_safe_globals())
        for k in [k for k in ck["state_dict"] if k.startswith("student.blocks.1.")]:
            del ck["state_dict"][k]
        torch.save(ck, p)

    cfg, wd = _work_dir_with(baseline, tmp_path, drop)
    _resume_fails(cfg, wd, monkeypatch, "missing keys in source state_dict: student.blocks.1.")
