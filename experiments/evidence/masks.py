"""The masks of one step under each scheme of :data:`~experiments.evidence.designs.MASK_SCHEMES`.

Every scheme is a function of (seed, step) only, so that conditions trained in different units of
the same seed see the same masks. A scheme gives the student's kept patches and one kept set per
teacher architecture, in :data:`~experiments.evidence.config.TEACHERS` order (the real and the
random weights of an architecture share it):

- ``nested`` (the default): the student keeps ``student_keep``; each teacher architecture its own
  ratio (0.50 / 0.65 / 0.80), each set containing the student's (the draw the first evidence run made);
- ``full``: the ``nested`` student mask; every teacher sees every patch;
- ``symmetric``: the ``nested`` student mask; every teacher sees exactly the student's patches;
- ``independent``: the ``nested`` student mask; each teacher an independent draw of its ratio
  (not containing the student's);
- ``student50``: a draw of its own: the student keeps 50 %, the teachers their nested ratios.
"""
from __future__ import annotations

import numpy as np
import torch

from comad.masking import MaskGenerator, Masks

from .config import TEACHERS, EvidenceConfig

__all__ = ["scheme_masks"]

_SALT = {"nested": 7, "independent": 8, "student50": 9}


def _generator(seed: int, step: int, scheme: str) -> torch.Generator:
    state = np.random.SeedSequence([seed, step, _SALT[scheme]]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def scheme_masks(cfg: EvidenceConfig, seed: int, step: int, batch: int, schemes: list[str],
                 device: str = "cpu") -> dict[str, Masks]:
    """The masks of step ``step`` of seed ``seed`` for each scheme in ``schemes``: (B, n_s) student
    indices and one (B, n_k) per teacher architecture, each row sorted."""
    n = cfg.grid ** 2
    keeps = [s.keep for s in TEACHERS]
    nested = MaskGenerator(n, cfg.student_keep, keeps, nested=True)(batch, generator=_generator(seed, step, "nested"))
    out: dict[str, Masks] = {}
    for scheme in schemes:
        if scheme == "nested":
            m = nested
        elif scheme == "full":
            m = Masks(nested.student, [torch.arange(n).expand(batch, n).clone() for _ in keeps], n)
        elif scheme == "symmetric":
            m = Masks(nested.student, [nested.student.clone() for _ in keeps], n)
        elif scheme == "independent":
            own = MaskGenerator(n, cfg.student_keep, keeps, nested=False)(batch, generator=_generator(seed, step, scheme))
            m = Masks(nested.student, own.teachers, n)
        elif scheme == "student50":
            m = MaskGenerator(n, 0.5, keeps, nested=True)(batch, generator=_generator(seed, step, scheme))
        else:
            raise ValueError(f"evidence: unknown mask scheme {scheme!r}")
        out[scheme] = m.to(device)
    return out
