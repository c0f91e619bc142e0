"""Asymmetric masks: the student keeps 25 % of the patches, each teacher its own larger set.

All masks of a batch are made in one batched op from a ``torch.Generator`` (``rand`` +
``argsort``), never a per-sample loop, so the same generator state gives the same masks on
any device count and a resumed run reproduces them (the distiller seeds the generator from
the run seed and the iteration).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["Masks", "MaskGenerator", "indices_to_mask"]


def indices_to_mask(idx: Tensor, num_positions: int) -> Tensor:
    """(B, K) int64 indices -> (B, N) bool mask with True at the kept positions."""
    mask = torch.zeros(idx.shape[0], num_positions, dtype=torch.bool, device=idx.device)
    return mask.scatter(1, idx, True)


@dataclass
class Masks:
    """Kept patch indices of one batch (each row sorted ascending)."""

    student: Tensor  # (B, n_s) int64
    teachers: list[Tensor]  # one (B, n_k) int64 per teacher
    num_positions: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Masks":
        """Move to ``device``; with ``non_blocking`` CPU indices go through pinned memory (no host wait)."""
        dev = torch.device(device)

        def move(t: Tensor) -> Tensor:
            if non_blocking and t.device.type == "cpu" and dev.type == "cuda":
                t = t.pin_memory()
            return t.to(dev, non_blocking=non_blocking)

        return Masks(move(self.student), [move(t) for t in self.teachers], self.num_positions)

    def student_mask(self) -> Tensor:
        return indices_to_mask(self.student, self.num_positions)

    def teacher_masks(self) -> Tensor:
        """(K, B, N) bool: which positions each teacher saw."""
        return torch.stack([indices_to_mask(t, self.num_positions) for t in self.teachers])


class MaskGenerator:
    """Make the student and teacher masks of a batch.

    Args:
        num_positions: patches per image (196 for 224² / 16).
        student_keep: fraction of patches the student sees (0.25).
        teacher_keep: one keep fraction per teacher, in the teachers' order (0.50, 0.65, 0.80
            for MAE, iBOT, MoCo v3 in the reference config).
        nested: every teacher mask contains the student's (docs/method.md §2, row 1); otherwise each teacher
            draws its own independent set.
        teacher_keep_end: optional keep fractions at the end of training; the fractions move
            linearly from ``teacher_keep`` to these with ``progress`` (0 → 1).
    """

    def __init__(
        self,
        num_positions: int,
        student_keep: float = 0.25,
        teacher_keep: Sequence[float] = (0.50, 0.65, 0.80),
        nested: bool = True,
        teacher_keep_end: Sequence[float] | None = None,
    ) -> None:
        if num_positions < 1:
            raise ValueError(f"masking: num_positions must be >= 1, got {num_positions}")
        self.num_positions = int(num_positions)
        self.student_keep = float(student_keep)
        self.teacher_keep = [float(r) for r in teacher_keep]
        self.teacher_keep_end = None if teacher_keep_end is None else [float(r) for r in teacher_keep_end]
        self.nested = bool(nested)
        self._check("student_keep", [self.student_keep])
        self._check("teacher_keep", self.teacher_keep)
        if self.teacher_keep_end is not None:
            self._check("teacher_keep_end", self.teacher_keep_end)
            if len(self.teacher_keep_end) != len(self.teacher_keep):
                raise ValueError(
                    f"masking: teacher_keep_end has {len(self.teacher_keep_end)} ratios, teacher_keep has "
                    f"{len(self.teacher_keep)}; give one per teacher"
                )
        if self.nested:
            for name, ratios in (("teacher_keep", self.teacher_keep), ("teacher_keep_end", self.teacher_keep_end or [])):
                for r in ratios:
                    if self.count(r) < self.count(self.student_keep):
                        raise ValueError(
                            f"masking: nested masks need every {name} ratio >= student_keep "
                            f"({self.student_keep}), got {r}"
                        )

    @staticmethod
    def _check(option: str, ratios: Sequence[float]) -> None:
        for r in ratios:
            if not 0.0 < r <= 1.0:
                raise ValueError(f"masking: {option} must be in (0, 1], got {r}")

    def count(self, ratio: float) -> int:
        """Kept patches for a keep ratio: ``round(ratio * N)``, at least 1."""
        return max(1, min(self.num_positions, round(ratio * self.num_positions)))

    def teacher_ratios(self, progress: float = 0.0) -> list[float]:
        """Keep ratios at a point of training (``progress`` in [0, 1])."""
        if self.teacher_keep_end is None:
            return list(self.teacher_keep)
        p = min(max(float(progress), 0.0), 1.0)
        return [a + (b - a) * p for a, b in zip(self.teacher_keep, self.teacher_keep_end)]

    @property
    def num_teachers(self) -> int:
        return len(self.teacher_keep)

    def __call__(
        self,
        batch_size: int,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        progress: float = 0.0,
        rows: slice | None = None,
    ) -> Masks:
        """Masks for ``batch_size`` images, drawn from ``generator`` (on ``device``).

        ``rows`` keeps only those images' masks (e.g. one rank's rows of a global batch): the
        random numbers of all ``batch_size`` images are drawn, so the result equals the same
        rows of the full call, but only those rows are sorted (the costly part: 66 ms for
        4096 images on one CPU core, 9 ms for 512).
        """
        n, b = self.num_positions, batch_size
        sel = slice(None) if rows is None else rows

        def draw(width: int) -> Tensor:
            return torch.rand(b, width, generator=generator, device=device)[sel]

        perm = draw(n).argsort(dim=1)
        n_s = self.count(self.student_keep)
        student = perm[:, :n_s]
        rest = perm[:, n_s:]
        teachers = []
        for ratio in self.teacher_ratios(progress):
            n_k = self.count(ratio)
            if self.nested:
                order = draw(n - n_s).argsort(dim=1)
                extra = rest.gather(1, order[:, : n_k - n_s])
                idx = torch.cat([student, extra], dim=1)
            else:
                idx = draw(n).argsort(dim=1)[:, :n_k]
            teachers.append(idx.sort(dim=1).values)
        return Masks(student.sort(dim=1).values, teachers, n)
