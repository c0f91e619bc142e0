"""tools/make_tables.py on crafted runs: exact numbers, mean ± std, deltas, flagged logs."""
import re
import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from transfer.metrics_io import make_record, write_metrics
from transfer.tables import build_table, discover_runs, load_published, make_tables

REPO = Path(__file__).resolve().parents[1]


def _run(root, name, task, seed, metrics, log="ok", units="percent", demo=False):
    """A task work dir as the runners leave it: metrics.json + <timestamp>/vis_data/scalars.json."""
    wd = root / (f"{name}-s{seed}" + ("-demo" if demo else "")) / task
    wd.mkdir(parents=True)
    if metrics is not None:
        rec = make_record(task, metrics, student=f"work_dirs/{name}/student/student.safetensors",
                          config=f"benchmark_configs/x/{task}.py", seed=seed, demo=demo, units=units)
        write_metrics(rec, wd)
    if log != "missing":
        vis = wd / "20260101_000000" / "vis_data"
        vis.mkdir(parents=True)
        lines = [json.dumps({"loss": 2.0 - 0.1 * i, "lr": 1e-3, "step": i}) for i in range(1, 4)]
        text = "\n".join(lines) + "\n"
        if log == "truncated":
            text += '{"loss": 1.6, "lr": 0.0'  # killed mid-write
        (vis / "scalars.json").write_text(text)
    return wd


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "work_dirs"
    for seed, v in enumerate([70.0, 71.0, 73.0]):
        _run(root, "A", "imagenet-ft", seed, {"top1": v, "top5": 90.0})
    _run(root, "A", "imagenet-ft", 3, {"top1": 99.0, "top5": 99.0}, log="truncated")   # not counted
    _run(root, "A", "ade20k", 0, {"mIoU": 40.0, "aAcc": 80.0}, log="missing")          # not counted
    _run(root, "A", "coco", 0, {"bbox_mAP": 0.401, "segm_mAP": 0.362}, units="fraction")
    _run(root, "A", "coco", 1, {"bbox_mAP": 0.411, "segm_mAP": 0.366}, units="fraction")
    _run(root, "A", "imagenet-knn", 0, None)                                            # crashed: logs only
    _run(root, "B", "imagenet-ft", 0, {"top1": 68.0})
    _run(root, "B", "imagenet-ft", 1, {"top1": 70.0})
    _run(root, "B", "imagenet-ft", 0, {"top1": 60.0}, demo=True)                        # a separate demo row
    bad = root / "C-s0" / "imagenet-ft"
    bad.mkdir(parents=True)
    (bad / "metrics.json").write_text('{"task": "imagenet-ft", "metrics": {"top1": 7')  # half-written
    return root


def test_exact_numbers_std_and_deltas(runs):
    df, warnings = build_table(discover_runs([runs]), load_published(REPO / "results" / "published.csv"), baseline="B")
    a = df.set_index("row").loc["A"]
    assert a["in1k_ft"] == pytest.approx((70 + 71 + 73) / 3)
    assert a["in1k_ft_std"] == pytest.approx(math.sqrt(((70 - 71.3333333) ** 2 + (71 - 71.3333333) ** 2 + (73 - 71.3333333) ** 2) / 2))
    assert a["in1k_ft_n"] == 3
    assert a["in1k_ft_delta"] == pytest.approx(71.3333333 - 69.0)
    assert a["coco_apb"] == pytest.approx(40.6) and a["coco_apb_std"] == pytest.approx(math.sqrt(0.5))
    assert a["coco_apm"] == pytest.approx(36.4)
    assert math.isnan(a["ade20k_miou"]) and a["ade20k_miou_n"] == 0  # its only run has no log
    assert a["seeds"] == "0,1,2"
    assert a["status"] == "2 run(s) excluded: ade20k:log-missing, imagenet-ft:log-truncated"
    b = df.set_index("row").loc["B"]
    assert (b["in1k_ft"], b["in1k_ft_std"], b["in1k_ft_delta"]) == (69.0, pytest.approx(math.sqrt(2)), 0.0)
    assert df.set_index("row").loc["B (demo)", "in1k_ft"] == 60.0
    comad = df.set_index("row").loc["CoMAD"]
    assert comad["kind"] == "published" and comad["in1k_ft_delta"] == pytest.approx(75.4 - 69.0)
    assert comad["coco_apb"] == 44.5 and comad["source"] == "arXiv 2508.04816 abstract"
    text = "\n".join(warnings)
    assert "[log-truncated]" in text and "scalars.json: line 4 is not JSON (half-written log)" in text
    assert "[log-missing]" in text and "[no-metrics]" in text and "[metrics-invalid]" in text
    assert "not valid JSON (half-written?)" in text


def test_outputs_and_cli(runs, tmp_path):
    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_tables.py"), str(runs), "--out", str(out),
                           "--baseline", "B", "--strict"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # --strict: runs were excluded
    assert "4 warning(s)" in proc.stderr and "log-truncated" in proc.stderr
    df = pd.read_csv(out / "results.csv")
    assert df.set_index("row").loc["A", "in1k_ft"] == pytest.approx(71.3333333)
    md = (out / "results.md").read_text()
    assert re.search('\\|\\s*A\\s*\\|\\s*71\\.33\\ ±\\ 1\\.53\\ \\(n=3\\)\\ \\[\\+2\\.33\\]\\s*\\|', md)
    assert "## Warnings" in md and "line 4 is not JSON" in md
    tex = (out / "results.tex").read_text()
    assert "\\begin{tabular}" in tex and "71.33 ± 1.53 (n=3) [+2.33]" in tex
    with open(out / "runs.csv") as f:
        statuses = sorted(r["status"] for r in csv.DictReader(f))
    assert statuses.count("ok") == 8 and {"log-truncated", "log-missing", "no-metrics", "metrics-invalid"} <= set(statuses)
    for png in ["bar_in1k_ft.png", "bar_coco_apb.png", "curves_imagenet-ft.png"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))


def test_unknown_baseline_and_missing_dirs(runs, tmp_path):
    with pytest.raises(KeyError, match="baseline 'Z': no such row"):
        make_tables([runs], tmp_path / "o", baseline="Z", plots=False)
    with pytest.raises(FileNotFoundError, match="work dir .*nothere: no such folder"):
        make_tables([tmp_path / "nothere"], tmp_path / "o")


def test_published_csv_holds_the_peers_numbers_each_under_its_recipe():
    """The numbers of docs/method.md §5, each in the column of the recipe it was measured with (TinyMIM's
    ADE20K numbers under the TinyMIM recipe, MAE-Lite's ViTDet numbers under ViTDet LSJ), plus the
    frozen-linear numbers DINOv2 publishes, the multi-scale ones flagged as another protocol."""
    pub = load_published(REPO / "results" / "published.csv")
    got = {(r.method, r.metric): r.value for r in pub.itertuples()}
    spec = {("CoMAD", "in1k_ft"): 75.4, ("CoMAD", "ade20k_miou"): 47.3, ("CoMAD", "coco_apb"): 44.5,
            ("CoMAD", "coco_apm"): 40.5, ("TinyMIM", "in1k_ft"): 75.8, ("TinyMIM", "ade20k_tinymim_miou"): 44.0,
            ("MAE-Tiny", "in1k_ft"): 71.6, ("MAE-Tiny", "ade20k_tinymim_miou"): 37.6,
            ("DeiT-Tiny (supervised)", "in1k_ft"): 72.2, ("DeiT-Tiny (supervised)", "ade20k_tinymim_miou"): 38.0,
            ("D-MAE-Tiny (MAE-Lite)", "in1k_ft"): 78.4, ("D-MAE-Tiny (MAE-Lite)", "coco_lsj_apb"): 42.3,
            ("D-MAE-Tiny (MAE-Lite)", "coco_lsj_apm"): 37.4, ("MAE-Tiny (MAE-Lite)", "in1k_ft"): 78.0,
            ("MAE-Tiny (MAE-Lite)", "coco_lsj_apb"): 39.9, ("MAE-Tiny (MAE-Lite)", "coco_lsj_apm"): 35.4,
            ("MoCo v3-Tiny (MAE-Lite)", "in1k_ft"): 76.8, ("MoCo v3-Tiny (MAE-Lite)", "coco_lsj_apb"): 39.7,
            ("MoCo v3-Tiny (MAE-Lite)", "coco_lsj_apm"): 35.1, ("MAE teacher", "in1k_ft"): 83.6,
            ("MoCo v3 teacher", "in1k_ft"): 83.2, ("MoCo v3 teacher", "in1k_linear"): 76.7,
            ("iBOT teacher", "in1k_ft"): 83.8, ("iBOT teacher", "in1k_linear"): 79.5,
            ("DINOv2 ViT-S/14 (distilled)", "ade20k_linear_miou"): 44.3,
            ("DINOv2 ViT-S/14 (distilled)", "ade20k_linear4_miou"): 47.2,
            ("DINOv2 ViT-B/14 (distilled)", "ade20k_linear_miou"): 47.3,
            ("DINOv2 ViT-B/14 (distilled)", "ade20k_linear4_miou"): 51.3}
    assert got == spec
    assert pub["source"].str.len().min() > 0 and pub["protocol"].str.len().min() > 0
    assert not pub["source"].str.contains("SPEC").any()  # sources a reader can follow
    multi = pub[pub.metric == "ade20k_linear4_miou"]
    assert multi.protocol.str.startswith("ANOTHER PROTOCOL").all()


def test_bad_published_file(tmp_path):
    p = tmp_path / "pub.csv"
    p.write_text("method,arch,metric,value,source,protocol\nX,ViT-T,in1k_top1,1.0,s,p\n")
    with pytest.raises(ValueError, match=r"unknown metric ids \['in1k_top1'\]"):
        load_published(p)
