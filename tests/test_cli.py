"""Every entry point: a user's mistake is one line naming what is wrong, with exit status 2; the
traceback goes to work_dirs/errors/<tool>.log, and --verbose shows it instead (comad.cli)."""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from comad.cli import UsageError, run_main, user_message

ROOT = Path(__file__).resolve().parents[1]


def _run_tool(path: str, argv: list[str], capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [path, *argv])
    monkeypatch.delenv("COMAD_VERBOSE", raising=False)
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / path), run_name="__main__")
    return e.value.code, capsys.readouterr().err


def _one_line(err: str, prog: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    assert "Traceback" not in err and all(n in lines[0] for n in needles), err


@pytest.mark.parametrize("path,argv,prog,needles", [
    ("tools/export_student.py", ["{tmp}/nowhere"], "export_student", ["nowhere", "no such file"]),
    ("tools/infer.py", ["{tmp}/c.py", "{tmp}/ckpt.pth", "{tmp}/img.jpg", "--out", "{tmp}/p.png"], "infer", ["c.py"]),
    ("tools/gating_maps.py", ["{tmp}/c.py", "{tmp}/wd", "--out", "{tmp}/o.png"], "gating_maps", ["wd", "no such file"]),
    ("tools/convert_teacher.py", ["{tmp}/mae.pth", "{tmp}/out.safetensors"], "convert_teacher", ["mae.pth"]),
    ("tools/linear_probe.py", ["{tmp}/student.safetensors"], "linear_probe", ["student.safetensors"]),
    ("tools/make_tables.py", ["{tmp}/no_runs", "--out", "{tmp}/tables"], "make_tables", ["no_runs"]),
    ("experiments/run_evidence.py", ["--set", "nonsense=1"], "evidence", ["nonsense"]),
    ("benchmarks/benchmark_distill.py", ["--device", "cpu", "--batches", "x"], "benchmark_distill", ["--batches"]),
])
def test_each_tool_names_a_bad_input_on_one_line_with_status_2(path, argv, prog, needles, tmp_path, capsys,
                                                               monkeypatch):
    code, err = _run_tool(path, [a.format(tmp=tmp_path) for a in argv], capsys, monkeypatch)
    assert code == 2, err
    # argparse's own option errors keep its format: the usage, then "<tool>.py: error: ..."
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("usage:", " "))]
    assert len(lines) == 1 and lines[0].startswith((f"{prog}: error: ", f"{prog}.py: error: ")), err
    assert "Traceback" not in err and all(n in lines[0] for n in needles), err


def test_verbose_shows_the_traceback_and_the_log_keeps_it(tmp_path, capsys, monkeypatch):
    code, err = _run_tool("tools/export_student.py", [str(tmp_path / "nowhere")], capsys, monkeypatch)
    assert code == 2 and (ROOT / "work_dirs" / "errors" / "export_student.log").read_text().startswith("Traceback")
    monkeypatch.setattr(sys, "argv", ["export_student.py", str(tmp_path / "nowhere"), "--verbose"])
    with pytest.raises(UsageError, match="no checkpoint"):
        run_main("export_student", lambda: (_ for _ in ()).throw(UsageError("no checkpoint (iter_*.pth)")))


def test_registry_prefixes_are_dropped_and_bugs_keep_their_traceback(monkeypatch):
    e = FileNotFoundError("class `CoMADDistiller` in comad.distiller: checkpoint x.pth: no such file")
    assert user_message(e) == "checkpoint x.pth: no such file"
    assert user_message(KeyError("model.fusion")) == "model.fusion"
    monkeypatch.setattr(sys, "argv", ["tool"])
    with pytest.raises(ZeroDivisionError):  # not a user's mistake: not swallowed
        run_main("tool", lambda: 1 // 0)


@pytest.mark.heavy
@pytest.mark.mm
def test_shell_entry_points_name_a_missing_teacher_and_a_missing_dataset(tmp_path, make_student):
    """tools/distill.sh on the 300-epoch config without checkpoints/, tools/run_transfer.sh ade20k
    without the ADE20K folder: one line each, status 2 (was a 45-line traceback through mmengine)."""
    env = {k: v for k, v in os.environ.items() if k != "COMAD_VERBOSE"}
    cfg = ROOT / "benchmark_configs/distill/comad_vit-tiny_8xb512-300e_in1k-224.py"
    p = subprocess.run(["bash", str(ROOT / "tools/distill.sh"), str(cfg), "--work-dir", str(tmp_path / "wd")],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    _one_line(p.stderr, "distill", "checkpoints/mae_pretrain_vit_base.pth", "no such file")
    student = make_student(tmp_path / "student", "transfer")
    p = subprocess.run(["bash", str(ROOT / "tools/run_transfer.sh"), "--student", str(student), "--data-root",
                        str(tmp_path / "data"), "--work-dir", str(tmp_path / "t"), "ade20k"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    _one_line(p.stderr, "run_transfer", str(tmp_path / "data"))
