"""The conditions each design trains and the differences it reports, fixed before its run.

A :class:`Condition` is one way of training the student (or not: no teachers = the seed's
random-init student, probed untrained). Its fields are the knobs of
:class:`~comad.distiller.CoMADDistiller` the experiment varies; every other knob is the default.
Conditions of one ``group`` train together in one unit of work per seed (on one teacher forward
per step and mask scheme); a seed fixes the data order, the masks of each scheme and the student
init, so conditions are paired across groups too.

Designs (``EvidenceConfig.design``):

- ``main``: the first run (docs/evidence.md, history): alignment, gating and teacher choice;
- ``gating``: its exploratory follow-up (agreement-only gating), chosen after ``main`` was read;
- ``claims``: every claim of the abstract and the anchors' designs (issue 20), fixed before its run;
- ``curve``: the default alone, the learning curve that sized ``claims``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = ["Condition", "Difference", "MASK_SCHEMES", "LOSSES", "DESIGNS", "CONDITIONS", "DIFFERENCES",
           "GATING_CONDITIONS", "GATING_DIFFERENCES", "CLAIMS_CONDITIONS", "CLAIMS_DIFFERENCES", "CLAIMS"]

#: How the teachers' masks relate to the student's (experiments.evidence.masks).
MASK_SCHEMES = ("nested", "full", "symmetric", "independent", "student50")
#: Which KL terms train the student.
LOSSES = ("both", "token", "map")


@dataclass(frozen=True)
class Condition:
    """One way of training the student.

    Attributes:
        name, label: for tables; teachers: keys of :func:`~experiments.evidence.config.teacher_key`.
        gating: ``model.gating.mode``; align: ``model.adapter.align``.
        masks: a :data:`MASK_SCHEMES` name; loss: a :data:`LOSSES` name.
        fusion: ``model.fusion.mode``; standardize: ``model.standardize``; drop: ``model.fusion.teacher_drop``.
        group: the unit of work it trains in (one per seed and group).
    """

    name: str
    label: str
    teachers: tuple[str, ...] = ()
    gating: str = "joint"
    align: str = "gcca"
    masks: str = "nested"
    loss: str = "both"
    fusion: str = "gated"
    standardize: bool = False
    drop: float = 0.0
    group: str = "all"

    def __post_init__(self) -> None:
        if self.masks not in MASK_SCHEMES or self.loss not in LOSSES:
            raise ValueError(f"condition {self.name}: masks in {MASK_SCHEMES}, loss in {LOSSES}")


class Difference(NamedTuple):
    """Accuracy of ``a`` minus accuracy of ``b``; ``claim`` groups it in the claims table."""

    a: str
    b: str
    question: str
    claim: str = ""


_REAL = ("dinov2", "mnv2", "lite0")
_RANDOM = ("dinov2_random", "mnv2_random", "lite0_random")
_CORRUPT = ("dinov2", "mnv2", "lite0_random")
CONDITIONS: tuple[Condition, ...] = (
    Condition("random_init", "random-init student (untrained)"),
    Condition("control", "random-weight teachers x3, joint, gcca", _RANDOM),
    Condition("dinov2", "DINOv2 alone", ("dinov2",)),
    Condition("mnv2", "MobileNetV2 alone", ("mnv2",)),
    Condition("lite0", "EfficientNet-Lite0 alone", ("lite0",)),
    Condition("mean", "3 real, mean, gcca", _REAL, gating="mean"),
    Condition("joint_gcca", "3 real, joint, gcca (default)", _REAL),
    Condition("joint_procrustes", "3 real, joint, procrustes", _REAL, align="procrustes"),
    Condition("joint_none", "3 real, joint, no alignment", _REAL, align="none"),
    Condition("corrupt_mean", "2 real + random Lite0, mean, gcca", _CORRUPT, gating="mean"),
    Condition("corrupt_joint", "2 real + random Lite0, joint, gcca", _CORRUPT),
)
DIFFERENCES: tuple[Difference, ...] = (
    Difference("joint_gcca", "control", "real teachers vs random-weight teachers"),
    Difference("joint_gcca", "random_init", "distillation vs no training"),
    Difference("control", "random_init", "random-teacher distillation vs no training"),
    Difference("joint_gcca", "mean", "joint gating vs the mean"),
    Difference("corrupt_joint", "corrupt_mean", "joint vs mean with one random teacher"),
    Difference("joint_gcca", "joint_none", "gcca alignment vs none"),
    Difference("joint_procrustes", "joint_none", "procrustes alignment vs none"),
    Difference("joint_gcca", "joint_procrustes", "gcca vs procrustes"),
    Difference("joint_gcca", "dinov2", "three teachers vs DINOv2 alone"),
    Difference("joint_gcca", "mnv2", "three teachers vs MobileNetV2 alone"),
    Difference("joint_gcca", "lite0", "three teachers vs EfficientNet-Lite0 alone"),
)

#: The follow-up on the gating (exploratory: chosen after ``main`` had been read).
GATING_CONDITIONS: tuple[Condition, ...] = (
    Condition("mean", "3 real, mean, gcca", _REAL, gating="mean"),
    Condition("agreement", "3 real, agreement, gcca", _REAL, gating="agreement"),
    Condition("corrupt_mean", "2 real + random Lite0, mean, gcca", _CORRUPT, gating="mean"),
    Condition("corrupt_joint", "2 real + random Lite0, joint, gcca", _CORRUPT),
    Condition("corrupt_agreement", "2 real + random Lite0, agreement, gcca", _CORRUPT, gating="agreement"),
)
GATING_DIFFERENCES: tuple[Difference, ...] = (
    Difference("corrupt_agreement", "corrupt_mean", "agreement vs mean with one random teacher"),
    Difference("corrupt_agreement", "corrupt_joint", "agreement vs joint with one random teacher"),
    Difference("corrupt_joint", "corrupt_mean", "joint vs mean with one random teacher (the main run's, again)"),
    Difference("agreement", "mean", "agreement gating vs the mean"),
)

#: The abstract's claims, in its order, as the claims table names them.
CLAIMS = {
    "1": "several teachers unify into one compact student",
    "2": "asymmetric masking: the student at 25 %, each teacher a lighter unique mask",
    "3": "joint consensus gating (affinity + agreement) beats naive averaging",
    "4": "dual-level KL on visible tokens and reconstructed maps",
    "A": "the anchors' design (RADIO / UNIC): per-teacher heads, standardisation, teacher dropping",
}
_PT = dict(fusion="per-teacher", group="core")
CLAIMS_CONDITIONS: tuple[Condition, ...] = (
    # group core: the default and the one-knob changes of its gating and loss, and the anchors' design
    # (the three real teachers on the default nested masks: one forward of each per step serves all)
    Condition("random_init", "random-init student (untrained)", group="core"),
    Condition("default", "CoMAD default: 3 real, joint, gcca, nested masks, token + map KL", _REAL, group="core"),
    Condition("mean", "gating: the mean", _REAL, gating="mean", group="core"),
    Condition("affinity", "gating: affinity only", _REAL, gating="affinity", group="core"),
    Condition("agreement", "gating: agreement only", _REAL, gating="agreement", group="core"),
    Condition("token_only", "loss: token KL only", _REAL, loss="token", group="core"),
    Condition("map_only", "loss: map KL only", _REAL, loss="map", group="core"),
    # the anchors' design on the same targets
    Condition("per_teacher", "per-teacher heads, mean of losses", _REAL, **_PT),
    Condition("per_teacher_std", "per-teacher heads + standardisation", _REAL, standardize=True, **_PT),
    Condition("per_teacher_drop", "per-teacher heads + standardisation + dropping", _REAL, standardize=True,
              drop=0.5, **_PT),
    # group masking: the teachers' masks against the student's (each scheme its own teacher forwards)
    Condition("teachers_full", "masks: teachers unmasked (full images)", _REAL, masks="full", group="masking"),
    Condition("symmetric", "masks: every teacher sees exactly the student's patches", _REAL, masks="symmetric",
              group="masking"),
    Condition("independent", "masks: independent (non-nested) teacher masks", _REAL, masks="independent",
              group="masking"),
    Condition("student50", "masks: the student at 50 % visible", _REAL, masks="student50", group="masking"),
    # group teachers (the default nested masks too): one real teacher replaced by its random-weight twin,
    # the random-weight control, each teacher alone (the six teacher files, one forward each per step)
    Condition("corrupt_mean", "random Lite0: the mean", _CORRUPT, gating="mean", group="teachers"),
    Condition("corrupt_joint", "random Lite0: joint", _CORRUPT, group="teachers"),
    Condition("corrupt_agreement", "random Lite0: agreement only", _CORRUPT, gating="agreement", group="teachers"),
    Condition("corrupt_drop", "random Lite0: per-teacher + standardisation + dropping", _CORRUPT,
              standardize=True, drop=0.5, fusion="per-teacher", group="teachers"),
    Condition("control", "random-weight teachers x3, joint", _RANDOM, group="teachers"),
    Condition("dinov2", "DINOv2 alone", ("dinov2",), group="teachers"),
    Condition("mnv2", "MobileNetV2 alone", ("mnv2",), group="teachers"),
    Condition("lite0", "EfficientNet-Lite0 alone", ("lite0",), group="teachers"),
)
CLAIMS_DIFFERENCES: tuple[Difference, ...] = (
    Difference("default", "random_init", "distillation vs no training", "1"),
    Difference("default", "control", "real teachers vs random-weight teachers", "1"),
    Difference("default", "dinov2", "three teachers vs DINOv2 alone", "1"),
    Difference("default", "mnv2", "three teachers vs MobileNetV2 alone", "1"),
    Difference("default", "lite0", "three teachers vs EfficientNet-Lite0 alone", "1"),
    Difference("default", "teachers_full", "teachers masked vs unmasked", "2"),
    Difference("default", "symmetric", "lighter teacher masks vs the student's own", "2"),
    Difference("default", "independent", "nested vs independent teacher masks", "2"),
    Difference("default", "student50", "the student at 25 % vs 50 % visible", "2"),
    Difference("default", "mean", "joint gating vs the mean", "3"),
    Difference("default", "affinity", "joint vs affinity only", "3"),
    Difference("default", "agreement", "joint vs agreement only", "3"),
    Difference("corrupt_joint", "corrupt_mean", "joint vs mean, one random teacher", "3"),
    Difference("corrupt_agreement", "corrupt_mean", "agreement vs mean, one random teacher", "3"),
    Difference("default", "token_only", "token + map KL vs token KL only", "4"),
    Difference("default", "map_only", "token + map KL vs map KL only", "4"),
    Difference("default", "per_teacher", "CoMAD's fused target vs per-teacher heads", "A"),
    Difference("per_teacher_std", "per_teacher", "standardisation (per-teacher heads)", "A"),
    Difference("per_teacher_drop", "per_teacher_std", "teacher dropping (per-teacher, standardised)", "A"),
    Difference("per_teacher_drop", "default", "UNIC's recipe vs the CoMAD default", "A"),
    Difference("corrupt_drop", "corrupt_mean", "dropping vs mean, one random teacher", "A"),
    Difference("mean", "corrupt_mean", "cost of one random teacher: mean", "3"),
    Difference("default", "corrupt_joint", "cost of one random teacher: joint", "3"),
    Difference("per_teacher_drop", "corrupt_drop", "cost of one random teacher: dropping", "A"),
)

CURVE_CONDITIONS: tuple[Condition, ...] = (
    Condition("random_init", "random-init student (untrained)", group="core"),
    Condition("default", "CoMAD default: 3 real, joint, gcca, nested masks, token + map KL", _REAL, group="core"),
)  # (group 'core': the name the curve's stored units were made with)
CURVE_DIFFERENCES: tuple[Difference, ...] = (Difference("default", "random_init", "distillation vs no training", "1"),)

#: ``EvidenceConfig.design`` -> (conditions, differences).
DESIGNS: dict[str, tuple[tuple[Condition, ...], tuple[Difference, ...]]] = {
    "main": (CONDITIONS, DIFFERENCES),
    "gating": (GATING_CONDITIONS, GATING_DIFFERENCES),
    "claims": (CLAIMS_CONDITIONS, CLAIMS_DIFFERENCES),
    "curve": (CURVE_CONDITIONS, CURVE_DIFFERENCES),
}
