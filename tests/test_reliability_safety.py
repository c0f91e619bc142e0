"""Checkpoints from outside a run (teachers, students, resume files dropped into a work dir) are
read as data only: a crafted pickle that would run code is refused naming the file, and the
config text mmengine keeps in its checkpoints is never executed. Guards over the code: no
eval/exec, no unsafe torch.load / pickle, no process-wide opt-out of safe loading."""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest
import torch

from comad.io import CheckpointError, load_state_dict_file, safe_torch_load
from comad.mm_compat import mmengine_safe_globals
from comad.teachers import load_teacher
from comad.teachers.synthetic import write_checkpoint
from test_reliability_support import ROOT, prepare_assets, run_inprocess, tiny_config


class Exploit:
    """Unpickling this runs ``os.makedirs(marker)`` (harmless, and visible)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _assert_refused(load, path: Path, marker: Path) -> None:
    with pytest.raises(CheckpointError) as e:
        load(path)
    msg = str(e.value)
    assert str(path) in msg and "refused" in msg and "weights_only=True" in msg, msg
    assert not marker.exists(), "the crafted pickle ran code"
    torch.load(path, weights_only=False)  # control: an unsafe load really does run it
    assert marker.is_dir()


def test_crafted_teacher_is_refused(tmp_path: Path) -> None:
    path, marker = tmp_path / "mae_pretrain_vit_base.pth", tmp_path / "pwned"
    write_checkpoint("mae", path, embed_dim=64, depth=1, img_size=64)
    ck = torch.load(path, weights_only=True)
    ck["args"] = Exploit(marker)
    torch.save(ck, path)
    _assert_refused(lambda p: load_teacher(p, format="auto", img_size=64), path, marker)


def test_crafted_student_pth_is_refused(tmp_path: Path) -> None:
    from comad.checkpoint import read_encoder as read_student

    path, marker = tmp_path / "student.pth", tmp_path / "pwned"
    torch.save({"state_dict": {"pos_embed": torch.zeros(1, 5, 8)}, "meta": Exploit(marker)}, path)
    _assert_refused(load_state_dict_file, path, marker)
    marker.rmdir()
    _assert_refused(read_student, path, marker)


@pytest.fixture(scope="module")
def run4(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, work dir) of a finished 4-iteration tiny run (iter_4.pth)."""
    import sys

    root = tmp_path_factory.mktemp("safety_run")
    assets = prepare_assets(tmp_path_factory.getbasetemp() / "reliability_assets")
    cfg = tiny_config(root / "tiny_safety.py", assets, "schedule = dict(max_iters=4)\n")
    sys.path.insert(0, str(root))
    try:
        run_inprocess(cfg, root / "wd")
    finally:
        sys.path.remove(str(root))
    return cfg, root / "wd"


def test_crafted_resume_checkpoint_is_refused(run4, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg, src = run4
    wd, marker = tmp_path / "wd", tmp_path / "pwned"
    wd.mkdir()
    ck = safe_torch_load(src / "iter_4.pth", extra_globals=mmengine_safe_globals())
    ck["meta"]["exploit"] = Exploit(marker)
    torch.save(ck, wd / "iter_4.pth")
    monkeypatch.syspath_prepend(str(cfg.parent))
    with pytest.raises(CheckpointError) as e:
        run_inprocess(cfg, wd, resume=True)
    assert str(wd / "iter_4.pth") in str(e.value) and "refused" in str(e.value)
    assert not marker.exists() and not (wd / "student").exists()


def test_config_text_inside_a_resume_checkpoint_is_never_executed(run4, tmp_path, monkeypatch) -> None:
    """A data-only checkpoint passes weights_only=True; mmengine's resume would still exec its
    ``meta['config']`` (Config.fromstring runs Python). ComadRunner drops that text unread."""
    from mmengine.config import Config

    cfg, src = run4
    wd, marker = tmp_path / "wd", tmp_path / "pwned"
    wd.mkdir()
    ck = safe_torch_load(src / "iter_4.pth", extra_globals=mmengine_safe_globals())
    payload = f"x = __import__('os').makedirs({str(marker)!r})\n"
    ck["meta"]["config"] = payload
    torch.save(ck, wd / "iter_4.pth")
    monkeypatch.syspath_prepend(str(cfg.parent))
    runner = run_inprocess(cfg, wd, resume=True)
    assert runner.iter == 4 and (wd / "student" / "student.safetensors").is_file()
    assert not marker.exists(), "the config text of a resume checkpoint was executed"
    Config.fromstring(payload, file_format=".py")  # control: mmengine's parser does run it
    assert marker.is_dir()


# --------------------------------------------------------------------------- guards over the code
def _python_files() -> list[Path]:
    return [p for d in ("comad", "transfer", "tools", "experiments", "benchmarks") for p in (ROOT / d).rglob("*.py")]


def _calls(path: Path) -> list[tuple[str, ast.Call]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            out.append((ast.unparse(node.func), node))
    return out


# None left: tools/export_student.py reads meta.student_arch (test_export_student_does_not_execute_checkpoint_config).
KNOWN_DEFECTS: set[str] = set()


def test_no_eval_or_exec_of_strings() -> None:
    files = _python_files()
    assert len(files) > 20
    found = [f"{p.relative_to(ROOT)}:{c.lineno}: {name}(...)" for p in files for name, c in _calls(p)
             if name in ("eval", "exec", "compile", "builtins.eval", "builtins.exec", "__import__",
                         "Config.fromstring", "mmengine.Config.fromstring")
             and f"{p.relative_to(ROOT).as_posix()}:{name}" not in KNOWN_DEFECTS]
    assert not found, "code that could execute strings (configs are parsed by mmengine's Config.fromfile only):\n" + "\n".join(found)


def test_checkpoints_carry_the_student_arch_as_data(run4) -> None:
    """What a re-export needs, without executing the checkpoint's config text."""
    from comad.checkpoint import build_vit

    _, wd = run4
    ck = safe_torch_load(wd / "iter_4.pth", extra_globals=mmengine_safe_globals())
    arch = dict(ck["meta"]["student_arch"])
    assert arch == dict(img_size=64, patch_size=16, embed_dim=32, depth=2, num_heads=2, mlp_ratio=4.0)
    vit = build_vit(arch)
    vit.load_state_dict({k[len("student."):]: v for k, v in ck["state_dict"].items() if k.startswith("student.")})


def test_export_student_does_not_execute_checkpoint_config(run4, tmp_path, monkeypatch) -> None:
    import runpy
    import sys

    _, src = run4
    marker = tmp_path / "pwned"
    ck = safe_torch_load(src / "iter_4.pth", extra_globals=mmengine_safe_globals())
    ck["meta"]["cfg"] = f"_x = __import__('os').makedirs({str(marker)!r})\n" + ck["meta"]["cfg"]
    torch.save(ck, tmp_path / "iter_4.pth")
    monkeypatch.setattr(sys, "argv", ["export_student.py", str(tmp_path / "iter_4.pth"), "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_info:  # a tool exits with its status (comad.cli.run_main)
        runpy.run_path(str(ROOT / "tools" / "export_student.py"), run_name="__main__")
    assert exit_info.value.code == 0
    assert (tmp_path / "out" / "student.safetensors").is_file()
    assert not marker.exists(), "tools/export_student.py executed the config text of a checkpoint"


def test_every_torch_load_is_weights_only_and_no_pickle() -> None:
    bad = []
    for p in _python_files():
        for name, c in _calls(p):
            if name == "torch.load":
                wo = [k for k in c.keywords if k.arg == "weights_only"]
                if not (wo and isinstance(wo[0].value, ast.Constant) and wo[0].value.value is True):
                    bad.append(f"{p.relative_to(ROOT)}:{c.lineno}: torch.load without weights_only=True")
                elif p.relative_to(ROOT).as_posix() != "comad/io.py":
                    bad.append(f"{p.relative_to(ROOT)}:{c.lineno}: torch.load outside comad.io.safe_torch_load")
            elif re.fullmatch(r"(pickle|cPickle|dill|joblib)\.(load|loads)|numpy\.load|np\.load", name):
                allow = [k for k in c.keywords if k.arg == "allow_pickle"]
                if not name.endswith("np.load") and not name.endswith("numpy.load") or not allow or allow[0].value.value:
                    bad.append(f"{p.relative_to(ROOT)}:{c.lineno}: {name}")
    assert not bad, "\n".join(bad)


def test_safe_loading_is_never_switched_off() -> None:
    key = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
    hits = []
    for p in _python_files():
        for node in ast.walk(ast.parse(p.read_text(), filename=str(p))):
            if isinstance(node, ast.Constant) and node.value == key:  # os.environ[key] = ..., setdefault(key, ...)
                hits.append(f"{p.relative_to(ROOT)}:{node.lineno}: {key}")
            if isinstance(node, ast.keyword) and node.arg == "weights_only" and not (
                    isinstance(node.value, ast.Constant) and node.value.value is True):
                hits.append(f"{p.relative_to(ROOT)}:{node.value.lineno}: weights_only={ast.unparse(node.value)}")
    scripts = list((ROOT / "tools").glob("*.sh")) + [p for p in (ROOT / ".ci").rglob("*") if p.is_file()] \
        + [p for p in (ROOT / "Makefile", ROOT / "pyproject.toml") if p.is_file()]
    assert scripts
    for p in scripts:
        for n, line in enumerate(p.read_text(errors="ignore").splitlines(), 1):
            if key in line.split("#", 1)[0]:
                hits.append(f"{p.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "safe loading switched off:\n" + "\n".join(hits)
