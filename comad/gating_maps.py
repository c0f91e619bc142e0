"""Gating maps: which teacher's target wins at each patch of real images (docs/method.md §2, row 5).

A distillation checkpoint (its config + an ``iter_N.pth``) is rebuilt as the
:class:`~comad.distiller.CoMADDistiller` it was trained as (student, decoder, fitted adapters and
alignment loaded strictly; teachers re-read from their files), and run on images with

- every teacher seeing **every** patch, so each teacher has a weight at every position (in
  training each sees its own random share; the maps show what the gating would choose if all
  of them saw the patch — the ``gate_shared_<teacher>`` statistic of the logs, per patch);
- the student seeing its training share of the patches (``masking.student_keep``) drawn with a
  fixed seed: its prediction is the encoder output on those and the decoder's elsewhere, as in
  training.

:func:`gating_maps` returns per image and patch each teacher's weight ``w_k(p)``, its agreement
``c_k(p)`` with the other teachers and its affinity ``a_k(p)`` with the student;
:func:`draw_gating_maps` draws the weights over the images with the mean agreement and affinity.
``tools/gating_maps.py`` is the command line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .io import CheckpointError, atomic_open, atomic_write_json
from .masking import Masks

__all__ = ["GatingMaps", "load_distiller", "prepare_images", "gating_maps", "draw_gating_maps", "summary_line"]


@dataclass
class GatingMaps:
    """Per-patch gating of a batch: ``weights``, ``agreement``, ``affinity`` (K, B, g, g) on the
    ``g x g`` patch grid; ``teachers`` their names; ``images`` the (B, S, S, 3) uint8 inputs."""

    teachers: list[str]
    weights: np.ndarray
    agreement: np.ndarray
    affinity: np.ndarray
    images: np.ndarray

    def summary(self) -> dict[str, Any]:
        """Per image (rows) and teacher (columns): the mean weight, agreement and affinity over the patches."""
        return dict(teachers=self.teachers, mean_weight=self.weights.mean(axis=(2, 3)).T.round(4).tolist(),
                    mean_agreement=self.agreement.mean(axis=(2, 3)).T.round(4).tolist(),
                    mean_affinity=self.affinity.mean(axis=(2, 3)).T.round(4).tolist())


def load_distiller(config: str | os.PathLike, checkpoint: str | os.PathLike, device: str = "cpu") -> Any:
    """The distiller of ``config`` with the weights of the distillation checkpoint ``checkpoint``.

    Raises:
        CheckpointError: the file is no CoMAD distillation checkpoint, its weights do not fit
            the config's model, or it was saved inside the alignment's fit phase.
    """
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from .engine.launch import prepare_demo_teachers
    from .mm_compat import load_local_checkpoint

    cfg = Config.fromfile(str(config))
    if cfg.get("demo"):
        prepare_demo_teachers(cfg.demo)  # the demo's synthetic teachers, as the run wrote them
    import comad.engine  # noqa: F401  (registers CoMADDistiller and ComadDataPreprocessor)

    model = MODELS.build(cfg.model)
    ckpt = load_local_checkpoint(str(checkpoint))
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {checkpoint}: not a CoMAD distillation checkpoint (no 'state_dict')")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {checkpoint}: its weights do not fit the model of {config}: {e}") from None
    if model.fit_pending():
        raise CheckpointError(f"checkpoint {checkpoint}: saved inside the alignment's fit phase "
                              f"(model.adapter.fit_images); gating maps need the fitted, frozen alignment")
    return model.to(device).eval()


def prepare_images(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """RGB uint8 arrays -> (B, size, size, 3) uint8: the centre square of each, resized (bicubic)."""
    from PIL import Image

    out = []
    for arr in images:
        img = Image.fromarray(np.asarray(arr, dtype=np.uint8)).convert("RGB")
        w, h = img.size
        s = min(w, h)
        img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        out.append(np.asarray(img.resize((size, size), Image.Resampling.BICUBIC)))
    return np.stack(out)


def _all_patch_masks(model: Any, batch: int, device: torch.device, seed: int) -> Masks:
    """The student's training share of patches (seeded); every teacher sees every patch."""
    g = torch.Generator().manual_seed(seed)
    drawn = model.mask_generator(batch, generator=g, device="cpu", progress=1.0)
    n = drawn.num_positions
    full = torch.arange(n, dtype=torch.long).expand(batch, n).contiguous()
    return Masks(drawn.student, [full] * len(model.teachers), n).to(device)


@torch.no_grad()
def gating_maps(model: Any, images: np.ndarray, seed: int = 0) -> GatingMaps:
    """Run the gating on ``images`` ((B, S, S, 3) uint8 at the model's ``img_size``)."""
    dev = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(dev)
    inputs = model.data_preprocessor(dict(inputs=x), training=False)["inputs"]
    masks = _all_patch_masks(model, x.shape[0], dev, seed)
    g = model.gate(inputs, masks, *model.teacher_targets(inputs, masks))
    p = int(model.include_cls)
    side = int(round(masks.num_positions ** 0.5))

    def grid(t: Tensor) -> np.ndarray:
        return t[:, :, p:].float().reshape(t.shape[0], t.shape[1], side, side).cpu().numpy()

    return GatingMaps(list(model.teacher_names), grid(g.weights), grid(g.agreement), grid(g.affinity), images)


def _panel(ax: Any, img: np.ndarray, values: np.ndarray | None, title: str, cmap: str, vmin: float, vmax: float) -> Any:
    ax.imshow(img)
    ax.set_title(title, fontsize=7)
    ax.axis("off")
    if values is None:
        return None
    h, w = img.shape[:2]
    return ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, alpha=0.6, interpolation="nearest", extent=(0, w, h, 0))


def draw_gating_maps(maps: GatingMaps, out: str | os.PathLike, names: Sequence[str] | None = None) -> Path:
    """One row per image: the image, each teacher's weight over it, each teacher's agreement with
    the others, and the student's affinity (mean over the teachers).

    Writes ``out`` (PNG) and ``<out>.json`` (:meth:`GatingMaps.summary`) atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, b = maps.weights.shape[:2]
    names = list(names) if names is not None else [f"image {i}" for i in range(b)]
    fig, axes = plt.subplots(b, 2 * k + 2, figsize=(1.9 * (2 * k + 2) + 1.5, 2.1 * b), squeeze=False)
    for i in range(b):
        img = maps.images[i]
        _panel(axes[i, 0], img, None, names[i], "magma", 0, 1)
        for t, name in enumerate(maps.teachers):
            w, c = maps.weights[t, i], maps.agreement[t, i]
            m = _panel(axes[i, 1 + t], img, w, f"{name} weight {w.mean():.2f}", "magma", 0.0, 1.0)
            a = _panel(axes[i, 1 + k + t], img, c, f"{name} agreement {c.mean():.2f}", "coolwarm", -1.0, 1.0)
        aff = maps.affinity[:, i].mean(0)
        _panel(axes[i, 2 * k + 1], img, aff, f"affinity (mean) {aff.mean():.2f}", "coolwarm", -1.0, 1.0)
    fig.colorbar(m, ax=axes[:, 1:k + 1].ravel().tolist(), shrink=0.6, label="teacher weight")
    fig.colorbar(a, ax=axes[:, k + 1:].ravel().tolist(), shrink=0.6, label="cosine")
    out = Path(out)
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
    atomic_write_json(dict(maps.summary(), images=list(names)), out.with_suffix(".json"))
    return out


def summary_line(maps: GatingMaps) -> str:
    """One line: each teacher's mean weight over all images and patches."""
    w = maps.weights.mean(axis=(1, 2, 3))
    return ", ".join(f"{n} {v:.2f}" for n, v in zip(maps.teachers, w))
