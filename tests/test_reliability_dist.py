"""Distributed equivalence: 2 CPU processes (torchrun, gloo) x batch B train the same student as
1 process x batch 2B, within floating-point tolerance, including a step skipped for a NaN that
only one rank saw — eagerly, and with ``model.compile`` (the loss computation as one graph
inside DDP, as the configs' ``compile='auto'`` runs on GPUs).

The comparison is on the exported student (a global quantity): mmengine logs rank 0's loss
only, which on 2 processes is the loss of half the global batch. It is valid because the
sampler gives rank r the draws r, r + W, ... of one seeded stream, augmentation is seeded per
draw, masks of a step are drawn for the global batch and rank r takes rows r::W, the losses
are means over equal-sized per-image terms (so DDP's gradient average equals the full-batch
gradient) and the lr follows the effective batch, which is the same.
"""
from __future__ import annotations


import pytest
import torch

from comad.io import safe_torch_load
from comad.mm_compat import mmengine_safe_globals
from test_reliability_support import distill, full_log, prepare_assets, student_tensors, tail, tiny_config

pytestmark = pytest.mark.heavy


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path_factory: pytest.TempPathFactory) -> None:
    assets = prepare_assets(tmp_path_factory.getbasetemp() / "reliability_assets")
    root = tmp_path_factory.mktemp("dist")
    hooks = ("custom_hooks = [dict(type='ComadRunHook', export=True, latest_pointer=None),"
             " dict(type='PoisonAtIter', iterations=[5], ranks={ranks})]\n"
             "model = dict(nan_policy='skip', max_skipped=1, student=dict(drop_path_rate=0.0){compile})\n"
             "schedule = dict(max_iters=8)\n")
    one = tiny_config(root / "tiny_dist1.py", assets, hooks.format(ranks=None, compile="")
                      + "train_dataloader = dict(batch_size=4)\n")
    two = tiny_config(root / "tiny_dist2.py", assets, hooks.format(ranks=[1], compile="")
                      + "train_dataloader = dict(batch_size=2)\n")
    # aot_eager: dynamo + AOTAutograd (one forward/backward graph) without inductor's C++ build
    two_compiled = tiny_config(root / "tiny_dist3.py", assets,
                               hooks.format(ranks=[1], compile=", compile=True, compile_options=dict(backend='aot_eager', fullgraph=True)")
                               + "train_dataloader = dict(batch_size=2)\n")
    r1 = distill(one, root / "wd1")
    assert r1.returncode == 0, tail(r1)
    a = student_tensors(root / "wd1")
    init = safe_torch_load(root / "wd1" / "iter_4.pth", extra_globals=mmengine_safe_globals())["state_dict"]
    for cfg, wd in ((two, "wd2"), (two_compiled, "wd3")):
        r2 = distill(cfg, root / wd, gpus=2)
        assert r2.returncode == 0, tail(r2)
        log2 = full_log(r2, root / wd)
        assert "2 process(es) x 2" in log2 and "effective batch 4" in log2
        assert ("model.compile: compiling the loss computation" in log2) is (wd == "wd3")
        b = student_tensors(root / wd)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6), f"{wd} {k}: max |diff| {(a[k] - b[k]).abs().max():.3g}"
        # not vacuous: the last 4 steps alone moved the weights 100x more than the runs differ
        moved = max((a[k] - init[f"student.{k}"]).abs().max().item() for k in a if k != "pos_embed")
        differ = max((a[k] - b[k]).abs().max().item() for k in a)
        assert moved > 100 * differ, (wd, moved, differ)
    # the NaN only rank 1 saw made rank 0 skip too (wd2's and wd3's checkpoints are rank 0's)
    for wd in ("wd1", "wd2", "wd3"):
        ck = safe_torch_load(root / wd / "iter_8.pth", extra_globals=mmengine_safe_globals())
        assert int(ck["state_dict"]["skipped_steps"]) == 1 and int(ck["state_dict"]["step"]) == 8
