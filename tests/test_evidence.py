"""The evidence pipeline in its tiny form: random tiny teachers in the real layouts, a Fashion-MNIST
look-alike in the real idx format, two seeds of a few steps, a pool of two processes; CSV, Markdown,
PNG; reuse (also from the results' copy of the units, as on another machine), exact resume, the
pairing by seed across units, the mask schemes, the dense probe's scenes and the bootstraps
against hand computations."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from comad.data.idx import read_idx, write_idx
from experiments.evidence import CONDITIONS, preset, run_evidence
from experiments.evidence import train as train_mod
from experiments.evidence.designs import CLAIMS_CONDITIONS, CLAIMS_DIFFERENCES, GATING_CONDITIONS, GATING_DIFFERENCES
from experiments.evidence.data import FILES, load_fashion_mnist
from experiments.evidence.run import parse_overrides
from experiments.evidence.stats import gates_table, paired_bootstrap
from experiments.evidence.units import _gate_summary, unit_names
from experiments.evidence.teachers import SharedTeachers, prepare_teachers
from experiments.evidence.train import build_lockstep, step_masks, train_seed


@pytest.fixture(scope="module")
def fmnist(tmp_path_factory):
    """A 10-class set in the idx layout: each class a bright bar at its own row (learnable, tiny)."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("test", 100)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c: 4 + 2 * c] = 230
        write_idx(images, root / FILES[f"{split}_images"])
        write_idx(labels.astype(np.uint8), root / FILES[f"{split}_labels"])
    return root


def tiny(fmnist, **kw):
    return preset("tiny", data_root=str(fmnist), **kw)


def test_idx_round_trip_and_fixed_disjoint_subsets(fmnist):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(a, fmnist / "x.gz")
    assert np.array_equal(read_idx(fmnist / "x.gz"), a)
    d = load_fashion_mnist(fmnist, train_per_class=4, test_per_class=2)
    assert d.probe_train_x.shape == (40, 28, 28) and d.probe_test_x.shape == (20, 28, 28) and len(d.pool) == 360
    assert np.array_equal(np.bincount(d.probe_train_y), [4] * 10)
    pool = {x.tobytes() for x in d.pool}
    assert not any(x.tobytes() in pool for x in d.probe_train_x)  # no probe image is distilled on
    again = load_fashion_mnist(fmnist, train_per_class=4, test_per_class=2)
    assert np.array_equal(again.probe_test_x, d.probe_test_x) and np.array_equal(d.order(1, 8), again.order(1, 8))
    assert not np.array_equal(d.order(1, 8), d.order(2, 8))
    two = d.order(1, 2 * len(d.pool) + 5)  # several epochs: each a permutation of the pool
    assert np.array_equal(two[:8], d.order(1, 8)) and np.array_equal(np.sort(two[:len(d.pool)]), np.arange(len(d.pool)))
    assert np.array_equal(np.sort(two[len(d.pool):2 * len(d.pool)]), np.arange(len(d.pool)))
    assert not np.array_equal(two[:len(d.pool)], two[len(d.pool):2 * len(d.pool)])
    with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
        load_fashion_mnist(fmnist / "nowhere")


def test_paired_bootstrap_matches_hand_computations():
    ones = np.ones((3, 50))
    r = paired_bootstrap(ones, 200)
    assert r["diff"] == 100.0 and (r["ci_low"], r["ci_high"]) == (100.0, 100.0) and r["same_sign"]
    d = np.zeros((2, 100))
    d[0, :10] = 1  # seed 0: +10 points, seed 1: 0
    r = paired_bootstrap(d, 4000, seed=0)
    assert r["diff"] == pytest.approx(5.0) and r["per_seed"] == "+10.0 +0.0" and not r["same_sign"]
    # images resampled: the mean of 100 values of which 10 are 0.5 -> sd of the mean 100 * sqrt(.5^2 * .09 / 100)
    assert (r["ci_high"] - r["ci_low"]) / (2 * 1.96) == pytest.approx(100 * (0.25 * 0.09 / 100) ** 0.5, rel=0.15)
    assert r["ci_seeds_low"] <= r["ci_low"] and r["ci_seeds_high"] >= r["ci_high"]  # seeds add their spread


def test_gates_table_averages_the_last_half_of_training_per_seed():
    key = "gate_shared_lite0_random"
    logs = {0: [{f"corrupt_joint/{key}": v} for v in (0.9, 0.9, 0.2, 0.4)], 1: [{f"corrupt_joint/{key}": v} for v in (0.0, 0.6)]}
    units = [dict(unit=f"seed{s}", entries={"corrupt_joint": {"train": _gate_summary(log, "corrupt_joint")}})
             for s, log in logs.items()]
    g = gates_table(units).set_index("teacher")
    assert list(g.condition.unique()) == ["corrupt_joint"]  # only logged keys make rows
    assert g.loc["lite0_random", "per_seed"] == "0.300 0.600"  # seed 0: mean(0.2, 0.4); seed 1: 0.6
    assert g.loc["lite0_random", "gate_shared_mean"] == pytest.approx(0.45)
    assert g.loc["lite0_random", "gate_shared_std"] == pytest.approx(np.std([0.3, 0.6], ddof=1))


def test_conditions_of_a_seed_share_the_init_the_masks_and_the_teachers(fmnist, tmp_path):
    cfg = tiny(fmnist, design="main")
    files = prepare_teachers(cfg, tmp_path)
    ls = build_lockstep(cfg, 3, files)
    assert set(ls.models) == {c.name for c in CONDITIONS if c.teachers}
    first = next(iter(ls.models.values()))
    for m in ls.models.values():
        assert all(torch.equal(a, b) for a, b in zip(first.student.state_dict().values(), m.student.state_dict().values()))
        assert all(any(t is s for s in ls.teachers.values()) for t in m.teachers)  # one shared instance per file
    assert len(ls.teachers) == 6 and ls.teachers["dinov2"].img_size == 14 * cfg.grid
    a, b = step_masks(ls, 4, 5, "cpu"), step_masks(ls, 4, 5, "cpu")
    assert torch.equal(a.student, b.student) and not torch.equal(a.student, step_masks(ls, 4, 6, "cpu").student)
    loader = SharedTeachers()
    assert loader(files["mnv2"], grid=2) is loader(files["mnv2"], grid=2)


def test_an_interrupted_unit_resumes_to_the_uninterrupted_result(fmnist, tmp_path, monkeypatch):
    """The claims design's `teachers` unit (the corrupted teacher under the anchors' dropping with
    standardisation, the random-weight control, ...): the moving statistics and the dropping resume exactly."""
    cfg = tiny(fmnist, checkpoint_minutes=1e-9)  # save after every step
    files = prepare_teachers(cfg, tmp_path)
    data = load_fashion_mnist(fmnist, 4, 2)
    ref, _ = train_seed(dataclasses.replace(cfg, checkpoint_minutes=0.0), 0, files, data, tmp_path / "ref",
                        group="teachers")
    real_step = train_mod.train_step

    def crash_at_2(ls, x, step):
        if step == 2:
            raise KeyboardInterrupt("crash")
        return real_step(ls, x, step)

    monkeypatch.setattr(train_mod, "train_step", crash_at_2)
    with pytest.raises(KeyboardInterrupt):
        train_seed(cfg, 0, files, data, tmp_path / "unit", group="teachers")
    assert torch.load(tmp_path / "unit" / "train_state.pth", weights_only=True)["step"] == 2
    monkeypatch.setattr(train_mod, "train_step", real_step)
    resumed, log = train_seed(cfg, 0, files, data, tmp_path / "unit", group="teachers")
    assert [row["step"] for row in log] == [0, 1, 2]
    assert "standardizer.mean" in ref.models["corrupt_drop"].state_dict()
    for name in ("corrupt_drop", "control"):
        want, got = ref.models[name].state_dict(), resumed.models[name].state_dict()
        assert all(torch.equal(want[k], got[k]) for k in want if want[k].is_floating_point()), name


def test_tiny_run_end_to_end_on_two_workers_then_reused(fmnist, tmp_path):
    cfg = tiny(fmnist)  # the claims design: three groups of conditions, the dense probe
    out = run_evidence(cfg, tmp_path / "work", tmp_path / "results", show=False)
    res = tmp_path / "results"
    assert {p.name for p in res.iterdir()} >= {"evidence.csv", "differences.csv", "teachers.csv", "evidence.md",
                                               "evidence.png", "run.json", "claims.csv", "units"}
    scores, diffs = pd.read_csv(res / "evidence.csv"), pd.read_csv(res / "differences.csv")
    assert list(scores.condition) == [c.name for c in CLAIMS_CONDITIONS] and len(diffs) == 3 * len(CLAIMS_DIFFERENCES)
    assert set(diffs.probe) == {"linear", "knn", "dense"} and scores.dense_mean.between(0, 100).all()
    assert scores.linear_mean.between(0, 100).all() and (diffs.ci_low <= diffs["diff"]).all()
    teachers = pd.read_csv(res / "teachers.csv")
    assert len(teachers) == 7 and teachers.dense.between(0, 100).all()  # 3 real, 3 random, the pixels
    assert (res / "evidence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    claims = pd.read_csv(res / "claims.csv")
    assert len(claims) == len(CLAIMS_DIFFERENCES) and claims.claim.str.startswith(("1:", "2:", "3:", "4:", "A:")).all()
    md = (res / "evidence.md").read_text()
    assert md.index("## Claims") < md.index("## Scores") and "joint gating vs the mean" in md
    assert "random_init" in out["summary"] and "dense mIoU" in out["summary"]
    gates = pd.read_csv(res / "gates.csv")
    mean_rows = gates[gates.gating == "mean"]
    assert len(mean_rows) and np.allclose(mean_rows.gate_shared_mean, 1 / 3, atol=1e-3)  # 1/K under mean (CSV at 4 decimals)
    for _, g in gates[gates.gating == "joint"].groupby("condition"):
        assert len(g) == 3 and abs(g.gate_shared_mean.sum() - 1.0) < 0.05  # a distribution over the teachers
    names = unit_names(cfg)
    assert len(names) == 2 * 3 + 2 and {p.stem for p in (out["run_dir"] / "logs").glob("*.log")} == set(names)
    units = sorted((out["run_dir"] / "units").glob("*.json"))  # the teachers' probes are shared by runs
    units += sorted((out["run_dir"].parent / "teacher-units").glob("*/*.json"))
    assert {u.stem for u in units} == set(names) == {u.stem for u in (res / "units").glob("*.json")}
    core = json.loads((out["run_dir"] / "units" / "seed0-core.json").read_text())["entries"]
    assert set(core) == {c.name for c in CLAIMS_CONDITIONS if c.group == "core"}
    assert core["default"]["train"]["gate_shared_dinov2"] > 0 and len(core["default"]["linear_correct"]) == 20
    fusion = core
    assert 0.5 <= fusion["per_teacher_drop"]["train"]["keep_dinov2"] <= 1 and fusion["per_teacher"]["train"]["keep_mnv2"] == 1
    assert len(fusion["per_teacher"]["dense_pred"]) == 4 * cfg.grid ** 2  # 4 test scenes x 4 patches
    stamps = {u: u.stat().st_mtime_ns for u in units}
    again = run_evidence(cfg, tmp_path / "work", tmp_path / "results2", show=False)
    assert {u: u.stat().st_mtime_ns for u in units} == stamps  # nothing redone
    assert pd.read_csv(tmp_path / "results2" / "evidence.csv").equals(scores)
    # another machine: a fresh work dir, the committed results' units: nothing is recomputed
    other = run_evidence(cfg, tmp_path / "elsewhere", res, show=False)
    assert not list((other["run_dir"] / "logs").glob("*.log")) and pd.read_csv(res / "evidence.csv").equals(scores)
    assert again["summary"].splitlines()[:12] == out["summary"].splitlines()[:12]


def test_the_gating_design_trains_its_own_conditions_paired_with_the_main_design(fmnist, tmp_path):
    threads = torch.get_num_threads()
    main = run_evidence(tiny(fmnist, seeds=(0,), workers=1, design="main"), tmp_path / "w1", tmp_path / "r1", show=False)
    assert torch.get_num_threads() == threads  # in-process units leave the caller's thread count alone
    gating = run_evidence(tiny(fmnist, seeds=(0,), workers=1, design="gating"), tmp_path / "w2", tmp_path / "r2",
                          show=False)
    scores, diffs = gating["tables"]["scores"], gating["tables"]["differences"]
    assert list(scores.condition) == [c.name for c in GATING_CONDITIONS]
    assert list(diffs.question.unique()) == [d.question for d in GATING_DIFFERENCES]
    seed_main, seed_gating = (json.loads((r["run_dir"] / "units" / "seed0-all.json").read_text())["entries"]
                              for r in (main, gating))
    for name in ("mean", "corrupt_mean", "corrupt_joint"):  # the same seed: the same data, masks, init, result
        assert seed_gating[name]["linear_correct"] == seed_main[name]["linear_correct"], name
        assert seed_gating[name]["train"] == pytest.approx(seed_main[name]["train"], rel=1e-5), name
    with pytest.raises(ValueError, match="design 'nope': choose one of"):
        tiny(fmnist, design="nope")


def test_a_field_added_later_at_its_default_leaves_stored_results_valid():
    import hashlib

    cfg = preset("cpu")
    later = ("design", "dense_train_scenes", "dense_test_scenes", "dense_items", "dense_c", "dense_max_iter")
    d = {k: v for k, v in cfg.to_dict().items() if k not in ("workers", "checkpoint_minutes", "name", "data_root", *later)}
    before = hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cfg.fingerprint() == before  # the fingerprint the stored main-design results were made with
    assert preset("cpu", design="gating").fingerprint() != before


def test_overrides_are_typed_and_checked():
    assert parse_overrides(["steps=5", "seeds=0,2", "lr=0.1"]) == dict(steps=5, seeds=(0, 2), lr=0.1)
    with pytest.raises(ValueError, match="expected FIELD=VALUE with FIELD one of"):
        parse_overrides(["nonsense=1"])
    with pytest.raises(ValueError, match="unknown fields"):
        preset("tiny", probes=3)
