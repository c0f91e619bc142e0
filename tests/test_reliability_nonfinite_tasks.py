"""Non-finite weights and losses on the task side, as the distillation handles them (issue 23): a
student with a NaN weight is refused at load (file and tensor named), a task whose loss turns
non-finite stops before the update naming the iteration, and nothing is published from it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from comad.checkpoint import read_encoder
from comad.io import CheckpointError


def _nan_student(src: Path, dst: Path, key: str = "blocks.1.mlp.fc1.weight") -> Path:
    from safetensors import safe_open

    with safe_open(str(src), "pt") as f:
        meta = f.metadata()
    sd = load_file(str(src))
    sd[key] = sd[key].clone()
    sd[key][0, 0] = float("nan")
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(sd, str(dst), metadata=meta)
    return dst


def test_a_student_with_a_nan_weight_is_refused_naming_file_and_tensor(tmp_path, make_student):
    good = make_student(tmp_path / "good", "tiny")
    bad = _nan_student(good, tmp_path / "diverged" / "student.safetensors")
    with pytest.raises(CheckpointError, match=r"diverged/student.safetensors: non-finite weights .* in "
                                              r"blocks.1.mlp.fc1.weight \(1 values\)"):
        read_encoder(bad)
    read_encoder(good)  # the healthy file still loads


def test_the_optimizer_wrapper_stops_before_a_nonfinite_update_naming_the_iteration():
    from mmengine.logging import MessageHub

    import comad.engine  # noqa: F401
    from comad.engine.optim import ComadOptimWrapper

    p = torch.nn.Parameter(torch.ones(2))
    ow = ComadOptimWrapper(torch.optim.SGD([p], lr=0.1))
    MessageHub.get_current_instance().update_info("iter", 6)
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan on this rank\) at iteration 7: training "
                                                  r"stopped before the update"):
        ow.update_params((p * float("nan")).sum())
    assert torch.equal(p.detach(), torch.ones(2)) and p.grad is None  # no backward, no step
    ow.update_params((p * 2).sum())
    assert torch.allclose(p.detach(), torch.full((2,), 0.8))


def test_nothing_is_published_from_a_nonfinite_model(tmp_path):
    from comad.release import Release, publish

    state = {"w": torch.tensor([1.0, float("inf")])}
    release = Release(name="model", state_dict=state, meta={}, config_text="x = 1\n", config_suffix=".py")
    with pytest.raises(CheckpointError, match=r"release model .*non-finite weights .* in w \(1 values\)"):
        publish(release, tmp_path / "release")
    assert not (tmp_path / "release").exists() or not list((tmp_path / "release").iterdir())


def test_an_imagenet_task_whose_loss_turns_nan_stops_before_the_update(tmp_path, make_student):
    """The fine-tune demo with NaN label smoothing (NaN targets): the Runner's guarded optimizer wrapper
    stops at iteration 1 naming it; no metrics.json, no release, no checkpoint of the diverged model."""
    from transfer.imagenet.tasks import IMAGENET_TASKS
    from transfer.runner import TaskRequest, run_task

    student = make_student(tmp_path / "s" / "student")
    opts = (f"demo_data.data_dir={tmp_path / 'demo'}", "demo_data.per_class=20", "model.mixup.label_smoothing=nan")
    work = tmp_path / "w"
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at iteration 1: training stopped before the update"):
        run_task(IMAGENET_TASKS["imagenet-ft"], TaskRequest(student, tmp_path, work, 4, True, opts))
    assert not (work / "metrics.json").exists() and not (work / "release").exists()
    assert not list(work.glob("iter_*.pth"))


@pytest.mark.heavy
@pytest.mark.mm
def test_a_dense_task_whose_loss_turns_nan_stops_and_publishes_nothing(tmp_path, make_student):
    """The ADE20K demo with a NaN loss weight: the run stops at iteration 1 naming it; no metrics.json,
    no release, no checkpoint of the diverged model. A NaN student never gets that far."""
    from transfer.mm_demo_data import make_demo_data
    from transfer.run import main

    root = make_demo_data(tmp_path / "demo")
    student = make_student(tmp_path / "s" / "student", "transfer")
    work = tmp_path / "w"
    args = ["--demo", "--data-root", str(root), "--work-dir", str(work), "--max-iters", "1", "ade20k"]
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at iteration 1: training stopped before the update"):
        main(["--student", str(student), *args, "--", "--cfg-options", "model.decode_head.loss_decode.loss_weight=nan"])
    assert not (work / "ade20k" / "metrics.json").exists() and not (work / "ade20k" / "release").exists()
    assert not list((work / "ade20k").glob("iter_*.pth"))
    with pytest.raises(CheckpointError, match="non-finite weights"):
        main(["--student", str(_nan_student(student, tmp_path / "nan" / "student.safetensors")), *args])
