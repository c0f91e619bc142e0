"""Per-teacher fusion: the anchors' design beside CoMAD's gated target (docs/method.md, row 5b).

CoMAD fuses the teachers into one target per position (the consensus gating) and regresses it:
a loss of the mean. RADIO and UNIC give each teacher its own light head on the student and
average the per-teacher losses: a mean of losses. ``model.fusion.mode='per-teacher'`` is that
second design on the same student, decoder, adapters and KL losses:

- :class:`TeacherHeads`: one head per teacher, ``Linear(D, H) -> GELU -> Linear(H, D)``, on the
  student's tokens and on the decoder's map (training only, like the decoder; never exported);
- the per-image loss of teacher k is its token KL at the student's positions k saw plus its map
  KL over the positions k saw (:func:`comad.losses.token_kl` / :func:`~comad.losses.map_kl`);
- :func:`drop_coefficients`: UNIC's teacher dropping (``naver/unic``,
  ``modeling/teacher_dropping.py``): per image the teacher with the highest loss is always kept
  and every other is dropped with probability ``rate``; the draws are made for the whole global
  batch from the run's seed and step, and a rank takes its rows, so every rank drops the same
  teachers of the same images at any GPU count;
- :func:`aggregate`: ``sum_kb c_kb L_kb / sum_kb c_kb`` (UNIC's normalisation); only kept
  teachers get gradient.
"""
from __future__ import annotations

import hashlib

import torch
from torch import Tensor, nn

__all__ = ["FUSION_MODES", "TeacherHeads", "drop_seed_of", "drop_coefficients", "aggregate", "per_teacher_losses"]

FUSION_MODES = ("gated", "per-teacher")


class TeacherHeads(nn.Module):
    """K light heads on the student's width ``dim``: (…, D) -> (K, …, D).

    Args:
        num_teachers: K.
        dim: the student's width D (the adapted teachers live in it too).
        hidden: the heads' hidden width (default D).
    """

    def __init__(self, num_teachers: int, dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = int(hidden or dim)
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
                                   for _ in range(num_teachers))
        for m in self.modules():
            if isinstance(m, nn.Linear):  # UNIC's head init
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.stack([head(x) for head in self.heads])


def drop_seed_of(seed: int, step: int) -> int:
    """The seed of step ``step``'s teacher-dropping draws in the stream ``seed`` (a hash, as the masks')."""
    digest = hashlib.sha256(f"comad-drop:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def drop_coefficients(losses: Tensor, rate: float, seed: int, world: int = 1, rank: int = 0) -> Tensor:
    """UNIC's teacher dropping for one step.

    Args:
        losses: (K, B) per-teacher, per-image losses of this rank's B images.
        rate: the probability that a teacher other than the image's highest-loss one is dropped.
        seed: the step's seed (:func:`drop_seed_of`); the draws are made for the global batch of
            ``world * B`` images and rank r takes rows r, r + W, ... (mmengine's sampler order).

    Returns:
        (K, B) float coefficients in {0, 1}: 1 for the kept teachers, at least one per image.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"model.fusion.teacher_drop must be in [0, 1), got {rate}")
    k, b = losses.shape
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(world * b, k, generator=g)[rank::world].t().to(losses.device)  # (K, B)
    keep = u >= rate
    top = losses.argmax(0)  # (B,) the highest-loss teacher of each image
    keep[top, torch.arange(b, device=losses.device)] = True
    return keep.float()


def aggregate(losses: Tensor, coefficients: Tensor) -> Tensor:
    """``sum c * L / sum c`` over teachers and images (coefficients without gradient)."""
    c = coefficients.detach()
    return (c * losses).sum() / c.sum().clamp(min=1.0)


def per_teacher_losses(heads: TeacherHeads, h: Tensor, recon: Tensor, student_idx: Tensor, t_maps: Tensor,
                       seen: Tensor, loss_cfg: dict, prefix: int = 0) -> tuple[Tensor, Tensor]:
    """Each teacher's head on the student's tokens ``h`` (B, P + n_s, D) and on the decoder's map
    ``recon`` (B, N, D), against that teacher's own map ``t_maps[k]`` (B, P + N, D) where it saw
    (``seen`` (K, B, P + N)): the token KL at the student's positions and the map KL over the grid,
    per image (weights and temperatures of ``loss_cfg``, the distiller's ``model.loss``).

    Returns:
        (K, B) token losses and (K, B) map losses (zeros for a term whose weight is 0).

    Raises:
        ValueError: both weights are 0.
    """
    from .losses import map_kl, token_kl
    from .models.vit import gather_tokens

    if not (loss_cfg["token_weight"] or loss_cfg["map_weight"]):
        raise ValueError("model.loss: token_weight and map_weight are both 0; nothing to train")
    p, on_h, on_recon = prefix, heads(h), heads(recon)  # (K, B, P + n_s, D), (K, B, N, D)
    zero = recon.new_zeros(recon.shape[0])
    tok, mp = [], []
    for k in range(t_maps.shape[0]):
        t, s = t_maps[k], seen[k]
        y = torch.cat([t[:, :p], gather_tokens(t[:, p:], student_idx)], 1)
        valid = torch.cat([s[:, :p], s[:, p:].gather(1, student_idx)], 1)
        tok.append(loss_cfg["token_weight"] * token_kl(y, on_h[k], tau=loss_cfg["token_tau"], valid=valid,
                                                       per_image=True) if loss_cfg["token_weight"] else zero)
        mp.append(loss_cfg["map_weight"] * map_kl(t[:, p:], on_recon[k], s[:, p:], tau=loss_cfg["map_tau"],
                                                  positions=loss_cfg["map_positions"], per_image=True)
                  if loss_cfg["map_weight"] else zero)
    return torch.stack(tok), torch.stack(mp)
