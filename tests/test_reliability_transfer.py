"""Reliability of the transfer side (``python -m transfer.run``, ``tools/run_transfer.sh``).

Kill -9 and resume of an ADE20K demo task equals the uninterrupted run bit for bit; bad inputs
(dataset layouts, student files) are named before anything is written and never cost an earlier
task's ``metrics.json``; ``metrics.json`` survives a kill in the middle of its write.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from transfer.metrics_io import make_record, read_metrics, write_metrics
from transfer.runner import Task, TaskRequest, TaskResult
from comad.io import CheckpointError
from transfer import tasks as task_table
from transfer.datasets import DatasetError, check_ade20k, check_coco
from transfer.run import main
from transfer.tasks import REPO_ROOT


@pytest.fixture(scope="module")
def student(tmp_path_factory, make_student) -> Path:
    return make_student(tmp_path_factory.mktemp("stu") / "student", "transfer")


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    pytest.importorskip("mmseg")
    from transfer.mm_demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "transfer")


# --------------------------------------------------------------------------- kill and resume

def _ckpt(path: Path) -> dict:
    from comad.mm_compat import load_local_checkpoint

    return load_local_checkpoint(str(path))


def _equal(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.heavy
@pytest.mark.mm
def test_kill9_then_rerun_equals_uninterrupted(tmp_path, student, demo_root):
    """ade20k demo, 4 iterations, a checkpoint every 2: SIGKILL once iter_2.pth exists, run the
    same command again; weights, AdamW state, random states and metrics equal the uninterrupted
    run's. ``last_checkpoint`` is also made to name a missing file (what a kill between mmengine's
    checkpoint write and its ``last_checkpoint`` update leaves): the rerun resumes anyway."""
    args = ["--demo", "--student", str(student), "--data-root", str(demo_root), "--max-iters", "4", "ade20k",
            "--", "--cfg-options", "default_hooks.checkpoint.interval=2"]
    ref = main(["--work-dir", str(tmp_path / "ref"), *args])["ade20k"]

    killed = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "transfer.run", "--work-dir", str(killed), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO_ROOT)
    deadline = time.time() + 300
    while not (killed / "ade20k/iter_2.pth").is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "ade20k/metrics.json").exists() and not (killed / "ade20k/iter_4.pth").exists()
    (killed / "ade20k/last_checkpoint").write_text(str(killed / "ade20k/iter_0.pth"))

    again = main(["--work-dir", str(killed), *args])["ade20k"]
    assert again["metrics"] == ref["metrics"]
    log_dir = Path(again["log_dir"])
    text = (log_dir / f"{log_dir.name}.log").read_text()
    assert "resume from" in text and "random states of iteration 2 restored" in text
    a, b = _ckpt(tmp_path / "ref/ade20k/iter_4.pth"), _ckpt(killed / "ade20k/iter_4.pth")
    for key in ("state_dict", "optimizer", "param_schedulers", "rng_state"):
        assert _equal(a[key], b[key]), key
    assert (killed / "ade20k/iter_2.pth").is_file()  # two kept: the previous one survives the next write


@pytest.mark.mm
def test_cfg_options_for_checkpoint_hook_survive_max_iters(student, tmp_path):
    """--max-iters rebuilds the checkpoint hook; explicit --cfg-options for it still win, and the
    hook writes atomically and keeps two checkpoints."""
    from transfer.mm_runner import prepare_config
    from transfer.tasks import MM_TASKS

    cfg, changes = prepare_config(MM_TASKS["ade20k"], TaskRequest(student, tmp_path, tmp_path / "w", 6, True,
                                                                  ("default_hooks.checkpoint.interval=2",)))
    ck = cfg.default_hooks.checkpoint
    assert (ck.interval, ck.max_keep_ckpts, ck.backend_args["backend"]) == (2, 2, "atomic_local")
    assert any(h["type"] == "ExactResumeHook" for h in cfg.custom_hooks)
    assert any("kept over the cut schedule" in c for c in changes)


# --------------------------------------------------------------------------- dataset layouts

def test_empty_ade_folders_name_the_folder_and_layout(tmp_path):
    base = tmp_path / "ade/ADEChallengeData2016"
    for kind in ("images", "annotations"):
        for split in ("training", "validation"):
            (base / kind / split).mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        check_ade20k(tmp_path)
    msg = str(e.value)
    assert f"no .jpg images in {base / 'images/training'}" in msg and "Expected layout:" in msg


def test_ade_unpacked_one_level_too_high_names_the_expected_path(tmp_path):
    for kind in ("images", "annotations"):  # ADEChallengeData2016/ directly in data_root, not in ade/
        (tmp_path / "ADEChallengeData2016" / kind / "training").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        check_ade20k(tmp_path)
    assert f"folder {tmp_path / 'ade/ADEChallengeData2016/images/training'} not found" in str(e.value)
    assert f"{tmp_path}/ade/ADEChallengeData2016/annotations/{{training,validation}}" in str(e.value)


def test_coco_wrong_layouts_name_the_expected_one(tmp_path):
    (tmp_path / "coco/images/train2017").mkdir(parents=True)  # the layout of some mirrors
    with pytest.raises(DatasetError) as e:
        check_coco(tmp_path)
    assert f"folder {tmp_path / 'coco/train2017'} not found" in str(e.value)
    assert f"{tmp_path}/coco/annotations/instances_train2017.json" in str(e.value)
    (tmp_path / "coco/train2017").mkdir()
    with pytest.raises(DatasetError, match=r"annotation file .*coco/annotations/instances_train2017.json not found"):
        check_coco(tmp_path)
    (tmp_path / "coco/annotations").mkdir()
    (tmp_path / "coco/annotations/instances_train2017.json").write_text(json.dumps({"annotations": []}))
    with pytest.raises(DatasetError, match=r"instances_train2017.json has no 'images' list"):
        check_coco(tmp_path)


# --------------------------------------------------------------------------- student files

def _earlier_metrics(work_dir: Path) -> bytes:
    write_metrics(make_record("ade20k", {"mIoU": 1.0, "aAcc": 2.0, "mAcc": 3.0}, student="earlier", config="c",
                              seed=0, demo=True), work_dir)
    return (work_dir / "metrics.json").read_bytes()


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


@pytest.mark.mm
def test_bad_student_files_are_named_and_earlier_metrics_kept(tmp_path, student, demo_root, make_student):
    """Truncated safetensors / pth, a crafted pickle, a student of another depth: each stops the
    task before training with an error naming the file (or option); the task's earlier
    metrics.json is byte-identical afterwards and no checkpoint was written."""
    work = tmp_path / "w"
    (work / "ade20k").mkdir(parents=True)
    before = _earlier_metrics(work / "ade20k")

    def run(path: Path) -> None:
        main(["--demo", "--student", str(path), "--data-root", str(demo_root), "--work-dir", str(work),
              "--max-iters", "2", "ade20k"])

    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("student.safetensors", "student.pth"):
        data = (student.parent / name).read_bytes()
        (bad / name).write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError) as e:
            run(bad / name)
        assert str(bad / name) in str(e.value), str(e.value)

    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "meta": _Exploit(marker)}, bad / "student.pth")
    with pytest.raises(CheckpointError) as e:
        run(bad / "student.pth")
    assert str(bad / "student.pth") in str(e.value) and "refused" in str(e.value) and not marker.exists()

    shallow = make_student(tmp_path / "d4" / "student", "transfer", depth=4)  # blocks 3,5,7,11 of 12 have no exact depth-4 counterpart
    with pytest.raises(ValueError, match=r"depth-4 student; pass -- --cfg-options model.backbone.out_indices"):
        run(shallow)
    assert (work / "ade20k/metrics.json").read_bytes() == before
    assert not list((work / "ade20k").glob("iter_*.pth"))


@pytest.mark.mm
def test_student_of_another_width_than_the_config_says_names_file(tmp_path, student, demo_root):
    """--cfg-options forcing the backbone to another width than the student file: the strict
    backbone load names the file and both widths."""
    with pytest.raises(CheckpointError) as e:
        main(["--demo", "--student", str(student), "--data-root", str(demo_root), "--work-dir", str(tmp_path),
              "--max-iters", "2", "ade20k", "--", "--cfg-options", "model.backbone.embed_dim=96",
              "model.backbone.num_heads=3"])
    assert str(student) in str(e.value) and "embed_dim: 48 in the file, 96 here" in str(e.value)


# --------------------------------------------------------------------------- outputs are never lost

def _fake_tasks(monkeypatch, **tasks) -> None:
    for name, run in tasks.items():
        monkeypatch.setitem(task_table.TASKS, name, Task(name, run))


def test_a_failing_task_keeps_the_metrics_written_before(tmp_path, student, monkeypatch):
    def good(request):
        return TaskResult(metrics={"top1": 50.0}, config="c", seed=0)

    def bad(request):
        raise RuntimeError("task exploded")

    _fake_tasks(monkeypatch, **{"t-good": good, "t-bad": bad})
    args = ["--student", str(student), "--work-dir", str(tmp_path), "--data-root", str(tmp_path)]
    with pytest.raises(RuntimeError, match="task exploded"):
        main([*args, "t-good", "t-bad"])
    first = (tmp_path / "t-good/metrics.json").read_bytes()
    assert read_metrics(tmp_path / "t-good")["metrics"] == {"top1": 50.0}
    assert not (tmp_path / "t-bad/metrics.json").exists()

    _fake_tasks(monkeypatch, **{"t-good": bad})  # the same task failing on a rerun keeps its old record
    with pytest.raises(RuntimeError, match="task exploded"):
        main([*args, "t-good"])
    assert (tmp_path / "t-good/metrics.json").read_bytes() == first


def test_kill_during_the_metrics_write_keeps_the_old_file(tmp_path, student):
    """SIGKILL inside the write of metrics.json (the new record already in the temporary file,
    before the rename): the old metrics.json is byte-identical and valid."""
    (tmp_path / "t").mkdir()
    write_metrics(make_record("t", {"top1": 1.0}, student="old", config="c", seed=0, demo=False), tmp_path / "t")
    old = (tmp_path / "t/metrics.json").read_bytes()
    script = textwrap.dedent(f"""
        import os, signal
        from transfer.runner import Task, TaskResult
        from transfer import tasks
        tasks.TASKS["t"] = Task("t", lambda request: TaskResult(metrics={{"top1": 99.0}}, config="c", seed=0))
        os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)  # dies between write and rename
        from transfer.run import main
        main(["--student", {str(student)!r}, "--work-dir", {str(tmp_path)!r}, "--data-root", {str(tmp_path)!r}, "t"])
    """)
    r = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert (tmp_path / "t/metrics.json").read_bytes() == old
    assert read_metrics(tmp_path / "t")["metrics"] == {"top1": 1.0}
    tmp = list((tmp_path / "t").glob(".metrics.json.*.tmp"))
    assert len(tmp) == 1 and json.loads(tmp[0].read_text())["metrics"] == {"top1": 99.0}  # killed mid-write


def test_exact_resume_hook_keeps_every_ranks_random_states(monkeypatch, tmp_path):
    """Under torch.distributed (faked: 2 ranks) the states of both ranks are gathered in the
    iteration the CheckpointHook saves, and each rank restores its own after the replay."""
    import logging
    from types import SimpleNamespace

    from mmengine.hooks import CheckpointHook

    from transfer import resume as rs

    torch.manual_seed(11)
    own = rs.rng_state()
    torch.manual_seed(22)
    other = rs.rng_state()
    monkeypatch.setattr(rs, "get_world_size", lambda: 2)
    monkeypatch.setattr(rs, "all_gather_object", lambda obj: [obj, other])  # this process is rank 0
    ck = CheckpointHook(interval=4, by_epoch=False)
    runner = SimpleNamespace(hooks=[ck], iter=2, max_iters=100, logger=logging.getLogger("test"))
    hook = rs.ExactResumeHook()
    torch.manual_seed(11)
    hook.after_train_iter(runner, 2)  # iteration 3 of 100: no checkpoint, nothing gathered
    assert hook._gathered is None
    runner.iter = 3  # iteration 4: the CheckpointHook saves
    hook.after_train_iter(runner, 3)
    checkpoint = {"meta": {"iter": 4}}
    hook.before_save_checkpoint(runner, checkpoint)
    states = checkpoint[rs.RNG_KEY]["per_rank"]
    assert len(states) == 2 and torch.equal(states[0]["torch"], own["torch"]) and states[1] is other
    # resume on rank 1: after replaying the 4 trained batches, rank 1's own stream goes on
    for rank, seed in ((1, 22), (0, 11)):
        monkeypatch.setattr(rs, "get_rank", lambda r=rank: r)
        runner._train_loop = SimpleNamespace(dataloader_iterator=iter(range(10)))
        torch.manual_seed(99)
        hook.after_load_checkpoint(runner, checkpoint)
        assert [next(runner._train_loop.dataloader_iterator) for _ in range(5)] == [0, 1, 2, 3, 4]
        torch.manual_seed(seed)
        expected = torch.rand(3)
        torch.manual_seed(99)  # whatever the state was, the restore replaces it
        hook.after_load_checkpoint(runner, checkpoint)
        for _ in range(5):
            next(runner._train_loop.dataloader_iterator)
        assert torch.equal(torch.rand(3), expected)
    # a run with another process count takes rank % saved and says the resume is not exact
    monkeypatch.setattr(rs, "get_world_size", lambda: 3)
    monkeypatch.setattr(rs, "get_rank", lambda: 2)
    runner._train_loop = SimpleNamespace(dataloader_iterator=iter(range(10)))
    warnings = []
    runner.logger = SimpleNamespace(warning=warnings.append, info=lambda msg: None)
    hook.after_load_checkpoint(runner, checkpoint)
    assert "holds the random states of 2 process(es), this run has 3: rank 2 takes those of rank 0" in warnings[0]
