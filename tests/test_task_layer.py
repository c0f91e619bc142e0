"""The task layer (transfer.runner), the launcher environment (comad.runtime), and the import
graph of comad/ and transfer/ (no cycle; comad never imports transfer)."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from transfer.metrics_io import read_metrics
from transfer.runner import Task, TaskRequest, TaskResult, finish_task, run_task
from comad.repo import REPO_ROOT
from comad.runtime import local_rank, parse_cfg_options, rank, world_size

_LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


@pytest.fixture
def clean_env(monkeypatch):
    for name in _LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_world_size_and_rank_follow_the_launcher(clean_env):
    assert (world_size(), rank(), local_rank()) == (1, 0, 0)
    clean_env.setenv("SLURM_NTASKS", "16")
    clean_env.setenv("SLURM_PROCID", "9")
    clean_env.setenv("SLURM_LOCALID", "1")
    assert (world_size(), rank(), local_rank()) == (16, 9, 1)  # launcher unknown: SLURM's when torchrun's are unset
    assert (world_size("slurm"), rank("slurm")) == (16, 9)
    assert (world_size("pytorch"), rank("pytorch")) == (1, 0)  # torchrun's variables only
    clean_env.setenv("WORLD_SIZE", "8")
    clean_env.setenv("RANK", "3")
    assert (world_size(), rank(), world_size("pytorch"), world_size("slurm")) == (8, 3, 8, 16)
    assert (world_size("none"), rank("none")) == (1, 0)
    with pytest.raises(ValueError, match="launcher 'mpi'"):
        world_size("mpi")
    clean_env.setenv("WORLD_SIZE", "eight")
    with pytest.raises(ValueError, match="WORLD_SIZE='eight': expected an integer"):
        world_size()


def test_parse_cfg_options():
    assert parse_cfg_options([]) == {}
    assert parse_cfg_options(["a.b=1", "c=[1,2]", "d=x"]) == {"a.b": 1, "c": [1, 2], "d": "x"}
    with pytest.raises(ValueError, match=r"cfg option 'k': expected key=value \(config f.py"):
        parse_cfg_options(["a=1", "k"], "config f.py")


def test_request_normalises_and_checks(tmp_path, clean_env):
    req = TaskRequest(str(tmp_path / "s.pth"), str(tmp_path), str(tmp_path / "w"), cfg_options=["a=1"])
    assert isinstance(req.student, Path) and req.cfg_options == ("a=1",) and req.world_size == 1 and req.seed is None
    clean_env.setenv("WORLD_SIZE", "4")
    assert TaskRequest(tmp_path, tmp_path, tmp_path).world_size == 4  # default: from the environment
    with pytest.raises(ValueError, match="launcher 'mpi'"):
        TaskRequest(tmp_path, tmp_path, tmp_path, launcher="mpi")


def test_the_runner_writes_the_record_from_the_result(tmp_path, clean_env):
    student = tmp_path / "run7" / "student" / "student.safetensors"
    request = TaskRequest(student, tmp_path / "data", tmp_path / "w", max_iters=5, demo=True, cfg_options=("x=1",),
                          seed=3)
    task = Task("imagenet-knn", lambda r: TaskResult(metrics={"top1": 1, "top5": 2.5}, config="cfg.py", seed=r.seed,
                                                     protocol={"k": 20}, name="mine", info={"effective_batch": 0}),
                ("top1", "top5"))
    rec = run_task(task, request)
    assert read_metrics(tmp_path / "w") == json.loads((tmp_path / "w/metrics.json").read_text()) == \
        json.loads(json.dumps(rec))
    assert (rec["task"], rec["metrics"], rec["seed"], rec["demo"], rec["name"], rec["protocol"]) == \
        ("imagenet-knn", {"top1": 1.0, "top5": 2.5}, 3, True, "mine", {"k": 20})
    assert (rec["student"], rec["config"], rec["effective_batch"], rec["max_iters"], rec["cfg_options"]) == \
        (str(student), "cfg.py", 0, 5, ["x=1"])
    assert rec["work_dir"] == str(tmp_path / "w") and rec["world_size"] == 1 and rec["duration_s"] >= 0
    # another rank builds the same record and writes nothing
    clean_env.setenv("RANK", "1")
    (tmp_path / "w2").mkdir()
    rec2 = finish_task(Task("t", print), TaskRequest(student, tmp_path, tmp_path / "w2"), TaskResult({"top1": 1.0}, "c", 0),
                       1.0)
    assert rec2["metrics"] == {"top1": 1.0} and not (tmp_path / "w2/metrics.json").exists()
    with pytest.raises(RuntimeError, match=r"missing \['top5'\]"):
        finish_task(task, request, TaskResult({"top1": 1.0}, "c", 0), 1.0)


def _import_graph() -> dict[str, set[str]]:
    """module -> the comad / transfer modules it imports anywhere (lazy imports too)."""
    files = {}
    for pkg in ("comad", "transfer"):
        for f in (REPO_ROOT / pkg).rglob("*.py"):
            parts = f.relative_to(REPO_ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph = {}
    for mod, f in files.items():
        pkg = mod if f.name == "__init__.py" else mod.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                prefix = ".".join(base + ([node.module] if node.module else []))
                names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {n for n in names if n in files and n != mod}
        # a package and its own submodules import each other by design (__init__ re-exports)
        graph[mod] = {d for d in deps if not d.startswith(mod + ".") and not mod.startswith(d + ".")}
    return graph


def test_no_import_cycle_and_comad_never_imports_transfer():
    graph = _import_graph()
    assert "transfer.mm_runner" in graph and "transfer.runner" in graph
    upward = sorted((a, b) for a, deps in graph.items() for b in deps if a.startswith("comad") and b.startswith("transfer"))
    assert not upward, f"comad imports transfer: {upward}"

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for d in graph[start]:
            if d == goal or (d not in seen and not seen.add(d) and reaches(d, goal, seen)):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m, set()))
    assert not cycles, f"modules on an import cycle: {cycles}"
