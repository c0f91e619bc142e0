"""Atomic outputs: a kill or a full disk during a write leaves the previous file intact, and the
error names the file. Covers comad.io's writers, the runner's checkpoint backend, a training run
whose disk fills at a checkpoint, and a guard that the project's code writes through them."""
from __future__ import annotations

import ast
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from comad.engine.fileio import AtomicLocalBackend
from comad.io import (atomic_save_safetensors, atomic_torch_save, atomic_write_json, atomic_write_text,
                      load_state_dict_file, safe_torch_load)
from comad.mm_compat import mmengine_safe_globals
from test_reliability_support import ROOT, prepare_assets, run_inprocess, tiny_config


def _torch_bytes(obj: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# name -> (write new content to path, read path back)
WRITERS: dict[str, tuple[Callable[[Path], None], Callable[[Path], Any]]] = {
    "checkpoint": (lambda p: atomic_torch_save({"w": torch.full((64, 64), 2.0)}, p), lambda p: safe_torch_load(p)["w"][0, 0].item()),
    "student": (lambda p: atomic_save_safetensors({"w": torch.full((64, 64), 2.0)}, p),
                lambda p: load_state_dict_file(p)["w"][0, 0].item()),
    "metrics_json": (lambda p: atomic_write_json({"miou": 2.0}, p), lambda p: json.loads(p.read_text())["miou"]),
    "table": (lambda p: atomic_write_text("| a |\n| 2.0 |\n", p), lambda p: float(p.read_text().split("|")[-2])),
    "mm_checkpoint": (lambda p: AtomicLocalBackend().put(_torch_bytes({"w": torch.full((64, 64), 2.0)}), p),
                      lambda p: safe_torch_load(p)["w"][0, 0].item()),
}
SUFFIX = {"checkpoint": ".pth", "student": ".safetensors", "metrics_json": ".json", "table": ".md", "mm_checkpoint": ".pth"}


def _old_file(tmp_path: Path, kind: str) -> Path:
    """The file as a previous write left it (value 1.0)."""
    p = tmp_path / f"out{SUFFIX[kind]}"
    if kind in ("checkpoint", "mm_checkpoint"):
        torch.save({"w": torch.full((64, 64), 1.0)}, p)
    elif kind == "student":
        from safetensors.torch import save_file

        save_file({"w": torch.full((64, 64), 1.0)}, str(p))
    elif kind == "metrics_json":
        p.write_text(json.dumps({"miou": 1.0}))
    else:
        p.write_text("| a |\n| 1.0 |\n")
    return p


@pytest.mark.parametrize("kind", list(WRITERS))
def test_new_content_replaces_old(tmp_path: Path, kind: str) -> None:
    write, read = WRITERS[kind]
    p = _old_file(tmp_path, kind)
    assert read(p) == 1.0
    write(p)
    assert read(p) == 2.0 and sorted(os.listdir(tmp_path)) == [p.name]


class _FullDisk:
    """A file object whose writes fail with ENOSPC once ``budget`` bytes were written."""

    def __init__(self, f: Any, budget: int) -> None:
        self._f, self._budget = f, budget

    def write(self, data: Any) -> int:
        if self._budget < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.__exit__(*exc)


@pytest.mark.parametrize("kind", list(WRITERS))
def test_disk_full_keeps_previous_file_and_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    write, read = WRITERS[kind]
    p = _old_file(tmp_path, kind)
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: _FullDisk(real_fdopen(fd, *a, **k), budget=7))
    with pytest.raises(OSError) as e:
        write(p)
    monkeypatch.undo()
    assert e.value.errno == errno.ENOSPC and str(p) in str(e.value) and "previous content" in str(e.value)
    assert read(p) == 1.0 and sorted(os.listdir(tmp_path)) == [p.name]  # intact, no temporary left


def test_output_folder_not_writable_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run as root, for whom chmod does not forbid writing: simulate both ways it fails."""
    blocker = tmp_path / "results"
    blocker.write_text("a file where a folder is expected")
    with pytest.raises(OSError) as e:
        atomic_write_json({"a": 1}, blocker / "metrics.json")
    assert f"cannot write {blocker / 'metrics.json'}" in str(e.value) and str(blocker) in str(e.value)
    assert blocker.read_text() == "a file where a folder is expected"

    import tempfile

    def denied(*a: Any, **k: Any) -> Any:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    with pytest.raises(PermissionError, match=rf"cannot write {tmp_path / 'ro' / 'x.pth'}: the folder {tmp_path / 'ro'} "
                                              r"is not writable"):
        atomic_torch_save({}, tmp_path / "ro" / "x.pth")


KILL_SCRIPT = textwrap.dedent('''
    import os, sys, time, torch
    sys.path.insert(0, {root!r})
    from comad.io import atomic_torch_save
    from comad.engine.fileio import AtomicLocalBackend

    real_fdopen = os.fdopen
    class Slow:
        """Writes the first 1 MiB, then announces itself and stalls (the parent kills us)."""
        def __init__(self, f):
            self.f, self.n = f, 0
        def write(self, b):
            if self.n + len(b) > (1 << 20):
                self.f.write(bytes(b)[: (1 << 20) + 1 - self.n])
                self.f.flush()
                print("MID-WRITE", flush=True)
                time.sleep(120)
            self.n += len(b)
            return self.f.write(b)
        def __getattr__(self, k):
            return getattr(self.f, k)
        def __enter__(self):
            return self
        def __exit__(self, *e):
            self.f.__exit__(*e)
    os.fdopen = lambda fd, *a, **k: Slow(real_fdopen(fd, *a, **k))
    big = {{"w": torch.full((1024, 1024), 2.0)}}  # 4 MiB
    if {kind!r} == "checkpoint":
        atomic_torch_save(big, {path!r})
    else:  # the runner's checkpoints: mmengine's save_checkpoint -> put(bytes) of our backend
        import io
        buf = io.BytesIO(); torch.save(big, buf)
        AtomicLocalBackend().put(buf.getvalue(), {path!r})
''')


@pytest.mark.parametrize("kind", ["checkpoint", "mm_checkpoint"])
def test_sigkill_inside_the_write_keeps_previous_file(tmp_path: Path, kind: str) -> None:
    p = tmp_path / "iter_8.pth"
    torch.save({"w": torch.full((1024, 1024), 1.0)}, p)
    before = p.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT.format(root=str(ROOT), kind=kind, path=str(p))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "MID-WRITE", proc.stderr.read()
        temps = [n for n in os.listdir(tmp_path) if n.startswith(".iter_8.pth.") and n.endswith(".tmp")]
        assert len(temps) == 1 and (tmp_path / temps[0]).stat().st_size > (1 << 20)  # really mid-write
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    assert p.read_bytes() == before and safe_torch_load(p)["w"][0, 0].item() == 1.0
    # the orphaned temporary is hidden from the checkpoint search (latest_checkpoint globs iter_*.pth)
    from comad.engine.launch import latest_checkpoint

    assert latest_checkpoint(tmp_path) == p


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_assets(tmp_path_factory.getbasetemp() / "reliability_assets")


@pytest.mark.heavy
def test_disk_full_at_a_checkpoint_stops_the_run_naming_it(assets, tmp_path, monkeypatch) -> None:
    """ENOSPC while the runner saves iter_8.pth (at fsync, where delayed allocation reports it)."""
    cfg = tiny_config(tmp_path / "tiny_full_disk.py", assets)
    monkeypatch.syspath_prepend(str(tmp_path))
    wd = tmp_path / "wd"
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if ".iter_8.pth." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as e:
        run_inprocess(cfg, wd)
    assert e.value.errno == errno.ENOSPC and str(wd / "iter_8.pth") in str(e.value)
    assert sorted(n for n in os.listdir(wd) if "iter_" in n) == ["iter_4.pth"]  # no partial file, no temporary
    assert safe_torch_load(wd / "iter_4.pth", extra_globals=mmengine_safe_globals())["meta"]["iter"] == 4


# --------------------------------------------------------------------------- guard over the code
WRITE_CALLS = {"save", "to_csv", "savefig", "dump", "write_text", "write_bytes", "to_json", "to_parquet"}
# (file, call) pairs that legitimately write directly, with the reason
ALLOWED: dict[tuple[str, str], str] = {
    ("experiments/evidence/run.py", "open"): "a unit's log stream, appended across re-runs (not an output)",
}


def _atomic_handles(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if (isinstance(call, ast.Call) and getattr(call.func, "id", getattr(call.func, "attr", "")) == "atomic_open"
                        and isinstance(item.optional_vars, ast.Name)):
                    names.add(item.optional_vars.id)
    return names


def _direct_writes(path: Path, rel: str | None = None) -> list[str]:
    rel = rel or path.relative_to(ROOT).as_posix()
    tree = ast.parse(path.read_text(), filename=str(path))
    handles = _atomic_handles(tree)
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", getattr(node.func, "attr", ""))
        if name == "open" and isinstance(node.func, ast.Name):
            modes = [a.value for a in node.args[1:2] + [k.value for k in node.keywords if k.arg == "mode"]
                     if isinstance(a, ast.Constant)]
            if any(set(str(m)) & set("wax+") for m in modes) and (rel, "open") not in ALLOWED:
                found.append(f"{rel}:{node.lineno}: open(..., {modes[0]!r})")
        elif name in WRITE_CALLS and isinstance(node.func, ast.Attribute):
            dest = node.args[0] if name in ("to_csv", "savefig", "to_json", "to_parquet") and node.args else (
                node.args[1] if name in ("save", "dump") and len(node.args) > 1 else None)
            if name in ("save", "dump") and getattr(node.func.value, "id", "") not in ("torch", "json", "np", "numpy"):
                continue
            if isinstance(dest, ast.Name) and dest.id in handles:
                continue
            if (rel, name) in ALLOWED:
                continue
            found.append(f"{rel}:{node.lineno}: {ast.unparse(node.func)}(...)")
    return found


def test_project_code_writes_outputs_through_the_atomic_writers() -> None:
    files = [p for d in ("comad", "transfer", "tools", "experiments", "benchmarks") for p in (ROOT / d).rglob("*.py")]
    files = [p for p in files if p.relative_to(ROOT).as_posix() != "comad/io.py"]
    assert len(files) > 20
    direct = [w for p in files for w in _direct_writes(p)]
    assert not direct, "outputs written without comad.io's atomic writers:\n" + "\n".join(direct)


def test_the_guard_catches_a_direct_write(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import torch, json\n\ndef f(p, obj):\n    torch.save(obj, p)\n    json.dump(obj, open(p, 'w'))\n"
                     "    with atomic_open(p) as f:\n        torch.save(obj, f)\n")
    found = _direct_writes(probe, "comad/probe.py")
    assert sorted(found) == ["comad/probe.py:4: torch.save(...)", "comad/probe.py:5: json.dump(...)",
                             "comad/probe.py:5: open(..., 'w')"], found
