"""benchmarks/gpu_stages.py on the CPU (--dry-run), so that GPU minutes are never lost to a typo:
stage selection and skipping, carried wheels installed into a target folder, the device check,
every command's files and Python entry points checked, results recorded with the device named."""
from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_stages  # noqa: E402


def _wheel(folder: Path) -> Path:
    """A minimal wheel of a package ``comadprobe`` (pip may refuse it: the script then unzips it)."""
    folder.mkdir(parents=True)
    path = folder / "comadprobe-0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("comadprobe/__init__.py", "VALUE = 7\n")
        z.writestr("comadprobe-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: comadprobe\nVersion: 0.1\n")
        z.writestr("comadprobe-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("comadprobe-0.1.dist-info/RECORD", "")
    return path


def test_dry_run_checks_records_and_skips(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    _wheel(tmp_path / "whl")
    results = tmp_path / "results"
    args = ["--dry-run", "--results", str(results), "--wheels", str(tmp_path / "whl"), "--site", str(tmp_path / "site")]
    assert gpu_stages.main(["pipeline", "evidence", *args]) == 0
    assert (tmp_path / "site" / "comadprobe" / "__init__.py").read_text() == "VALUE = 7\n"  # carried wheel installed
    for stage in ("pipeline", "evidence"):
        rec = json.loads((results / f"{stage}.json").read_text())
        assert rec["status"] == "dry-run" and rec["device"]["card"] == "cpu (dry run)" and "torch" in rec["device"]
        assert all(c["rc"] == 0 for c in rec["commands"]), rec["commands"]
    assert "distill.sh" in json.loads((results / "pipeline.json").read_text())["commands"][0]["command"]
    assert not (results / "build.json").exists()  # not asked for
    # a passed stage is skipped; a dry run's record is not a pass
    (results / "build.json").write_text(json.dumps(dict(stage="build", status="passed")))
    ctx = gpu_stages.Context(results=results, out=tmp_path / "out", env={}, dry_run=True)
    assert gpu_stages.select(ctx, []) == ["pipeline", "evidence", "step", "data"]
    assert gpu_stages.select(ctx, ["data", "build"]) == ["data"]
    with pytest.raises(SystemExit, match=r"unknown stage\(s\) \['nope'\]"):
        gpu_stages.select(ctx, ["nope"])


def test_a_missing_tool_fails_the_stage_in_the_dry_run(tmp_path, monkeypatch):
    ctx = gpu_stages.Context(results=tmp_path, out=tmp_path, env={}, dry_run=True, device={"card": "cpu (dry run)"})
    monkeypatch.setitem(gpu_stages.STAGE_COMMANDS, "step", lambda c: [["bash", "benchmarks/no_such_run.sh"]])
    rec = gpu_stages.run_stage(ctx, "step")
    assert rec["status"] == "failed" and "no_such_run.sh" in rec["commands"][0]["tail"]
    assert json.loads((tmp_path / "step.json").read_text())["status"] == "failed"


def test_without_a_gpu_a_real_run_refuses():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here")
    with pytest.raises(SystemExit, match="no CUDA device"):
        gpu_stages.device_info(dry_run=False)
