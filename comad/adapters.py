"""Per-teacher adapters: ``A_k(t) = LayerNorm(W_k t)`` from teacher width to student width.

Frozen by default with a seeded orthogonal ``W_k`` (SPEC §2.3): the framework stays
parameter-free and a trainable target-side projection cannot collapse the targets. ``pca``
initialises ``W_k`` from the principal directions of the teacher's own features (first batch).
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Adapter"]

INITS = ("orthogonal", "pca")


class Adapter(nn.Module):
    """Linear (no bias) + LayerNorm without affine.

    Args:
        in_dim: teacher width (768 for ViT-B).
        out_dim: student width (192 for ViT-Tiny).
        init: ``orthogonal`` (seeded) or ``pca`` (call :meth:`init_pca` with features first;
            until then the weights are the seeded orthogonal ones and ``needs_pca`` is True).
        trainable: let the loss update ``W_k`` (off by default).
        seed: seed of the orthogonal init.
    """

    def __init__(self, in_dim: int, out_dim: int, init: str = "orthogonal", trainable: bool = False, seed: int = 0) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"adapter init must be one of {INITS}, got {init!r}")
        self.init = init
        self.proj = nn.Linear(in_dim, out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim, elementwise_affine=False)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            nn.init.orthogonal_(self.proj.weight, generator=g)
        # Persisted so a resumed run does not redo the PCA on other images.
        self.register_buffer("pca_done", torch.tensor(init != "pca"))
        self._pca_pending = init == "pca"  # host-side mirror: reading the buffer would sync a GPU each step
        self.proj.weight.requires_grad_(bool(trainable))

    @property
    def trainable(self) -> bool:
        return self.proj.weight.requires_grad

    @property
    def needs_pca(self) -> bool:
        return self._pca_pending

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._pca_pending = not bool(self.pca_done)

    @torch.no_grad()
    def init_pca(self, feats: Tensor) -> None:
        """Set ``W_k`` to the top principal directions of ``feats`` (M, in_dim).

        Under torch.distributed the mean and covariance are summed over all ranks first, so
        every rank gets the same weights.
        """
        out_dim, in_dim = self.proj.weight.shape
        x = feats.reshape(-1, feats.shape[-1]).double()
        if x.shape[-1] != in_dim:
            raise ValueError(f"adapter pca init: features have width {x.shape[-1]}, expected {in_dim}")
        stats = torch.cat([x.sum(0), (x.T @ x).flatten(), x.new_tensor([x.shape[0]])])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        n = stats[-1]
        if n < 2:
            raise ValueError("adapter pca init needs at least 2 feature vectors")
        mean = stats[:in_dim] / n
        cov = stats[in_dim:-1].view(in_dim, in_dim) / n - torch.outer(mean, mean)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        top = evecs[:, evals.argsort(descending=True)[:out_dim]].T  # (out_dim, in_dim)
        # Fix each direction's sign (largest entry positive) so the result is deterministic.
        sign = torch.sign(top.gather(1, top.abs().argmax(1, keepdim=True)))
        self.proj.weight.copy_((top * sign).to(self.proj.weight.dtype))
        self.pca_done.fill_(True)
        self._pca_pending = False

    def forward(self, t: Tensor) -> Tensor:
        return self.norm(self.proj(t))
