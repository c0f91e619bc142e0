"""The claims design's new parts (issue 20): mask schemes, pairing across units, the dense probe's
scenes, its mIoU and the bootstrap of mIoU differences, against hand computations."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from comad.masking import indices_to_mask
from experiments.evidence import preset
from experiments.evidence.dense import BACKGROUND, decode, encode, iou_counts, make_scenes, miou, patch_pixels
from experiments.evidence.designs import CLAIMS_CONDITIONS, CLAIMS_DIFFERENCES, Condition
from experiments.evidence.masks import scheme_masks
from experiments.evidence.stats import paired_bootstrap_miou


def test_mask_schemes_are_what_their_names_say():
    cfg = preset("cpu")  # 7 x 7 grid, the student at 25 %
    m = scheme_masks(cfg, seed=0, step=5, batch=6, schemes=["nested", "full", "symmetric", "independent", "student50"])
    n = cfg.grid ** 2
    s = m["nested"].student
    assert s.shape == (6, 12)
    for name in ("full", "symmetric", "independent"):  # the same student mask: only the teachers differ
        assert torch.equal(m[name].student, s)
    student = indices_to_mask(s, n)
    for t, keep in zip(m["nested"].teachers, (0.50, 0.65, 0.80)):
        assert t.shape[1] == round(keep * n) and (indices_to_mask(t, n) | ~student).all()  # contains the student's
    assert all(t.shape[1] == n for t in m["full"].teachers)
    assert all(torch.equal(t, s) for t in m["symmetric"].teachers)
    ind = [indices_to_mask(t, n) for t in m["independent"].teachers]
    assert [t.shape[1] for t in m["independent"].teachers] == [t.shape[1] for t in m["nested"].teachers]
    assert not all(bool((i | ~student).all()) for i in ind)  # not nested
    assert m["student50"].student.shape[1] == round(0.5 * n)
    assert (indices_to_mask(m["student50"].teachers[0], n) | ~indices_to_mask(m["student50"].student, n)).all()
    again = scheme_masks(cfg, 0, 5, 6, ["independent"])["independent"]  # a function of (seed, step) only
    assert all(torch.equal(a, b) for a, b in zip(again.teachers, m["independent"].teachers))
    # the first evidence run's draw: MaskGenerator seeded by SeedSequence([seed, step, 7])
    from comad.masking import MaskGenerator
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([0, 5, 7]).generate_state(1)[0]))
    old = MaskGenerator(n, 0.25, [0.50, 0.65, 0.80], nested=True)(6, generator=g)
    assert torch.equal(old.student, s) and all(torch.equal(a, b) for a, b in zip(old.teachers, m["nested"].teachers))


def test_claims_design_is_paired_and_complete():
    names = [c.name for c in CLAIMS_CONDITIONS]
    assert len(set(names)) == len(names)
    for d in CLAIMS_DIFFERENCES:
        assert d.a in names and d.b in names and d.claim in {"1", "2", "3", "4", "A"}
    default = next(c for c in CLAIMS_CONDITIONS if c.name == "default")
    assert default == Condition("default", default.label, ("dinov2", "mnv2", "lite0"), group="core")
    # every one-knob comparison against the default changes exactly the knob it names
    one_knob = {"mean": "gating", "affinity": "gating", "agreement": "gating", "token_only": "loss",
                "map_only": "loss", "teachers_full": "masks", "symmetric": "masks", "independent": "masks",
                "student50": "masks", "per_teacher": "fusion"}
    fields = ("teachers", "gating", "align", "masks", "loss", "fusion", "standardize", "drop")
    for name, knob in one_knob.items():
        c = next(c for c in CLAIMS_CONDITIONS if c.name == name)
        assert [f for f in fields if getattr(c, f) != getattr(default, f)] == [knob], name


def test_conditions_in_different_units_of_a_seed_share_the_student_init(tmp_path):
    from experiments.evidence.teachers import prepare_teachers
    from experiments.evidence.train import build_lockstep

    cfg = preset("tiny")
    files = prepare_teachers(cfg, tmp_path)
    core, masking = build_lockstep(cfg, 1, files, "core"), build_lockstep(cfg, 1, files, "masking")
    assert set(masking.models) == {"teachers_full", "symmetric", "independent", "student50"}
    assert all(torch.equal(v, masking.initial_student[k]) for k, v in core.initial_student.items())
    other = build_lockstep(cfg, 2, files, "masking")
    assert not all(torch.equal(v, other.initial_student[k]) for k, v in core.initial_student.items())


def test_scene_labels_are_the_item_under_each_patch_centre():
    rng = np.random.default_rng(0)
    images = (rng.random((30, 28, 28)) * 255).astype(np.uint8)
    images[:, :4] = 0  # a dark band: some of each item is background
    labels = np.arange(30) % 10
    sc = make_scenes(images, labels, count=20, size=56, patch=8, items=3, seed=5)
    assert sc.images.shape == (20, 56, 56) and sc.labels.shape == (20, 49)
    centre = sc.images[:, 4::8, 4::8].reshape(20, -1)
    assert ((sc.labels == BACKGROUND) == (centre == 0)).all()  # covered pixels are >= 16, the rest black
    assert 0.05 < (sc.labels == BACKGROUND).mean() < 0.95 and len(np.unique(sc.labels)) > 5
    again = make_scenes(images, labels, 20, 56, 8, 3, seed=5)
    assert np.array_equal(again.images, sc.images) and not np.array_equal(make_scenes(images, labels, 20, 56, 8, 3, 6).images, sc.images)
    assert patch_pixels(sc.images, 8).shape == (20, 49, 64)
    assert np.array_equal(decode(encode(sc.labels), 49), sc.labels)


def test_miou_and_its_bootstrap_match_hand_computations():
    labels = np.array([[0, 0, BACKGROUND, BACKGROUND], [1, 1, BACKGROUND, 0]])
    pred = np.array([[0, 1, BACKGROUND, BACKGROUND], [1, 1, BACKGROUND, BACKGROUND]])
    inter, union = iou_counts(pred, labels)
    # class 0: I 1, U 3; class 1: I 2, U 3; background: I 3, U 4
    assert miou(inter.sum(0), union.sum(0)) == pytest.approx(100 * (1 / 3 + 2 / 3 + 3 / 4) / 3)
    # a perfect condition against this one, two seeds the same: the difference and a degenerate interval
    perfect = iou_counts(labels, labels)
    a = tuple(np.stack([x, x]) for x in perfect)
    b = tuple(np.stack([x, x]) for x in (inter, union))
    r = paired_bootstrap_miou(a, b, 300)
    assert r["diff"] == pytest.approx(100 - 100 * (1 / 3 + 2 / 3 + 3 / 4) / 3) and r["same_sign"]
    assert r["ci_low"] <= r["diff"] <= r["ci_high"] and r["ci_seeds_low"] <= r["ci_low"] + 1e-9
    same = paired_bootstrap_miou(a, a, 100)
    assert (same["diff"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
