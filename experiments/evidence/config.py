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

from .designs import DESIGNS, Condition, Difference

__all__ = ["TeacherSpec", "EvidenceConfig", "TEACHERS", "PRESETS", "preset", "teacher_key"]


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


#: Fields added after results had been stored, with the value those results were made with (a
#: field at that value leaves the fingerprint as it was).
_ADDED_LATER: dict[str, Any] = {"design": "main", "dense_train_scenes": 0, "dense_test_scenes": 0, "dense_items": 3,
                                "dense_c": 1.0, "dense_max_iter": 1000}


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
        knn_k, knn_temperature: the weighted k-NN of transfer.imagenet.knn.
        bootstrap: replicates of each interval; split_seed: the fixed subsets' seed.
        workers, threads: processes and torch threads each; device: ``cpu`` or ``cuda``.
        teachers: ``packaged`` (the real files) or ``tiny`` (random tiny files in the real layouts).
        checkpoint_minutes: a training unit saves its state this often (resume after a crash; 0: never).
        data_root: the folder of the four Fashion-MNIST idx files ('': ``COMAD_FASHION_MNIST`` or the
            Debian package's folder).
        design: which conditions are trained and which differences reported (:data:`~.designs.DESIGNS`).
        dense_train_scenes, dense_test_scenes: the dense probe's scenes (0: no dense probe), each of
            ``dense_items`` Fashion-MNIST items of the probe-train / probe-test images
            (:mod:`~experiments.evidence.dense`); dense_c, dense_max_iter: its logistic regression.
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
    dense_train_scenes: int = 0
    dense_test_scenes: int = 0
    dense_items: int = 3
    dense_c: float = 1.0
    dense_max_iter: int = 1000

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ValueError(f"evidence: design {self.design!r}: choose one of {sorted(DESIGNS)}")

    @property
    def conditions(self) -> tuple[Condition, ...]:
        return DESIGNS[self.design][0]

    @property
    def differences(self) -> tuple[Difference, ...]:
        return DESIGNS[self.design][1]

    @property
    def groups(self) -> list[str]:
        """The conditions' groups in the design's order (one unit of work per seed and group)."""
        return list(dict.fromkeys(c.group for c in self.conditions))

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
        keep = {k: d[k] for k in (fields or [k for k in d if k not in mechanics]) if k in d}
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: The dense probe of the claims design (fixed with it, before its run).
_DENSE = dict(dense_train_scenes=600, dense_test_scenes=600, dense_items=3, dense_c=1.0, dense_max_iter=1000)

PRESETS: dict[str, EvidenceConfig] = {
    # the CPU run, sized from the pilot's rates to about an hour on 2 cores (docs/evidence.md): 1 thread
    # per worker, ~6.2 s per lockstep step of batch 32 (10 students, 6 teachers), ~40 s to probe a student
    "cpu": EvidenceConfig("cpu"),
    # the follow-up on the gating (GATING_CONDITIONS), the CPU run's sizes and seeds
    "cpu-gating": EvidenceConfig("cpu-gating", design="gating"),
    # a few minutes, to measure rates and check the pipeline on the real teachers
    "pilot": EvidenceConfig("pilot", design="claims", steps=12, seeds=(0,), probe_train_per_class=50,
                            probe_test_per_class=30, workers=2, warmup_steps=2, fit_images=128, dense_train_scenes=60,
                            dense_test_scenes=40),
    # the claims audit (design 'claims', docs/evidence.md), fixed before its run: 360 steps (2x the first
    # run's; the learning curve's point that fits ~2.5 h of this 2-core CPU: ~17 s per lockstep step of
    # the three seeds' units on 2 workers, ~70 s to probe a student), 3 seeds, the dense probe
    "claims-cpu": EvidenceConfig("claims-cpu", design="claims", steps=360, seeds=(0, 1, 2), **_DENSE),
    # its GPU form (not run yet): 112 px, 2 epochs of the 58k pool at batch 256, 3 seeds; a unit (a seed's
    # group) is durable, so the seeds can run across several device calls
    "claims-gpu": EvidenceConfig("claims-gpu", design="claims", img_size=112, batch_size=256, steps=454,
                                 seeds=(0, 1, 2), warmup_steps=20, fit_images=4096, lr=1e-3, workers=1, threads=16,
                                 device="cuda", **_DENSE),
    # the learning curve that sizes the claims run (design 'curve': the default alone; one seed; the
    # claims run's probes): tools run it once per schedule (--curve 180,360,720,1440)
    "curve": EvidenceConfig("curve", design="curve", seeds=(0,), **_DENSE),
    # the test suite's: random tiny teachers in the real layouts, a 2x2 grid, the claims design, seconds
    "tiny": EvidenceConfig("tiny", img_size=16, student=dict(embed_dim=32, depth=1, num_heads=2), decoder_depth=1,
                           steps=3, batch_size=4, warmup_steps=1, fit_images=4, seeds=(0, 1), probe_train_per_class=4,
                           probe_test_per_class=2, bootstrap=200, teachers="tiny", checkpoint_minutes=0.0,
                           design="claims", dense_train_scenes=6, dense_test_scenes=4, dense_max_iter=200),
}


def preset(name: str, **overrides: Any) -> EvidenceConfig:
    """A preset with some fields replaced (``steps=...``); unknown names are errors naming the choices."""
    if name not in PRESETS:
        raise ValueError(f"evidence preset {name!r}: choose one of {sorted(PRESETS)}")
    bad = set(overrides) - {f.name for f in dataclasses.fields(EvidenceConfig)}
    if bad:
        raise ValueError(f"evidence preset {name}: unknown fields {sorted(bad)}")
    return dataclasses.replace(PRESETS[name], **overrides)
