"""The distillation throughput benchmark (benchmarks.distill): FLOP count, naive reference pieces,
GPU-decode crops (on the CPU), the row runners, and tiny CPU runs of the package and of the tool
(columns and files; no timing is asserted)."""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

import benchmarks.distill as bd
from benchmarks.distill import context as bench_context
from comad.gating import consensus_gating
from comad.checkpoint import build_vit
from comad.models.vit import forward_kept_tokens

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "benchmarks" / "benchmark_distill.py"


def _tiny_vit(seed: int = 0):
    torch.manual_seed(seed)
    return build_vit(dict(embed_dim=32, depth=2, num_heads=2), img_size=64).eval()


def _idx(b: int, n: int, k: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, generator=g).argsort(1)[:, :k].sort(1).values


# ------------------------------------------------------------------------------------ FLOPs
def test_block_flops_match_a_hand_count():
    # dim 8, 1 block, 5 tokens, MLP 32: qkv 2*5*8*24 = 1920, proj 2*5*8*8 = 640,
    # fc1 + fc2 2*(2*5*8*32) = 5120, scores + weighted sum 2*(2*5*5*8) = 800
    assert bd.vit_blocks_flops(8, 1, 5, 4.0) == 1920 + 640 + 5120 + 800
    # 4 patches of 16x16x3 -> 8 channels
    assert bd.patch_embed_flops(4, 8, 16, 3) == 2 * 4 * 768 * 8
    # ViT-B/16 forward on 197 tokens: the issue's ~35 GFLOP
    vit_b = bd.patch_embed_flops(196, 768, 16) + bd.vit_blocks_flops(768, 12, 197)
    assert vit_b == pytest.approx(35.13e9, rel=1e-3)


def test_step_flops_hand_computation_for_a_tiny_config():
    t = bd.VitDims(embed_dim=8, depth=1)
    s = bd.VitDims(embed_dim=4, depth=1)
    # N = 4 positions; teacher keeps 2, student 1; decoder width 4, 1 block, MLP ratio 4
    f = bd.step_flops([t], [2], s, 1, decoder_dim=4, decoder_depth=1, decoder_mlp_ratio=4.0, num_positions=4, naive=False)
    pe_t = 2 * 4 * 768 * 8
    blk_t = 2 * 3 * 8 * 24 + 2 * 3 * 8 * 8 + 2 * 2 * 3 * 8 * 32 + 2 * 2 * 9 * 8  # 3 tokens (CLS + 2)
    assert f["teachers"] == pe_t + blk_t
    assert f["adapters"] == 2 * 2 * 8 * 4
    pe_s = 2 * 4 * 768 * 4
    blk_s = 2 * 2 * 4 * 12 + 2 * 2 * 4 * 4 + 2 * 2 * 2 * 4 * 16 + 2 * 2 * 4 * 4  # 2 tokens (CLS + 1)
    assert f["student"] == 2 * pe_s + 3 * blk_s
    dec = 2 * 1 * 4 * 4 + (2 * 4 * 4 * 12 + 2 * 4 * 4 * 4 + 2 * 2 * 4 * 4 * 16 + 2 * 2 * 16 * 4) + 2 * 4 * 4 * 4
    assert f["decoder"] == 3 * dec
    assert f["total"] == f["teachers"] + f["adapters"] + f["student"] + f["decoder"]
    naive = bd.step_flops([t], [2], s, 1, 4, 1, 4.0, 4, naive=True)
    assert naive["teachers"] == pe_t + bd.vit_blocks_flops(8, 1, 5)  # all 4 patches + CLS
    assert naive["adapters"] == f["adapters"] and naive["decoder"] == f["decoder"]


def test_flop_count_agrees_with_torch_flop_counter():
    """The un-fused naive forward is all matmuls, so torch's FlopCounterMode sees every term."""
    vit = _tiny_vit()
    x = torch.randn(3, 3, 64, 64)
    idx = torch.arange(16).expand(3, 16)  # keep all: the full-sequence cost
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        bd.masked_full_forward(vit, x, idx)
    dims = bd.VitDims.of(vit)
    assert fc.get_total_flops() == 3 * (bd.patch_embed_flops(16, 32, 16) + bd.vit_blocks_flops(32, 2, 17))
    assert (dims.embed_dim, dims.depth, dims.mlp_ratio, dims.patch_size, dims.prefix) == (32, 2, 4.0, 16, 1)


# ------------------------------------------------------------------------ naive reference
def test_masked_full_forward_equals_token_dropping():
    vit = _tiny_vit(1)
    x = torch.randn(4, 3, 64, 64)
    idx = _idx(4, 16, 5, seed=2)
    with torch.no_grad():
        ref = forward_kept_tokens(vit, x, idx)[0]
        got = bd.masked_full_forward(vit, x, idx)
    assert got.shape == ref.shape == (4, 5, 32)
    assert ((got - ref).norm() / ref.norm()).item() < 1e-5


@pytest.mark.parametrize("mode,combine", [("joint", "sum"), ("joint", "product"), ("affinity", "sum"),
                                          ("agreement", "sum"), ("mean", "sum")])
def test_naive_gating_matches_consensus_gating(mode, combine):
    g = torch.Generator().manual_seed(3)
    k, b, n, d = 3, 2, 10, 6
    student = torch.randn(b, n, d, generator=g)
    maps = torch.randn(k, b, n, d, generator=g)
    seen = torch.rand(k, b, n, generator=g) < 0.5
    seen[:, 0, 0] = False  # a position no teacher saw
    ref = consensus_gating(student, maps, seen, mode=mode, combine=combine, temperature=0.1)
    target, has_target, weights = bd.naive_gating(student, list(maps), list(seen), mode=mode, combine=combine,
                                                  temperature=0.1)
    assert torch.equal(has_target, ref.has_target)
    torch.testing.assert_close(torch.stack(weights), ref.weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(target, ref.target, rtol=1e-5, atol=1e-6)
    assert target[0, 0].abs().sum() == 0


# ------------------------------------------------------------------------- JPEG folders
def _write_jpegs(folder: Path, sizes, seed=0) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        # smooth content (JPEG-friendly): a gradient plus noise, per class folder
        yy, xx = np.mgrid[0:h, 0:w]
        arr = np.stack([(xx * 255 / w), (yy * 255 / h), np.full((h, w), 128.0)], -1) + rng.normal(0, 5, (h, w, 3))
        p = folder / "train" / f"c{i % 2}" / f"im{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr.clip(0, 255).astype(np.uint8)).save(p, quality=95)
        paths.append(p)
    return paths


# ----------------------------------------------------------------- package and tool, tiny
@pytest.fixture(scope="module")
def tiny_photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    _write_jpegs(root, [(80, 96), (96, 80), (90, 90), (72, 100)] * 2, seed=1)
    return root


@pytest.fixture(scope="module")
def teachers_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("teachers")


def _settings(out: Path, teachers: Path, **kw) -> bd.Settings:
    """The tiny CPU settings of the tests (what ``--tiny --batches 2 --steps 1 --warmup 0
    --workers 0 --rounds 1 --no-e2e`` resolves to), with ``kw`` replaced."""
    base = dict(device=torch.device("cpu"), preset="tiny", batches=[2], variants=["naive", "shipped"], steps=1,
                e2e_steps=1, rounds=1, warmup=0, workers=0, prefetch=2, out=out, teachers_dir=teachers)
    return bd.Settings(**{**base, **kw})


def _tool(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, timeout=600)


def test_step_flop_model_equals_the_counter_on_whole_tiny_steps(teachers_dir):
    """One whole training step of each kind (forward, backward, AdamW) on the tiny preset, counted
    by FlopCounterMode (model FLOPs for fused attention), against the hand model per image. The
    counter also sees the gating's einsums, which the hand model leaves out as negligible:
    affinity K·N·D, pairwise agreement K²·N·D, fused target K·N·D multiply-adds."""
    preset = bd.PRESETS["tiny"]
    model, parts = bd.build_parts(preset, bd.write_teachers(preset, teachers_dir), torch.device("cpu"))
    b = 2
    x = torch.randn(b, 3, preset["img_size"], preset["img_size"])
    assert bd.count_flops(lambda: bd.NaiveStep(parts)(x, 0)) == b * bd.flops_for(parts, naive=True)["total"]
    k, n, d = len(parts.teachers), parts.mask_generator.num_positions, parts.student.embed_dim
    gating = 2 * n * d * (k + k * k + k)
    shipped = bd.count_flops(lambda: bd.ShippedStep(model, None)(x, 0))
    assert shipped == b * (bd.flops_for(parts, naive=False)["total"] + gating)


@pytest.mark.heavy
def test_tool_tiny_cpu_run_writes_table_csv_json(tmp_path, tiny_photos, teachers_dir):
    out = tmp_path / "out"
    proc = _tool("--device", "cpu", "--tiny", "--batches", "2", "--steps", "1", "--warmup", "1", "--workers", "0",
                 "--rounds", "2", "--e2e-steps", "1",
                 "--variants", "naive,shipped", "--data", str(tiny_photos), "--out", str(out),
                 "--teachers-dir", str(teachers_dir))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "img/s" in text and "MFU" in text and "b/a" in text
    rows = list(csv.DictReader(io.StringIO((out / "benchmark_distill.csv").read_text())))
    assert list(rows[0]) == bd.COLUMNS
    assert [(r["variant"], r["data"]) for r in rows] == [("naive", "model"), ("shipped", "model"), ("naive", "e2e"),
                                                          ("shipped", "e2e"), ("shipped", "align-fit")]
    assert (out / "benchmark_distill.txt").read_text() in text
    js = json.loads((out / "benchmark_distill.json").read_text())
    meta = js["meta"]
    assert meta["matmul_peak"]["fp32"]["tflops"] > 0 and "fp32" in meta["mfu_denominator"]
    assert meta["fused_attention"] == {"teacher_mae": True, "teacher_ibot": True, "teacher_mocov3": True,
                                       "student": True, "decoder": True}
    assert meta["teacher_params_trainable_or_with_grad"] == 0
    by = {(r["variant"], r["data"]): r for r in js["rows"]}
    fit = by.pop(("shipped", "align-fit"))  # the one-off fit: timed twice, no throughput columns
    assert fit["status"] == "ok" and fit["steps"] == 2 and fit["fit_s"] > 0 and fit.get("img_per_s") is None
    for r in by.values():
        assert r["status"] == "ok" and r["steps"] == 2 and len(r["per_step_ms"]) == 2  # 2 rounds of 1 step
        assert r["img_per_s"] > 0 and math.isclose(r["ms_per_step"], 1e3 * 2 / r["img_per_s"], rel_tol=1e-9)
        assert math.isclose(r["tflops"], r["gflop_per_img"] * r["img_per_s"] / 1e3, rel_tol=1e-9)
        assert math.isclose(r["mfu"], r["tflops"] / meta["matmul_peak"]["fp32"]["tflops"], rel_tol=1e-9)
    # FLOPs per image of the tiny config, from the same formula the tests above check by hand
    f = meta["flops_per_image"]
    assert by[("naive", "model")]["gflop_per_img"] == pytest.approx(f["naive"]["total"] / 1e9)
    assert f["naive"]["total"] > f["shipped"]["total"]
    assert by[("shipped", "model")]["b_over_a"] == pytest.approx(by[("shipped", "model")]["img_per_s"] / by[("naive", "model")]["img_per_s"])
    assert by[("shipped", "e2e")]["e2e_over_model"] == pytest.approx(by[("shipped", "e2e")]["img_per_s"] / by[("shipped", "model")]["img_per_s"])
    assert by[("naive", "model")]["b_over_a"] is None


def test_without_the_distiller_the_naive_rows_run_and_the_reason_is_named(tmp_path, teachers_dir, monkeypatch):
    monkeypatch.setattr(bench_context, "load_distiller",
                        lambda: (None, "comad.distiller is not importable (No module named 'mmengine')"))
    out = tmp_path / "out"
    rc = bd.run_benchmark(_settings(out, teachers_dir))
    assert rc == 3
    js = json.loads((out / "benchmark_distill.json").read_text())
    status = {r["variant"]: r["status"] for r in js["rows"]}
    assert status["naive"] == "ok"
    assert "mmengine" in status["shipped"] and status["shipped"].startswith("failed")
    assert js["meta"]["distiller_available"] is False and "mmengine" in js["meta"]["distiller_missing_reason"]


@pytest.mark.heavy
def test_option_rows_profile_and_the_model_restored(tmp_path, teachers_dir, capsys):
    """+bf16t and +compile rows run through the distiller's own switches (compile last), the
    profile records every phase, and the model is left as it was configured."""
    out = tmp_path / "out"
    rc = bd.run_benchmark(_settings(out, teachers_dir, warmup=1, profile=True,
                                    variants=["naive", "shipped+compile", "shipped+bf16t", "shipped+bf16"]))
    assert rc == 0
    js = json.loads((out / "benchmark_distill.json").read_text())
    assert [r["variant"] for r in js["rows"]] == ["naive", "shipped+bf16t", "shipped+bf16", "shipped+compile"]
    by = {r["variant"]: r for r in js["rows"]}
    assert by["shipped+bf16t"]["note"] == "bf16 teachers; MFU vs the bf16 matmul peak"
    assert by["shipped+compile"]["note"].startswith("warm-up incl. compile")
    peaks = js["meta"]["matmul_peak"]
    assert math.isclose(by["shipped+bf16t"]["mfu"], by["shipped+bf16t"]["tflops"] / peaks["bf16"]["tflops"], rel_tol=1e-9)
    prof = js["meta"]["profile"]
    assert set(prof) == {"shipped+bf16t", "shipped+bf16", "shipped+compile"}
    assert set(prof["shipped+bf16t"]["phases"]["host_ms"]) == {"masks", "teachers", "student+losses", "backward", "optimizer"}
    assert "phases" not in prof["shipped+compile"] and prof["shipped+compile"]["wall_ms"] > 0
    assert "profile shipped+bf16t (B=2)" in capsys.readouterr().out


def test_variant_names_and_the_configured_model(tmp_path):
    assert bd.parse_variant("naive") == ("naive", frozenset())
    assert bd.parse_variant("shipped+compile+bf16t") == ("shipped", frozenset({"compile", "bf16t"}))
    for bad in ("fast", "naive+compile", "shipped+fp8", "shipped+bf16t+bf16t"):
        with pytest.raises(ValueError, match=f"variant '{re.escape(bad)}': expected 'naive' or 'shipped'"):
            bd.parse_variant(bad)
    model, _ = bd.build_parts(bd.PRESETS["tiny"], bd.write_teachers(bd.PRESETS["tiny"], tmp_path), torch.device("cpu"))
    assert model.compile_cfg is None and {t.precision for t in model.teachers} == {"amp"}
    with bd.configured(model, frozenset({"bf16t", "compile"})):
        assert model.compile_cfg == {} and {t.vit.pos_embed.dtype for t in model.teachers} == {torch.bfloat16}
    assert model.compile_cfg is None and {t.vit.pos_embed.dtype for t in model.teachers} == {torch.float32}


def test_settings_refuse_bad_values_naming_the_field(tmp_path):
    cases = [(dict(variants=["naive", "fast"]), "variants", "variant 'fast'"),
             (dict(device=torch.device("cuda"), variants=["shipped+bf16"]), "variants", r"\+bf16 is the CPU's autocast"),
             (dict(e2e_variants=["shipped+bf16t"]), "e2e_variants", r"\['shipped\+bf16t'\] not among"),
             (dict(preset="huge"), "preset", "huge")]
    for kw, field, msg in cases:
        with pytest.raises(bd.SettingsError, match=msg) as err:
            _settings(tmp_path, tmp_path, **kw)
        assert err.value.field == field
    with pytest.raises(bd.SettingsError, match="expected kinds among") as err:
        bd.run_benchmark(_settings(tmp_path / "o", tmp_path, data_kinds=["model", "e2e-disk"]))
    assert err.value.field == "data_kinds"


def test_tool_bad_options_are_named(tmp_path):
    cases = [(["--batches", "a,b"], "--batches"),
             (["--data", str(tmp_path)], "--data .*train/"),
             (["--variants", "naive,fast"], "--variants"),
             (["--variants", "naive,shipped", "--e2e-variants", "shipped+bf16t"], r"--e2e-variants: \['shipped\+bf16t'\] not among")]
    for args, msg in cases:
        proc = _tool("--device", "cpu", "--tiny", *args, "--out", str(tmp_path / "o"))
        assert proc.returncode != 0 and re.search(msg, proc.stderr), (args, proc.stderr)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_runners_alone_and_a_new_row_kind_as_one_class(tmp_path, teachers_dir, monkeypatch):
    """``Runner.run()`` measures one row by itself; a Runner subclass registered in RUNNERS gets
    its rows in table order (here a one-off row measured in round 0 of 2, shipped only) and its
    failure is recorded in its row while the other rows stand."""
    settings = _settings(tmp_path / "out", teachers_dir, rounds=2, steps=2, data_kinds=["model", "fit"])
    calls = []

    class FitRunner(bd.Runner):
        data = "fit"

        @classmethod
        def wants(cls, variant, settings):
            return variant != "naive"

        def measure(self, r):
            calls.append(r)
            if r == 0:
                self.row.update(steps=1, note=f"fit of {self.variant} at B={self.batch}")

    monkeypatch.setitem(bd.RUNNERS, "fit", FitRunner)
    bench = bd.Bench(settings, teachers_dir)
    row = bd.ModelOnlyRunner(bench, "naive", 2).run()
    assert row["status"] == "ok" and row["steps"] == 4 and len(row["per_step_ms"]) == 4  # 2 rounds of 2
    suite = bd.Suite(bench)
    assert suite.run() == 0
    js = json.loads((settings.out / "benchmark_distill.json").read_text())
    assert [(r["row"], r["variant"], r["data"]) for r in js["rows"]] == [(0, "naive", "model"), (1, "shipped", "model"),
                                                                         (2, "shipped", "fit")]
    assert js["rows"][2]["note"] == "fit of shipped at B=2" and js["rows"][2]["b_over_a"] is None and calls == [0, 1]
    csv_rows = list(csv.DictReader(io.StringIO((settings.out / "benchmark_distill.csv").read_text())))
    assert csv_rows[2]["data"] == "fit" and csv_rows[2]["steps"] == "1"

    def broken(self, r):
        raise RuntimeError("the fit diverged")

    monkeypatch.setattr(FitRunner, "measure", broken)
    assert bd.Suite(bench).run() == 1
    js = json.loads((settings.out / "benchmark_distill.json").read_text())
    assert js["rows"][2]["status"] == "failed: RuntimeError: the fit diverged" and "Traceback" in js["rows"][2]["traceback"]
    assert [r["status"] for r in js["rows"][:2]] == ["ok", "ok"]


def test_tool_loaders_yield_normalised_device_batches(tiny_photos):
    """The CPU-decode end-to-end pipeline of the tool."""
    for kind in ("cpu",):
        batches = list(bd.build_loader(kind, tiny_photos, 32, batch=3, num_batches=2, workers=0,
                                       device=torch.device("cpu"), prefetch=2))
        assert len(batches) == 2
        for x in batches:
            assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and torch.isfinite(x).all()
            assert -3 < x.mean() < 3 and x.std() > 0.05  # normalised photo values, not zeros
    with pytest.raises(ValueError, match="loader kind"):
        next(bd.build_loader("disk", tiny_photos, 32, 3, 1, 0, torch.device("cpu"), 2))


def test_align_fit_row_times_the_fit_that_the_distiller_runs(tmp_path, teachers_dir):
    """The bench fits the alignment before any timed step (so the timed steps are steady-state
    ones), and the ``align-fit`` row times that fit: the statistics, the float64 fit and the
    fitted adapters' forward, with the fit reproducing the maps the distiller installed."""
    from comad.align import fit_from_moments, moments
    from comad.models.vit import scatter_tokens

    settings = _settings(tmp_path / "out", teachers_dir, variants=["shipped"], data_kinds=["model", "align-fit"])
    bench = bd.Bench(settings, teachers_dir)
    m = bench.model
    assert m.alignment.method == "gcca" and not m.alignment.pending and not m.fit_pending()
    row = bd.AlignFitRunner(bench, "shipped", 2).run()
    assert row["status"] == "ok" and row["fit_s"] > 0 and row["moments_ms"] > 0 and row["adapter_ms"] > 0
    assert row["ms_per_step"] == row["adapter_ms"] and row["note"].startswith("align='gcca': fit ")
    assert "joint width 96" in row["note"]  # three tiny teachers of width 32
    # what the row fits is what the distiller fits: the same statistics give the installed maps
    preset = bd.PRESETS["tiny"]
    x = torch.randn(1, 3, preset["img_size"], preset["img_size"], generator=torch.Generator().manual_seed(0))
    masks = m.make_masks(1, torch.device("cpu"), step=0)
    toks = [t(x, idx, layers=(layer,)) for t, layer, idx in zip(m.teachers, m.teacher_layers, masks.teachers)]
    shared = masks.teacher_masks().all(0)
    feats = [scatter_tokens(t, idx, masks.num_positions)[shared] for t, idx in zip(toks, masks.teachers)]
    maps = fit_from_moments(moments(torch.cat(feats, -1)), m.alignment.dims, m.alignment.out_dim, "gcca")
    for adapter, (w, b) in zip(m.adapters, maps):
        assert torch.allclose(adapter.proj.weight.double(), w, atol=1e-5)
        assert torch.allclose(adapter.proj.bias.double(), b, atol=1e-5)
    assert bd.RUNNERS["align-fit"] is bd.AlignFitRunner


def test_dali_and_decode_rate_rows(tmp_path, tiny_photos, teachers_dir):
    """``e2e-dali`` (DALI's CPU mode here) is an end-to-end row of the shipped step with its ratio
    to model-only; ``decode-cpu`` is one row per run with the torch path's rate on one core and
    no step ratios; the meta records the JPEGs' sizes."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e '.[dali]')")
    out = tmp_path / "out"
    settings = _settings(out, teachers_dir, batches=[2, 3], rounds=2, workers=1, data=tiny_photos,
                         data_kinds=["model", "e2e-dali", "decode-cpu"])
    assert bd.run_benchmark(settings) == 0
    js = json.loads((out / "benchmark_distill.json").read_text())
    rows = [(r["variant"], r["data"], r["batch"]) for r in js["rows"]]
    assert rows == [("naive", "model", 2), ("shipped", "model", 2), ("shipped", "e2e-dali", 2), ("-", "decode-cpu", 2),
                    ("naive", "model", 3), ("shipped", "model", 3), ("shipped", "e2e-dali", 3)]
    by = {(r["variant"], r["data"], r["batch"]): r for r in js["rows"]}
    dali, model = by[("shipped", "e2e-dali", 2)], by[("shipped", "model", 2)]
    assert dali["status"] == "ok" and dali["e2e_over_model"] == pytest.approx(dali["img_per_s"] / model["img_per_s"])
    dec = by[("-", "decode-cpu", 2)]
    assert dec["status"] == "ok" and dec["steps"] == 2 * bd.DecodeRateRunner.images and dec["img_per_s"] > 0
    assert dec["e2e_over_model"] is None and dec["b_over_a"] is None and "load average" in dec["note"]
    assert js["meta"]["data_files"]["files"] == 8 and js["meta"]["data_files"]["mean_kb"] > 0
    batches = list(bd.build_loader("dali", tiny_photos, 32, batch=3, num_batches=2, workers=1,
                                   device=torch.device("cpu"), prefetch=1))
    assert len(batches) == 2 and all(x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 for x in batches)
    assert all(-3 < x.mean() < 3 and x.std() > 0.05 for x in batches)
