"""Per-teacher adapters: ``A_k(t) = LayerNorm(W_k t + b_k)`` from teacher width to student width.

With ``model.adapter.align`` set (the default, docs/method.md §2, row 3) ``W_k`` and ``b_k`` are the maps that
:mod:`comad.align` fits on all teachers' features at the same tokens, so that every adapted
teacher lives in one shared space; until then (and with ``align='none'``, the earlier reading)
``W_k`` is a seeded orthogonal matrix, or the principal directions of the teacher's own
features (``init='pca'``). Frozen by default (parameter-free; a trainable target-side
projection can collapse the targets: ``trainable=True``, an ablation). ``trainable='orthogonal'``
trains only a rotation after the map (``torch.nn.utils.parametrizations.orthogonal``, from the
identity): a rotation keeps each token's norm and each teacher's covariance spectrum, so it
cannot collapse the targets. The maps and the LayerNorm run in fp32 with autocast off, so that
an outer bf16 autocast does not round the targets.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations

from typing import TYPE_CHECKING

from .align import finite_rows, mean_cov, moments, principal_axes, reduce_moments

if TYPE_CHECKING:
    from .align import Alignment
    from .masking import Masks

__all__ = ["Adapter", "INITS", "TRAINABLE", "fit_adapters"]

INITS = ("orthogonal", "pca")
#: ``trainable``: frozen, the whole linear map, or a rotation after it.
TRAINABLE = (False, True, "orthogonal")


class Adapter(nn.Module):
    """Linear + LayerNorm without affine.

    Args:
        in_dim: teacher width (768 for ViT-B).
        out_dim: student width (192 for ViT-Tiny).
        init: ``orthogonal`` (seeded) or ``pca`` (call :meth:`init_pca` with features first;
            until then the weights are the seeded orthogonal ones and ``needs_pca`` is True).
        trainable: ``False`` (frozen, default), ``True`` (the loss updates the linear map) or
            ``'orthogonal'`` (the map stays; the loss updates an orthogonal ``out_dim`` square
            rotation applied after it, starting at the identity).
        seed: seed of the orthogonal init.
        bias: give the linear map a bias (zero until :meth:`set_map`; the aligned maps centre
            each teacher on its token mean).
    """

    def __init__(self, in_dim: int, out_dim: int, init: str = "orthogonal", trainable: bool | str = False,
                 seed: int = 0, bias: bool = False) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"adapter init must be one of {INITS}, got {init!r}")
        if not (isinstance(trainable, bool) or trainable == "orthogonal"):
            raise ValueError(f"adapter trainable must be one of {TRAINABLE}, got {trainable!r}")
        self.init = init
        self.proj = nn.Linear(in_dim, out_dim, bias=bias)
        self.norm = nn.LayerNorm(out_dim, elementwise_affine=False)
        g = torch.Generator().manual_seed(int(seed))
        with torch.no_grad():
            nn.init.orthogonal_(self.proj.weight, generator=g)
            if bias:
                self.proj.bias.zero_()
        # Persisted so a resumed run does not redo the PCA on other images.
        self.register_buffer("pca_done", torch.tensor(init != "pca"))
        self._pca_pending = init == "pca"  # host-side mirror: reading the buffer would sync a GPU each step
        self.proj.requires_grad_(trainable is True)
        self.rotation: nn.Module | None = None
        if trainable == "orthogonal":
            self.rotation = parametrizations.orthogonal(nn.Linear(out_dim, out_dim, bias=False))
            with torch.no_grad():
                self.rotation.weight = torch.eye(out_dim)

    @property
    def trainable(self) -> bool:
        """Whether the loss updates anything here (the map or the rotation)."""
        return any(p.requires_grad for p in self.parameters())

    @property
    def needs_pca(self) -> bool:
        return self._pca_pending

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._pca_pending = not bool(self.pca_done)

    @torch.no_grad()
    def init_pca(self, feats: Tensor) -> None:
        """Set ``W_k`` to the top principal directions of ``feats`` (M, in_dim).

        A teacher narrower than the student (in_dim < out_dim: a 96-channel CNN beside a 192-wide
        student) has only in_dim directions: they fill the first in_dim rows and the rest are zero
        (an isometric embedding, as the alignment pads its maps). Under torch.distributed the mean and covariance are summed over all ranks first, so
        every rank gets the same weights. Rows with a non-finite value (a corrupt image) are left
        out, so that one bad batch does not make the weights NaN for the rest of the run.
        """
        out_dim, in_dim = self.proj.weight.shape
        if feats.shape[-1] != in_dim:
            raise ValueError(f"adapter pca init: features have width {feats.shape[-1]}, expected {in_dim}")
        stats = reduce_moments(moments(finite_rows(feats.reshape(-1, in_dim))))
        if stats[0] < 2:
            raise ValueError("adapter pca init needs at least 2 feature vectors")
        top = principal_axes(mean_cov(stats, in_dim)[1], min(out_dim, in_dim))[1].T  # (r, in_dim), signs fixed
        self.proj.weight.zero_()
        self.proj.weight[: top.shape[0]] = top.to(self.proj.weight.dtype)
        self.pca_done.fill_(True)
        self._pca_pending = False

    @torch.no_grad()
    def set_map(self, weight: Tensor, bias: Tensor) -> None:
        """Set the linear map to ``weight`` (out_dim, in_dim) and ``bias`` (out_dim,) (e.g. a fitted alignment)."""
        if self.proj.bias is None:
            raise ValueError("adapter: set_map needs an adapter built with bias=True")
        if weight.shape != self.proj.weight.shape or bias.shape != self.proj.bias.shape:
            raise ValueError(f"adapter: map of shapes {tuple(weight.shape)}, {tuple(bias.shape)}; expected "
                             f"{tuple(self.proj.weight.shape)}, {tuple(self.proj.bias.shape)}")
        self.proj.weight.copy_(weight)
        self.proj.bias.copy_(bias)

    def forward(self, t: Tensor) -> Tensor:
        """(..., in_dim) teacher tokens -> (..., out_dim) adapted tokens, float32."""
        with torch.autocast(device_type=t.device.type, enabled=False):
            z = self.proj(t.float())
            return self.norm(z if self.rotation is None else self.rotation(z))


@torch.no_grad()
def fit_adapters(adapters: nn.ModuleList, alignment: "Alignment | None", toks: list[Tensor], masks: "Masks",
                 seen: Tensor, step: int) -> None:
    """One fitting step of the adapters on this step's patch tokens (K of (B, n_k, C_k)): their PCA
    init where pending, and the alignment's statistics at the positions every teacher saw (``seen``
    (K, B, N)), so that all teachers' features are of the same tokens; refitted maps are installed."""
    from mmengine.logging import print_log

    from .models.vit import scatter_tokens

    for adapter, tok in zip(adapters, toks):
        if adapter.needs_pca:
            adapter.init_pca(tok)
    if alignment is None or not alignment.pending:
        return
    shared = seen.all(0)  # (B, N)
    feats = [scatter_tokens(tok, idx, masks.num_positions)[shared] for tok, idx in zip(toks, masks.teachers)]
    maps = alignment.observe(feats, images=seen.shape[1])
    if alignment.dropped:
        print_log(f"model.adapter: non-finite teacher features at step {step} (on some rank); the step is left out "
                  "of the alignment's fit", logger="current", level=30)
    if maps is None:  # no refit this step: the adapters keep their maps
        return
    for adapter, (w, b) in zip(adapters, maps):
        adapter.set_map(w, b)
    if not alignment.pending:
        images, tokens = alignment.fitted_on
        width = sum(alignment.dims)
        print_log(f"model.adapter: align={alignment.method!r} fitted on {tokens} tokens (the positions every teacher "
                  f"saw) of {images} images, then frozen", logger="current")
        if tokens < 10 * width:
            print_log(f"model.adapter: {tokens} tokens for teachers of joint width {width} is few: the fit over-fits "
                      "(raise model.adapter.fit_images)", logger="current", level=30)
