"""Map the adapted teachers into one shared space before gating compares them (docs/method.md §2, row 3).

Cosine agreement between teachers, and cosine affinity between the student and each teacher,
mean something only when all adapted teachers live in one space. Independently trained
teachers (and independently seeded projections of them) do not: fed identical features, three
seeded orthogonal projections give cross-teacher cosines of about 0.02. The maps here are
fitted, without gradient, on the features every teacher produced at the **same** tokens (the
positions all teachers saw in the first ``fit_steps`` steps), frozen and checkpointed.

``align`` (``model.adapter.align``):

- ``procrustes``: per teacher, centre and project onto its top-``r`` principal axes
  (``r`` = student width, or less when a teacher is narrower), whitened (``whiten=True``:
  every axis unit variance, so that a teacher that is another under an invertible linear map
  becomes an exact rotation of it within the shared subspace); then generalized orthogonal
  Procrustes: rotations ``R_k`` that maximise the summed cross-teacher correlation
  ``sum_{k<j} tr(R_k^T S_kj R_j)``, ``S_kj`` the cross-covariance of the projected teachers
  (block coordinate ascent, each block an orthogonal Procrustes problem); finally one common
  rotation onto the principal axes of the consensus (mean of the rotated teachers), which fixes
  the frame. It aligns exactly when the shared signal lies in every teacher's top-``r``
  subspace (true for fast-decaying spectra such as ViT features); a rotation of whitened
  features cannot collapse them.
- ``gcca`` (default; docs/method.md says why): generalized CCA (MAXVAR): each teacher whitened at full width with shrinkage, then
  the top-``r`` eigenvectors of the whitened block covariance (the directions all teachers
  share most). Exact for invertible linear images at any width and puts an unrelated teacher
  near zero; but whitening weighs every direction alike, so low-variance features all ViTs
  share (position) can take the top directions.
- ``none``: each teacher's own map (the adapter's seeded orthogonal or per-teacher PCA init),
  the earlier reading: the teachers are not in one space (kept for comparison).

Everything is computed in float64 from sufficient statistics (count, sum, sum of outer
products of the concatenated teachers), summed over ranks with one ``all_reduce``; the fit
runs on the CPU and rank 0's maps are broadcast, so all ranks hold the same bits.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["ALIGNS", "SHRINKAGE", "Alignment", "finite_rows", "fit_alignment", "fit_from_moments", "fit_procrustes",
           "fit_gcca", "moments", "reduce_moments", "mean_cov", "principal_axes"]

ALIGNS = ("gcca", "procrustes", "none")
#: Whitening shrinkage (a fraction of the teacher's mean variance) of the default fit.
SHRINKAGE = 0.1

Maps = list[tuple[Tensor, Tensor]]  # per teacher: weight (out_dim, C_k), bias (out_dim,)


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def moments(x: Tensor) -> Tensor:
    """Sufficient statistics of the rows of ``x`` (M, C) as one float64 vector.

    Returns:
        (1 + C + C*C,): count, sum, sum of outer products (row-major). Sums of these vectors
        are the statistics of the union of the rows.
    """
    x = x.reshape(-1, x.shape[-1]).double()
    return torch.cat([x.new_tensor([x.shape[0]]), x.sum(0), (x.T @ x).flatten()])


def finite_rows(x: Tensor) -> Tensor:
    """The rows of ``x`` (M, C) without a non-finite value.

    A corrupt or poisoned image gives non-finite teacher tokens; its step's loss is non-finite
    anyway (``model.nan_policy`` decides about that step), but its tokens must not turn a fit
    that outlives the step into NaN (the adapters' PCA init).
    """
    return x[torch.isfinite(x).all(-1)]


def reduce_moments(stats: Tensor) -> Tensor:
    """Sum :func:`moments` over all ranks (in place, one ``all_reduce``); no-op without torch.distributed."""
    if _distributed():
        dist.all_reduce(stats)
    return stats


def mean_cov(stats: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """Mean (C,) and covariance (C, C) (1/n normalised) from :func:`moments` of width ``dim``."""
    if stats.numel() != 1 + dim + dim * dim:
        raise ValueError(f"alignment: statistics of {stats.numel()} values do not belong to width {dim}")
    n = stats[0]
    if n < 2:
        raise ValueError(f"alignment: needs at least 2 tokens, got {int(n)}")
    mean = stats[1:1 + dim] / n
    cov = stats[1 + dim:].view(dim, dim) / n - torch.outer(mean, mean)
    return mean, (cov + cov.T) / 2


def _signs(vecs: Tensor) -> Tensor:
    """(r,) the sign of each column's largest-magnitude entry (1 for a zero column)."""
    sign = torch.sign(vecs.gather(0, vecs.abs().argmax(0, keepdim=True)))[0]
    return torch.where(sign == 0, torch.ones_like(sign), sign)


def _fix_signs(vecs: Tensor) -> Tensor:
    """Flip each column so that its largest-magnitude entry is positive (a deterministic sign)."""
    return vecs * _signs(vecs)


#: Eigenvalues below this fraction of the largest count as zero: directions the tokens do not span
#: (fewer tokens than dimensions) are dropped, not given an arbitrary basis that rounding decides.
RANK_TOL = 1e-9


def principal_axes(cov: Tensor, r: int) -> tuple[Tensor, Tensor]:
    """Top-``r`` eigenpairs of a symmetric matrix: eigenvalues (r,) descending, vectors (C, r) sign-fixed."""
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    order = evals.argsort(descending=True)[:r]
    return evals[order].clamp(min=0), _fix_signs(evecs[:, order])


def _rank(evals: Tensor) -> int:
    """Number of eigenvalues (descending) above ``RANK_TOL`` of the largest."""
    return int((evals > RANK_TOL * evals[0].clamp(min=torch.finfo(evals.dtype).tiny)).sum())


def _polar(a: Tensor) -> Tensor:
    """The orthogonal factor of ``a`` (r, r): argmax_R tr(R^T a) over orthogonal R."""
    u, _, vh = torch.linalg.svd(a)
    return u @ vh


def _blocks(dims: Sequence[int]) -> list[slice]:
    out, start = [], 0
    for d in dims:
        out.append(slice(start, start + d))
        start += d
    return out


def _shared_rank(dims: Sequence[int], out_dim: int) -> int:
    if not dims or min(dims) < 1 or out_dim < 1:
        raise ValueError(f"alignment: teacher widths {list(dims)} and student width {out_dim} must be >= 1")
    return min(out_dim, min(dims))


def _finish(weights: list[Tensor], means: list[Tensor], out_dim: int) -> Maps:
    """Maps ``z = W (t - mean)`` as (weight, bias), zero-padded to ``out_dim`` rows.

    Each output channel's sign is fixed on all teachers' rows together (the largest-magnitude
    entry of the concatenated row is positive), so that the maps do not depend on the order of
    the teachers.
    """
    sign = _signs(torch.cat(weights, 1).T)[:, None]  # (r, 1)
    out = []
    for w, mu in zip(weights, means):
        w = w * sign
        full = w.new_zeros(out_dim, w.shape[1])
        full[: w.shape[0]] = w
        out.append((full, -(full @ mu)))
    return out


def fit_procrustes(mean: Tensor, cov: Tensor, dims: Sequence[int], out_dim: int, whiten: bool = True,
                   shrinkage: float = SHRINKAGE, iters: int = 200, tol: float = 1e-12) -> Maps:
    """Per-teacher PCA (whitened) to ``r`` dims, then generalized orthogonal Procrustes.

    Args:
        mean: (sum C_k,) token mean of the concatenated teachers (float64).
        cov: (sum C_k, sum C_k) their joint covariance over the same tokens.
        dims: teacher widths C_k, in the concatenation order.
        out_dim: student width d; ``r = min(d, min_k C_k)`` axes are fitted (fewer when the
            tokens span fewer), rows past ``r`` are zero.
        whiten: scale each principal axis to unit variance (else each teacher to unit mean
            variance per axis).
        shrinkage: whitening divides by ``sqrt(lambda + shrinkage * mean(lambda))`` (the mean
            over the teacher's whole spectrum), so that near-zero axes are not blown up.
        iters, tol: block coordinate ascent sweeps and the stopping change of the objective.

    Returns:
        per teacher (weight (out_dim, C_k), bias (out_dim,)): ``z = weight @ t + bias``.
    """
    blocks = _blocks(dims)
    axes = [principal_axes(cov[b, b], _shared_rank(dims, out_dim)) for b in blocks]
    r = min(_rank(evals) for evals, _ in axes)  # the axes every teacher's tokens span
    proj = []
    for b, (evals, evecs) in zip(blocks, axes):
        evals, evecs = evals[:r], evecs[:, :r]
        floor = shrinkage * torch.diagonal(cov[b, b]).mean()
        scale = (evals + floor).rsqrt() if whiten else (evals.mean() + floor).rsqrt().expand(r)
        proj.append(scale[:, None] * evecs.T)  # (r, C_k)
    k = len(dims)
    s = [[proj[i] @ cov[blocks[i], blocks[j]] @ proj[j].T for j in range(k)] for i in range(k)]
    rot = _procrustes_rotations(s, iters, tol)
    g = sum(rot[i].T @ s[i][j] @ rot[j] for i in range(k) for j in range(k)) / k**2  # consensus covariance
    frame = principal_axes((g + g.T) / 2, r)[1]
    weights = [(rot[i] @ frame).T @ proj[i] for i in range(k)]
    return _finish(weights, [mean[b] for b in blocks], out_dim)


def _procrustes_rotations(s: list[list[Tensor]], iters: int, tol: float) -> list[Tensor]:
    """Rotations R_k maximising ``sum_{k != j} tr(R_k^T S_kj R_j)`` (block coordinate ascent).

    Starts from R_0 = I and R_k = polar(S_k0); each sweep sets R_k = polar(sum_{j != k} S_kj R_j),
    which cannot lower the objective.
    """
    k = len(s)
    eye = torch.eye(s[0][0].shape[0], dtype=s[0][0].dtype)
    rot = [eye] + [_polar(s[i][0]) for i in range(1, k)]

    def objective() -> float:
        return float(sum(torch.trace(rot[i].T @ s[i][j] @ rot[j]) for i in range(k) for j in range(k) if i != j))

    last = objective()
    for _ in range(iters if k > 2 else 0):  # two teachers: polar(S_10) is already the optimum
        for i in range(k):
            rot[i] = _polar(sum(s[i][j] @ rot[j] for j in range(k) if j != i))
        now = objective()
        if abs(now - last) <= tol * max(1.0, abs(now)):
            break
        last = now
    return rot


def _inv_sqrt(c: Tensor, shrinkage: float) -> Tensor:
    """``(c + shrinkage * mean(diag c) I)^-1/2``; without shrinkage, directions ``c`` does not span get 0."""
    evals, evecs = torch.linalg.eigh(c)
    w = evals.clamp(min=0) + shrinkage * torch.diagonal(c).mean()
    inv = torch.where(w > RANK_TOL * w.max(), w.clamp(min=torch.finfo(w.dtype).tiny).rsqrt(), torch.zeros_like(w))
    return (evecs * inv) @ evecs.T


def fit_gcca(mean: Tensor, cov: Tensor, dims: Sequence[int], out_dim: int, shrinkage: float = SHRINKAGE) -> Maps:
    """Generalized CCA (MAXVAR) of the teachers to ``r = min(d, min_k C_k)`` shared directions.

    Each teacher is whitened at full width (``(Sigma_kk + shrinkage * mean(diag) I)^-1/2``); the
    maps are the blocks ``E_k`` of the top-``r`` eigenvectors of the whitened joint covariance:
    ``z_k = E_k^T W_k (t_k - mean_k)``. Arguments and return as :func:`fit_procrustes`.
    """
    blocks = _blocks(dims)
    whitening = torch.zeros_like(cov)
    for b in blocks:
        whitening[b, b] = _inv_sqrt(cov[b, b], shrinkage)
    evals, evecs = principal_axes(whitening @ cov @ whitening, _shared_rank(dims, out_dim))  # (sum C_k, r)
    evecs = evecs[:, :_rank(evals)]
    weights = [evecs[b].T @ whitening[b, b] for b in blocks]
    return _finish(weights, [mean[b] for b in blocks], out_dim)


def fit_from_moments(stats: Tensor, dims: Sequence[int], out_dim: int, method: str = "gcca",
                     whiten: bool = True, shrinkage: float = SHRINKAGE) -> Maps:
    """The maps of ``method`` from :func:`moments` of the concatenated teachers (float64, on the CPU)."""
    mean, cov = mean_cov(stats.detach().to("cpu", torch.float64), sum(dims))
    if method == "procrustes":
        return fit_procrustes(mean, cov, dims, out_dim, whiten=whiten, shrinkage=shrinkage)
    if method == "gcca":
        return fit_gcca(mean, cov, dims, out_dim, shrinkage=shrinkage)
    raise ValueError(f"alignment method must be one of {ALIGNS[:2]} to fit, got {method!r}")


def fit_alignment(feats: Sequence[Tensor], out_dim: int, method: str = "gcca", whiten: bool = True,
                  shrinkage: float = SHRINKAGE) -> Maps:
    """Fit the maps on the teachers' features at the same tokens (one process).

    Args:
        feats: per teacher (M, C_k) features, row m of every teacher at the same token (a
            (K, M, C) tensor works too).
        out_dim: student width.

    Returns:
        per teacher (weight (out_dim, C_k), bias (out_dim,)) in float64.
    """
    if len({f.shape[0] for f in feats}) != 1:
        raise ValueError(f"alignment: the teachers' features must be of the same tokens, got counts "
                         f"{[f.shape[0] for f in feats]}")
    stats = moments(torch.cat([f.reshape(f.shape[0], -1) for f in feats], 1))
    return fit_from_moments(stats, [f.shape[-1] for f in feats], out_dim, method, whiten, shrinkage)


class Alignment(nn.Module):
    """Fits the adapters' shared-space maps on the first ``fit_images`` images, then freezes them.

    Holds no maps itself (they live in the adapters, which the caller sets to what
    :meth:`observe` returns); holds whether the fit is done (buffer ``done``, checkpointed, with
    a host-side mirror so that no step reads a GPU buffer) and, while accumulating over several
    steps, the running statistics (checkpointed as the module's extra state, an empty tensor once
    done), so that a resumed run neither refits nor fits on other images.

    Args:
        dims: teacher widths C_k.
        out_dim: student width.
        method: ``procrustes`` | ``gcca`` | ``none`` (nothing to fit: ``done`` from the start).
        whiten, shrinkage: see :func:`fit_procrustes` / :func:`fit_gcca`.
        fit_images: the fit uses the steps until this many images (all ranks) were seen, then
            freezes. Counted in images, not steps, so that the fit sees the same images whatever
            the GPU count. Until then it refits on all tokens so far after the first step and
            whenever the images seen have doubled since the last fit (a handful of fits, not
            one per step: each is a float64 eigendecomposition on the CPU).
    """

    def __init__(self, dims: Sequence[int], out_dim: int, method: str = "gcca", whiten: bool = True,
                 shrinkage: float = SHRINKAGE, fit_images: int = 4096) -> None:
        super().__init__()
        if method not in ALIGNS:
            raise ValueError(f"model.adapter.align must be one of {ALIGNS}, got {method!r}")
        if not isinstance(fit_images, int) or isinstance(fit_images, bool) or fit_images < 1:
            raise ValueError(f"model.adapter.fit_images must be an int >= 1, got {fit_images!r}")
        if not 0 <= float(shrinkage) < 1:
            raise ValueError(f"model.adapter.shrinkage must be in [0, 1), got {shrinkage!r}")
        self.dims, self.out_dim, self.method = [int(d) for d in dims], int(out_dim), method
        self.whiten, self.shrinkage, self.fit_images = bool(whiten), float(shrinkage), fit_images
        self.register_buffer("done", torch.tensor(method == "none"))
        self._pending = method != "none"  # host mirror of ``not done``
        self._stats: Tensor | None = None  # [images, *moments] of the steps so far (all ranks)
        self._last_fit = 0  # images in the statistics at the last fit
        self.fitted_on = (0, 0)  # (images, tokens) of the last fit, all ranks
        self.dropped = False  # whether the last observed step was left out (non-finite features)

    @property
    def pending(self) -> bool:
        return self._pending

    @torch.no_grad()
    def observe(self, feats: Sequence[Tensor], images: int) -> Maps | None:
        """Add one step's features at the tokens all teachers saw; refit when due and return the maps.

        Args:
            feats: per teacher (M, C_k), the same M tokens (M may differ between ranks, even 0);
                every rank must call this in the same step.
            images: this rank's images in the step.

        Returns:
            per teacher (weight (out_dim, C_k), bias (out_dim,)) in float64 on the CPU, the same
            on every rank, when this step refitted; else None (keep the maps). A step where some
            rank's features were not finite (a corrupt or poisoned image: that step's loss is not
            finite either and ``model.nan_policy`` decides about it) is left out of the fit on
            every rank as a whole, whichever image it was, so that the maps stay finite and do
            not depend on the GPU count (``dropped`` is then True).
        """
        if not self._pending:
            raise RuntimeError("alignment: the fit is done; observe() is for the first fit_images images")
        if [f.shape[-1] for f in feats] != self.dims:
            raise ValueError(f"alignment: features of widths {[f.shape[-1] for f in feats]}, expected {self.dims}")
        x = torch.cat([f.reshape(-1, f.shape[-1]) for f in feats], -1)
        step = reduce_moments(torch.cat([x.new_tensor([images], dtype=torch.float64), moments(x)]))
        self.dropped = not bool(torch.isfinite(step).all())  # the same answer on every rank (reduced)
        if self.dropped:
            return None
        self._stats = step if self._stats is None else self._stats.to(step.device) + step
        seen, last = int(self._stats[0]), self._last_fit
        if not (seen >= self.fit_images or last == 0 or seen >= 2 * last):
            return None
        maps = fit_from_moments(self._stats[1:], self.dims, self.out_dim, self.method, self.whiten, self.shrinkage)
        if _distributed():  # one rank's bits everywhere, whatever each CPU's LAPACK rounded
            flat = torch.cat([t.flatten() for m in maps for t in m]).to(self._stats.device)
            dist.broadcast(flat, src=0)
            maps = _unflatten(flat.cpu(), maps)
        self._last_fit, self.fitted_on = seen, (seen, int(self._stats[1]))
        if seen >= self.fit_images:
            self.done.fill_(True)
            self._pending, self._stats = False, None
        return maps

    def get_extra_state(self) -> Tensor:
        """[images at the last fit, images, *moments] while the fit runs, else empty."""
        if self._stats is None:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat([self._stats.new_tensor([self._last_fit]), self._stats]).cpu()

    def set_extra_state(self, state: Tensor) -> None:
        if state.numel() == 0:
            self._stats, self._last_fit = None, 0
            return
        want = 3 + sum(self.dims) + sum(self.dims) ** 2
        if state.numel() != want:
            raise ValueError(f"alignment: checkpointed statistics have {state.numel()} values, this model's "
                             f"teachers (widths {self.dims}) need {want}")
        self._last_fit, self._stats = int(state[0]), state[1:].to(self.done.device, torch.float64)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._pending = not bool(self.done)
        if not self._pending:
            self._stats, self._last_fit = None, 0

    def extra_repr(self) -> str:
        return (f"method={self.method}, dims={self.dims}, out_dim={self.out_dim}, whiten={self.whiten}, "
                f"shrinkage={self.shrinkage}, fit_images={self.fit_images}")


def _unflatten(flat: Tensor, like: Maps) -> Maps:
    out, i = [], 0
    for w, b in like:
        out.append((flat[i:i + w.numel()].view_as(w), flat[i + w.numel():i + w.numel() + b.numel()].view_as(b)))
        i += w.numel() + b.numel()
    return out
