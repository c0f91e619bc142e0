"""Release checkpoints (comad.release) and a student's identity by content (comad.checkpoint.content).

The stock-OpenMMLab acceptance of the dense releases is in test_release_stock.py (heavy, mm)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from comad.checkpoint import canonical_metadata, content_sha256
from transfer.metrics_io import read_metrics
from transfer.runner import Task, TaskRequest, TaskResult, run_task
from comad.io import CheckpointError
from comad.release import Release, plain_data, publish


def _release(seed: int = 0, **meta) -> Release:
    g = torch.Generator().manual_seed(seed)
    sd = {"backbone.w": torch.randn(3, 4, generator=g), "head.b": torch.zeros(2)}
    return Release(name="net", state_dict=sd, meta=dict(dataset_meta=dict(classes=("a", "b")), **meta),
                   config_text="model = dict(type='X')\n")


def test_publish_names_the_file_by_its_sha256_and_loads_weights_only(tmp_path):
    rel = _release(iter=np.int64(7), palette=np.array([[1, 2, 3]], dtype=np.uint8))
    out = publish(rel, tmp_path)
    ckpt = tmp_path / f"net-{out['sha256'][:8]}.pth"
    assert out == dict(checkpoint=str(ckpt), config=str(tmp_path / "net.py"), sha256=out["sha256"])
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == out["sha256"]  # publish_model's naming
    loaded = torch.load(ckpt, weights_only=True)  # stock torch, no allow-list
    assert set(loaded) == {"state_dict", "meta"}  # no optimizer, message hub or random states
    assert torch.equal(loaded["state_dict"]["backbone.w"], rel.state_dict["backbone.w"])
    assert loaded["meta"] == dict(dataset_meta=dict(classes=("a", "b")), iter=7, palette=[[1, 2, 3]])
    assert type(loaded["meta"]["iter"]) is int
    assert (tmp_path / "net.py").read_text() == "model = dict(type='X')\n"
    assert publish(rel, tmp_path) == out  # the same model: the same bytes, the same name
    other = publish(_release(seed=1), tmp_path)
    assert [p.name for p in tmp_path.glob("net-*.pth")] == [f"net-{other['sha256'][:8]}.pth"]  # the old one replaced


def test_publish_refuses_meta_that_is_not_plain_data(tmp_path):
    with pytest.raises(TypeError, match=r"release meta.dataset_meta.obj: object is not plain data"):
        publish(Release("net", {}, dict(dataset_meta=dict(obj=object())), ""), tmp_path)
    assert plain_data({"a": (np.float32(0.5), [np.int8(3)])}) == {"a": (0.5, [3])}
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_finish_task_publishes_and_names_the_release_in_metrics_json(tmp_path):
    def trained(request):
        return TaskResult(metrics={"top1": 50.0}, config="c.py", seed=0, release=_release())

    request = TaskRequest(tmp_path / "s.pth", tmp_path, tmp_path / "w")
    record = run_task(Task("t", trained, ("top1",)), request)
    rec = read_metrics(tmp_path / "w")
    assert rec["release"] == record["release"]
    assert rec["release"]["config"] == str(tmp_path / "w" / "release" / "net.py")
    assert torch.load(rec["release"]["checkpoint"], weights_only=True)["meta"]["dataset_meta"]["classes"] == ("a", "b")
    plain = run_task(Task("u", lambda r: TaskResult(metrics={"top1": 1.0}, config="c", seed=0), ("top1",)),
                     TaskRequest(tmp_path / "s.pth", tmp_path, tmp_path / "u"))
    assert "release" not in plain  # a task without a model to publish


def test_content_id_ignores_metadata_key_order_and_sees_every_tensor_byte(tmp_path):
    sd = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(2, dtype=torch.bfloat16)}
    arch = {"img_size": 224, "patch_size": 16}
    save_file(sd, str(tmp_path / "1.safetensors"), metadata={"arch": json.dumps(arch), "format": "comad-student"})
    # another process: the keys of the header and of the JSON inside it in another order
    save_file(dict(reversed(sd.items())), str(tmp_path / "2.safetensors"),
              metadata={"format": "comad-student", "arch": json.dumps(dict(reversed(arch.items())))})
    one, two = tmp_path / "1.safetensors", tmp_path / "2.safetensors"
    assert one.read_bytes() != two.read_bytes()
    assert content_sha256(one) == content_sha256(two)
    sd["a"] = torch.tensor([1.0, 1.0078125], dtype=torch.bfloat16)  # one bf16 step in one element
    save_file(sd, str(tmp_path / "3.safetensors"), metadata={"arch": json.dumps(arch), "format": "comad-student"})
    assert content_sha256(tmp_path / "3.safetensors") != content_sha256(one)
    save_file({k: v for k, v in sd.items()}, str(tmp_path / "4.safetensors"), metadata={"format": "other"})
    assert content_sha256(tmp_path / "4.safetensors") != content_sha256(tmp_path / "3.safetensors")
    torch.save({"meta": {"x": 1, "y": [2]}, "state_dict": {"w": torch.ones(2)}}, tmp_path / "a.pth")
    torch.save({"state_dict": {"w": torch.ones(2)}, "meta": {"y": [2], "x": 1}}, tmp_path / "b.pth")
    assert content_sha256(tmp_path / "a.pth") == content_sha256(tmp_path / "b.pth")
    assert canonical_metadata({"m": '{"b": 1, "a": 2}'}) == canonical_metadata({"m": '{"a": 2, "b": 1}'})
    with pytest.raises(FileNotFoundError, match="nope.pth: no such file"):
        content_sha256(tmp_path / "nope.pth")
    (tmp_path / "bad.pth").write_text("hello")
    with pytest.raises(CheckpointError, match="bad.pth: not a torch checkpoint"):
        content_sha256(tmp_path / "bad.pth")


def test_two_processes_export_the_same_student_with_one_content_id(tmp_path):
    """The issue's case: the same student exported by two processes (safetensors orders the header's keys
    per process) is one student for the transfer guard and the ImageNet resume keys."""
    import subprocess
    import sys

    from comad.repo import REPO_ROOT

    code = ("import sys, torch, timm; from comad.export import export_student; torch.manual_seed(0); "
            "vit = timm.models.vision_transformer.VisionTransformer(img_size=32, patch_size=16, embed_dim=32, depth=1, "
            "num_heads=2, num_classes=0); export_student(vit, sys.argv[1], meta={'seed': 0, 'teachers': ['a', 'b']})")
    paths = []
    for i, seed in enumerate(("1", "2", "3")):
        out = tmp_path / str(i)
        env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env=env, timeout=300)
        paths.append(out / "student.safetensors")
    assert len({content_sha256(p) for p in paths}) == 1
