"""Bad inputs to a distillation run: each one stops with a message naming the file, key or option
and what was expected, and leaves what an earlier run wrote in the work dir untouched.

Every case goes through the real config path (a config inheriting the demo, built by
``comad.engine.launch.build_runner`` as ``tools/train.py`` does, then ``runner.train()``).
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from comad.data.dataset import CorruptImageError, DatasetLayoutError
from comad.io import CheckpointError
from comad.teachers.synthetic import write_checkpoint
from test_reliability_support import TEACHER_ARCH, logged_scalars, prepare_assets, run_inprocess, tiny_config


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_assets(tmp_path_factory.getbasetemp() / "reliability_assets")


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def previous_run(tmp_path: Path) -> Path:
    """A work dir as an earlier run left it (checkpoint, exported student, run info)."""
    wd = tmp_path / "wd"
    (wd / "student").mkdir(parents=True)
    torch.save({"meta": {"iter": 4}, "state_dict": {"w": torch.ones(3)}}, wd / "iter_4.pth")
    (wd / "student" / "student.safetensors").write_bytes(b"earlier student")
    (wd / "run_info.json").write_text('{"earlier": true}\n')
    return wd


def _teacher(tmp: Path, name: str, edit: Callable[[dict], None] | None = None, **arch) -> str:
    path = tmp / name
    write_checkpoint("mae", path, **dict(TEACHER_ARCH, **arch))
    if edit is not None:
        ck = torch.load(path, weights_only=True)
        edit(ck)
        torch.save(ck, path)
    return str(path)


def _with_teacher(assets: Path, path: str) -> str:
    others = [f"dict(name={n!r}, checkpoint={str(assets / 'teachers' / f)!r}, format={fmt!r}, arch=None)"
              for n, fmt, f in (("ibot", "ibot", "checkpoint.pth"), ("mocov3", "mocov3", "vit-b-300ep.pth.tar"))]
    return (f"model = dict(teachers=[dict(name='mae', checkpoint={path!r}, format='auto', arch=None), "
            f"{', '.join(others)}])\n")


def _dataset(root: Path, **kw) -> str:
    extra = "".join(f", {k}={v!r}" for k, v in kw.items())
    return f"train_dataloader = dict(dataset=dict(dataset=dict(root={str(root)!r}, demo=None{extra})))\n"


def _jpeg_files(assets: Path, dst: Path) -> list[Path]:
    shutil.copytree(assets / "photos", dst)
    return sorted((dst / "train").rglob("*.jpg"))


def _corrupt(path: Path) -> None:
    path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200))  # a JPEG header, then nothing decodable


def case_unknown_model_key(assets, tmp):
    return "model = dict(masking=dict(ratio=0.3))\n", ValueError, ["model.masking: unknown key(s) ['ratio']"]


def case_misspelt_model_option(assets, tmp):
    return "model = dict(studnet=dict())\n", TypeError, ["CoMADDistiller", "'studnet'"]


def case_unknown_schedule_key(assets, tmp):
    return "schedule = dict(epoch=3)\n", ValueError, ["schedule: unknown key(s) ['epoch']"]


def case_unknown_student_arch_key(assets, tmp):
    return ("model = dict(student=dict(arch=dict(embed_dims=32)))\n", ValueError,
            ["model.student.arch: unknown keys ['embed_dims']"])


def case_negative_mask_ratio(assets, tmp):
    return ("model = dict(masking=dict(student_keep=-0.1))\n", ValueError,
            ["masking: student_keep must be in (0, 1], got -0.1"])


def case_mask_ratio_above_one(assets, tmp):
    return ("model = dict(masking=dict(teacher_keep=[0.5, 1.2, 0.8]))\n", ValueError,
            ["masking: teacher_keep must be in (0, 1], got 1.2"])


def case_more_teachers_than_keep_ratios(assets, tmp):
    return ("model = dict(masking=dict(teacher_keep=[0.5, 0.65]))\n", ValueError,
            ["model.masking.teacher_keep has 2 ratio(s)", "3 teacher(s)", "one keep ratio per teacher"])


def case_student_patch_14(assets, tmp):
    return ("model = dict(student=dict(arch=dict(patch_size=14)))\n", ValueError,
            ["model.img_size 64 is not a multiple of the student's patch size 14"])


def case_teacher_patch_14(assets, tmp):
    # a teacher of another patch size is taken on the student's grid; a stated expectation is kept
    path = _teacher(tmp, "dinov2_vitb14.pth", patch_size=14, img_size=56)
    cfg = _with_teacher(assets, path).replace("format='auto', arch=None)", "format='auto', arch=None, patch_size=16)", 1)
    return cfg, CheckpointError, [path, "patch_size=14"]


def case_truncated_teacher(assets, tmp):
    path = _teacher(tmp, "mae_pretrain_vit_base.pth")
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 3])
    return _with_teacher(assets, path), CheckpointError, [path, "truncated"]


def case_missing_teacher_file(assets, tmp):
    path = str(tmp / "checkpoints" / "mae_pretrain_vit_base.pth")
    return _with_teacher(assets, path), FileNotFoundError, [path, "no such file"]


def case_teacher_of_another_model(assets, tmp):
    path = str(tmp / "resnet50.pth")
    torch.save({"state_dict": {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)}}, path)
    return _with_teacher(assets, path), CheckpointError, [path, "no ViT encoder found", "conv1.weight"]


def case_teacher_missing_keys(assets, tmp):
    path = _teacher(tmp, "mae_pretrain_vit_base.pth", edit=lambda ck: ck["model"].pop("blocks.0.attn.qkv.weight"))
    return _with_teacher(assets, path), CheckpointError, [path, "missing keys ['blocks.0.attn.qkv.weight']"]


def case_amp_on_without_cuda(assets, tmp):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    return "amp = 'on'\n", ValueError, ["amp='on' needs a CUDA device"]


def case_imagenet_root_missing(assets, tmp):
    root = tmp / "imagenet"
    return _dataset(root), FileNotFoundError, [f"dataset root {root} does not exist"]


def case_imagenet_empty(assets, tmp):
    (tmp / "imagenet" / "train").mkdir(parents=True)
    return (_dataset(tmp / "imagenet"), DatasetLayoutError,
            [f"no class folders in {tmp / 'imagenet' / 'train'}", "<class>/*.{JPEG", "nothing (empty folder)"])


def case_imagenet_without_class_folders(assets, tmp):
    files = _jpeg_files(assets, tmp / "imagenet")
    for f in files:
        f.rename(tmp / "imagenet" / "train" / f.name)
    for d in {f.parent for f in files}:
        d.rmdir()
    return (_dataset(tmp / "imagenet"), DatasetLayoutError,
            [f"image files directly in {tmp / 'imagenet' / 'train'}", "one folder per class"])


def case_imagenet_class_without_images(assets, tmp):
    _jpeg_files(assets, tmp / "imagenet")
    (tmp / "imagenet" / "train" / "n01440764").mkdir()
    (tmp / "imagenet" / "train" / "n01440764" / "README.txt").write_text("images went elsewhere")
    return (_dataset(tmp / "imagenet"), DatasetLayoutError,
            ["1 of", "have no images (n01440764)", "README.txt"])


def case_corrupt_jpeg_error_mode(assets, tmp):
    bad = _jpeg_files(assets, tmp / "imagenet")[0]
    _corrupt(bad)
    return _dataset(tmp / "imagenet", on_corrupt="error"), CorruptImageError, [f"corrupt image {bad}"]


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_named_and_nothing_is_lost(case: str, assets: Path, tmp_path: Path, previous_run: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    extra, exc, needles = CASES[case](assets, tmp_path)
    cfg = tiny_config(tmp_path / f"tiny_bad_{case}.py", assets, extra)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = _snapshot(previous_run)
    with pytest.raises(exc) as e:
        run_inprocess(cfg, previous_run)
    msg = str(e.value)
    for needle in needles:
        assert needle in msg, f"{case}: {needle!r} not in the message: {msg}"
    _assert_kept(before, previous_run, case)


def _assert_kept(before: dict[str, str], wd: Path, what: str) -> None:
    """Every earlier file is intact, in place or moved aside by a fresh run (superseded_*/)."""
    after = _snapshot(wd)
    for rel, digest in before.items():
        moved = [k for k, v in after.items() if k.startswith("superseded_") and k.endswith("/" + rel) and v == digest]
        assert after.get(rel) == digest or moved, f"{what}: the earlier {rel} was lost or changed"


def test_resume_without_checkpoint_says_so(assets, tmp_path, monkeypatch) -> None:
    cfg = tiny_config(tmp_path / "tiny_noresume.py", assets)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=rf"--resume: no checkpoint \(iter_\*\.pth\) in {tmp_path / 'empty'}"):
        run_inprocess(cfg, tmp_path / "empty", resume=True)


def test_work_dir_that_cannot_be_created_is_named(assets, tmp_path, monkeypatch) -> None:
    """Root may write anywhere, so an unwritable folder is simulated by a file in the path."""
    cfg = tiny_config(tmp_path / "tiny_wd.py", assets)
    monkeypatch.syspath_prepend(str(tmp_path))
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    with pytest.raises(OSError) as e:
        run_inprocess(cfg, blocker / "exp1")
    assert str(e.value).endswith(f"work dir {blocker / 'exp1'} (--work-dir or the config's work_dir) cannot be used: "
                                 f"{blocker} is a file, not a folder")
    assert blocker.read_text() == "not a folder"


@pytest.mark.heavy
def test_export_that_cannot_be_written_keeps_the_checkpoints(assets, tmp_path, monkeypatch) -> None:
    cfg = tiny_config(tmp_path / "tiny_export.py", assets, "schedule = dict(max_iters=4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "student").write_text("a file where the export folder goes")
    with pytest.raises(OSError) as e:
        run_inprocess(cfg, wd)
    assert f"cannot write {wd / 'student' / 'student.safetensors'}" in str(e.value)
    assert (wd / "iter_4.pth").is_file() and (wd / "student").read_text() == "a file where the export folder goes"


@pytest.mark.heavy
def test_corrupt_jpeg_is_skipped_and_counted_in_the_log(assets, tmp_path, monkeypatch) -> None:
    """on_corrupt='skip': the run goes on, and the log's corrupt_skipped is the exact number of
    draws that hit the bad file (computed here from the sampler's seeded stream)."""
    from comad.data.dataset import ImageFolderDataset
    from comad.engine.samplers import ResumableInfiniteSampler

    root = tmp_path / "imagenet"
    files = _jpeg_files(assets, root)
    bad = files[7]
    _corrupt(bad)
    ds = ImageFolderDataset(root, split="train")
    bad_index = [str(ds.path(i)) for i in range(len(ds))].index(str(bad))
    iters, batch = 12, 4
    stream = iter(ResumableInfiniteSampler(ds, shuffle=True, seed=0))
    draws = [next(stream)[0] for _ in range(iters * batch)]
    expected = draws.count(bad_index)
    assert expected >= 1, "pick another file: the first draws never hit it"
    cfg = tiny_config(tmp_path / "tiny_corrupt.py", assets, _dataset(root, on_corrupt="skip", max_corrupt_frac=0.1))
    monkeypatch.syspath_prepend(str(tmp_path))
    run_inprocess(cfg, tmp_path / "wd")
    logged = logged_scalars(tmp_path / "wd")
    assert logged[iters]["corrupt_skipped"] == expected
    first = draws.index(bad_index) // batch + 1
    assert "corrupt_skipped" not in logged.get(first - 1, {}) and logged[first]["corrupt_skipped"] >= 1


@pytest.mark.heavy
def test_fresh_run_in_a_used_work_dir_moves_the_earlier_run_aside(assets, tmp_path, previous_run, monkeypatch) -> None:
    """Without --resume, an earlier run's checkpoints are neither overwritten nor left mixed with
    the new run's (a later --resume would continue the wrong run)."""
    from comad.engine.launch import latest_checkpoint

    (previous_run / "iter_12.pth").write_bytes((previous_run / "iter_4.pth").read_bytes())
    before = _snapshot(previous_run)
    cfg = tiny_config(tmp_path / "tiny_reuse.py", assets, "schedule = dict(max_iters=4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_inprocess(cfg, previous_run)
    _assert_kept(before, previous_run, "fresh run")
    (old,) = previous_run.glob("superseded_*")
    assert sorted(p.name for p in old.iterdir()) == ["iter_12.pth", "iter_4.pth", "run_info.json", "student"]
    assert latest_checkpoint(previous_run) == previous_run / "iter_4.pth"  # the new run's, not the old iter_12
    assert (previous_run / "student" / "student.safetensors").read_bytes() != b"earlier student"
