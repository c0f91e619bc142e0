"""What the evidence run measures, fixed before it runs: presets, teachers, conditions, comparisons.

Everything the evaluation depends on (the probe subsets, the probe hyper-parameters, the seeds,
the comparisons and how an interval is read) is a field here with its value chosen before any
result was seen; ``docs/evidence.md`` states them. A preset only changes sizes (image side,
steps, subset sizes, seeds, device), never the evaluation's rules.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TeacherSpec", "Condition", "EvidenceConfig", "TEACHERS", "CONDITIONS", "DIFFERENCES", "DESIGNS", "PRESETS",
           "preset", "teacher_key"]


@dataclass(frozen=True)
class TeacherSpec:
    """One of the three teacher architectures.

    Attributes:
        name: short name (``dinov2``, ``mnv2``, ``lite0``); label: for tables.
        layer: the ViT block / CNN tap read (DINOv2: block 8, the CNNs: their last stride-16 tap).
        keep: its mask's keep ratio (the mask slot every condition uses for this architecture).
        num_heads: given to the loader for a ViT (its file states none).
    """

    name: str
    label: str
    layer: int
    keep: float
    num_heads: int | None = None


TEACHERS: tuple[TeacherSpec, ...] = (
    TeacherSpec("dinov2", "DINOv2-S/14 (block 8)", layer=8, keep=0.50, num_heads=6),
    TeacherSpec("mnv2", "MobileNetV2 (features.13)", layer=-1, keep=0.65),
    TeacherSpec("lite0", "EfficientNet-Lite0 (blocks.4.2)", layer=-1, keep=0.80),
)


def teacher_key(name: str, real: bool) -> str:
    """``dinov2`` (the real weights) or ``dinov2_random`` (the same architecture, library init)."""
    return name if real else f"{name}_random"


@dataclass(frozen=True)
class Condition:
    """One way of training the student (or not): its teachers (keys of :func:`teacher_key`),
    gating mode and alignment; no teachers = the random-init student, evaluated untrained."""

    name: str
    label: str
    teachers: tuple[str, ...] = ()
    gating: str = "joint"
    align: str = "gcca"


_REAL = ("dinov2", "mnv2", "lite0")
CONDITIONS: tuple[Condition, ...] = (
    Condition("random_init", "random-init student (untrained)"),
    Condition("control", "random-weight teachers x3, joint, gcca", ("dinov2_random", "mnv2_random", "lite0_random")),
    Condition("dinov2", "DINOv2 alone", ("dinov2",)),
    Condition("mnv2", "MobileNetV2 alone", ("mnv2",)),
    Condition("lite0", "EfficientNet-Lite0 alone", ("lite0",)),
    Condition("mean", "3 real, mean, gcca", _REAL, gating="mean"),
    Condition("joint_gcca", "3 real, joint, gcca (default)", _REAL),
    Condition("joint_procrustes", "3 real, joint, procrustes", _REAL, align="procrustes"),
    Condition("joint_none", "3 real, joint, no alignment", _REAL, align="none"),
    Condition("corrupt_mean", "2 real + random Lite0, mean, gcca", ("dinov2", "mnv2", "lite0_random"), gating="mean"),
    Condition("corrupt_joint", "2 real + random Lite0, joint, gcca", ("dinov2", "mnv2", "lite0_random")),
)

#: The differences reported with intervals, (a, b, question): accuracy of a minus accuracy of b.
DIFFERENCES: tuple[tuple[str, str, str], ...] = (
    ("joint_gcca", "control", "real teachers vs random-weight teachers"),
    ("joint_gcca", "random_init", "distillation vs no training"),
    ("control", "random_init", "random-teacher distillation vs no training"),
    ("joint_gcca", "mean", "joint gating vs the mean"),
    ("corrupt_joint", "corrupt_mean", "joint vs mean with one random teacher"),
    ("joint_gcca", "joint_none", "gcca alignment vs none"),
    ("joint_procrustes", "joint_none", "procrustes alignment vs none"),
    ("joint_gcca", "joint_procrustes", "gcca vs procrustes"),
    ("joint_gcca", "dinov2", "three teachers vs DINOv2 alone"),
    ("joint_gcca", "mnv2", "three teachers vs MobileNetV2 alone"),
    ("joint_gcca", "lite0", "three teachers vs EfficientNet-Lite0 alone"),
)

_CORRUPT = ("dinov2", "mnv2", "lite0_random")
#: A follow-up, chosen after the main run had been read (so exploratory, not part of its fixed
#: design): does a gate without the student's affinity (``gating='agreement'``) down-weight the
#: random-weight teacher that joint gating did not? The same seeds, data order, masks and init.
GATING_CONDITIONS: tuple[Condition, ...] = (
    Condition("mean", "3 real, mean, gcca", _REAL, gating="mean"),
    Condition("agreement", "3 real, agreement, gcca", _REAL, gating="agreement"),
    Condition("corrupt_mean", "2 real + random Lite0, mean, gcca", _CORRUPT, gating="mean"),
    Condition("corrupt_joint", "2 real + random Lite0, joint, gcca", _CORRUPT),
    Condition("corrupt_agreement", "2 real + random Lite0, agreement, gcca", _CORRUPT, gating="agreement"),
)
GATING_DIFFERENCES: tuple[tuple[str, str, str], ...] = (
    ("corrupt_agreement", "corrupt_mean", "agreement vs mean with one random teacher"),
    ("corrupt_agreement", "corrupt_joint", "agreement vs joint with one random teacher"),
    ("corrupt_joint", "corrupt_mean", "joint vs mean with one random teacher (the main run's, again)"),
    ("agreement", "mean", "agreement gating vs the mean"),
)
#: ``EvidenceConfig.design`` -> (conditions, differences).
DESIGNS: dict[str, tuple[tuple[Condition, ...], tuple[tuple[str, str, str], ...]]] = {
    "main": (CONDITIONS, DIFFERENCES),
    "gating": (GATING_CONDITIONS, GATING_DIFFERENCES),
}


#: Fields added after results had been stored, with the value those results were made with.
_ADDED_LATER: dict[str, Any] = {"design": "main"}


@dataclass(frozen=True)
class EvidenceConfig:
    """One evidence run. The evaluation fields (``probe_*``, ``knn_*``, ``bootstrap``, ``split_seed``)
    are the same in every preset.

    Attributes:
        name: the preset; img_size, patch_size: the student's input and patch (grid = img / patch).
        student: the student's arch dict; decoder_depth: the MAE-style decoder's blocks.
        steps, batch_size: the distillation (images per student = steps x batch_size, each seen once).
        lr, weight_decay, betas, warmup_steps: AdamW with linear warm-up, then cosine to 0.
        student_keep, fit_images: masking and the alignment's fit (the first fit_images images).
        seeds: one unit of work each (data order, masks and student init are a function of it).
        probe_train_per_class, probe_test_per_class: the fixed probe subsets (train split / test split).
        probe_c, probe_max_iter: logistic regression (L2, C) on standardised features.
        knn_k, knn_temperature: the weighted k-NN of comad.eval.knn.
        bootstrap: replicates of each interval; split_seed: the fixed subsets' seed.
        workers, threads: processes and torch threads each; device: ``cpu`` or ``cuda``.
        teachers: ``packaged`` (the real files) or ``tiny`` (random tiny files in the real layouts).
        checkpoint_minutes: a training unit saves its state this often (resume after a crash; 0: never).
        data_root: the folder of the four Fashion-MNIST idx files ('': ``COMAD_FASHION_MNIST`` or the
            Debian package's folder).
        design: which conditions are trained and which differences reported (:data:`DESIGNS`).
    """

    name: str
    img_size: int = 56
    patch_size: int = 8
    student: dict[str, Any] = field(default_factory=lambda: dict(embed_dim=192, depth=12, num_heads=3))
    decoder_depth: int = 2
    steps: int = 180
    batch_size: int = 32
    lr: float = 5e-4
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_steps: int = 20
    student_keep: float = 0.25
    fit_images: int = 1024
    seeds: tuple[int, ...] = (0, 1, 2, 3)
    probe_train_per_class: int = 200
    probe_test_per_class: int = 200
    probe_c: float = 1.0
    probe_max_iter: int = 2000
    knn_k: int = 20
    knn_temperature: float = 0.07
    bootstrap: int = 2000
    split_seed: int = 0
    workers: int = 2
    threads: int = 1
    device: str = "cpu"
    teachers: str = "packaged"
    checkpoint_minutes: float = 5.0
    data_root: str = ""
    design: str = "main"

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ValueError(f"evidence: design {self.design!r}: choose one of {sorted(DESIGNS)}")

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return DESIGNS[self.design][0]

    @property
    def differences(self) -> tuple[tuple[str, str, str], ...]:
        return DESIGNS[self.design][1]

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def images_per_student(self) -> int:
        return self.steps * self.batch_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def fingerprint(self, *fields: str) -> str:
        """A short hash of the named fields (all but the run's mechanics when none are named):
        a stored result is reused only while these are unchanged."""
        mechanics = ("workers", "checkpoint_minutes", "name", "data_root")
        d = self.to_dict()
        for key, default in _ADDED_LATER.items():  # at their default, stored results stay valid
            if d.get(key) == default:
                del d[key]
        keep = {k: d[k] for k in (fields or [k for k in d if k not in mechanics])}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


PRESETS: dict[str, EvidenceConfig] = {
    # the CPU run, sized from the pilot's rates to about an hour on 2 cores (docs/evidence.md): 1 thread
    # per worker, ~6.2 s per lockstep step of batch 32 (10 students, 6 teachers), ~40 s to probe a student
    "cpu": EvidenceConfig("cpu"),
    # the follow-up on the gating (GATING_CONDITIONS), the CPU run's sizes and seeds
    "cpu-gating": EvidenceConfig("cpu-gating", design="gating"),
    # a few minutes, to measure rates and check the pipeline on the real teachers
    "pilot": EvidenceConfig("pilot", steps=12, seeds=(0,), probe_train_per_class=50, probe_test_per_class=30,
                            workers=1, warmup_steps=2, fit_images=128),
    # the GPU form (not run in the CPU sessions): 112 px, every pool image once, 5 seeds
    "gpu": EvidenceConfig("gpu", img_size=112, batch_size=256, steps=222, seeds=(0, 1, 2, 3, 4), warmup_steps=20,
                          fit_images=4096, lr=1e-3, probe_train_per_class=300, probe_test_per_class=500, workers=1,
                          threads=16, device="cuda"),
    # the test suite's: random tiny teachers in the real layouts, a 2x2 grid, seconds
    "tiny": EvidenceConfig("tiny", img_size=16, student=dict(embed_dim=32, depth=1, num_heads=2), decoder_depth=1,
                           steps=3, batch_size=4, warmup_steps=1, fit_images=4, seeds=(0, 1), probe_train_per_class=4,
                           probe_test_per_class=2, bootstrap=200, teachers="tiny", checkpoint_minutes=0.0),
}


def preset(name: str, **overrides: Any) -> EvidenceConfig:
    """A preset with some fields replaced (``steps=...``); unknown names are errors naming the choices."""
    if name not in PRESETS:
        raise ValueError(f"evidence preset {name!r}: choose one of {sorted(PRESETS)}")
    bad = set(overrides) - {f.name for f in dataclasses.fields(EvidenceConfig)}
    if bad:
        raise ValueError(f"evidence preset {name}: unknown fields {sorted(bad)}")
    return dataclasses.replace(PRESETS[name], **overrides)
