"""The distiller's configuration: ``model.*`` keys, their defaults and checks (:class:`~comad.distiller.CoMADDistiller`).

Each check names the config key and what was expected, so that a wrong config fails at build
time with the key in the message.
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

from torch import nn

from .align import SHRINKAGE
from .fusion import FUSION_MODES
from .standardize import STANDARDIZE_DEFAULTS
from .masking import MaskGenerator
from .teachers.teacher import PRECISIONS

__all__ = ["TEACHER_KEYS", "ADAPTER_DEFAULTS", "COMPILE_KEYS", "check_keys", "compile_options_of",
           "resolve_teacher_precision", "build_mask_generator", "has_cls", "input_stats", "mask_seed_of",
           "FUSION_DEFAULTS", "fusion_options", "standardize_options", "GATING_DEFAULTS", "LOSS_DEFAULTS",
           "section"]


def check_keys(section: str, cfg: dict[str, Any], allowed: Sequence[str]) -> None:
    """``model.<section>`` has only ``allowed`` keys (else a ValueError naming the unknown ones)."""
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"model.{section}: unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def section(name: str, cfg: dict[str, Any] | None, defaults: dict[str, Any]) -> dict[str, Any]:
    """``model.<name>`` over its defaults (unknown keys are a ValueError naming them)."""
    check_keys(name, cfg or {}, list(defaults))
    return {**defaults, **(cfg or {})}


#: ``model.gating`` keys and their defaults (docs/method.md §2, row 5; comad.gating).
GATING_DEFAULTS = dict(mode="joint", combine="sum", temperature=0.1, stop_gradient=True)
#: ``model.loss`` keys and their defaults (docs/method.md §2, row 6; comad.losses).
LOSS_DEFAULTS = dict(token_weight=1.0, map_weight=1.0, token_tau=1.0, map_tau=4.0, map_positions="targets")

COMPILE_KEYS = ("backend", "mode", "dynamic", "fullgraph", "options")


def compile_options_of(compile: bool | str | dict[str, Any]) -> dict[str, Any] | None:
    """``model.compile`` as keyword arguments of ``torch.compile`` (None: eager)."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return {}
    if isinstance(compile, dict):
        check_keys("compile", compile, COMPILE_KEYS)
        return dict(compile)
    raise ValueError(f"model.compile must be True, False, 'auto' or a dict of torch.compile options {COMPILE_KEYS}, "
                     f"got {compile!r}")


def mask_seed_of(seed: int, step: int) -> int:
    """The seed of step ``step``'s masks in the stream ``seed`` (a hash: independent across steps)."""
    digest = hashlib.sha256(f"comad-mask:{seed}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def resolve_teacher_precision(teacher_precision: str, teacher_amp: bool | None) -> str:
    """``model.teacher_precision``, or the older ``model.teacher_amp`` switch, checked."""
    if teacher_amp is not None:
        if teacher_precision != "amp":
            raise ValueError("model.teacher_amp and model.teacher_precision are both set; keep teacher_precision")
        teacher_precision = "amp" if teacher_amp else "fp32"
    if teacher_precision not in PRECISIONS:
        raise ValueError(f"model.teacher_precision must be one of {PRECISIONS}, got {teacher_precision!r}")
    return teacher_precision


def build_mask_generator(masking: dict[str, Any], n: int, teachers: list[dict[str, Any]]) -> MaskGenerator:
    """``model.masking`` -> the step's mask generator over ``n`` positions (one keep ratio per teacher)."""
    keep = masking.get("teacher_keep", (0.50, 0.65, 0.80))
    if len(keep) != len(teachers):
        raise ValueError(
            f"model.masking.teacher_keep has {len(keep)} ratio(s) {list(keep)} for {len(teachers)} teacher(s) "
            f"{[t.get('name') for t in teachers]}; give exactly one keep ratio per teacher"
        )
    return MaskGenerator(n, masking.get("student_keep", 0.25), keep, masking.get("nested", True),
                         masking.get("teacher_keep_end"))


def has_cls(vit: nn.Module | None) -> bool:
    """Whether a ViT has a CLS token."""
    return getattr(vit, "cls_token", None) is not None


def input_stats(data_preprocessor: dict[str, Any] | nn.Module | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) on the 0-1 scale the batches are normalised with: the preprocessor's
    (``ComadDataPreprocessor``'s ``mean`` / ``std``, as a config dict or the built module), else
    ImageNet's (comad's transforms' default)."""
    from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    norm = getattr(data_preprocessor, "normalize", None)
    if isinstance(data_preprocessor, nn.Module) and norm is not None:  # Normalize255 holds 255 * mean, 255 * std
        return tuple((norm.mean.flatten() / 255).tolist()), tuple((norm.std.flatten() / 255).tolist())
    cfg = data_preprocessor if isinstance(data_preprocessor, dict) else {}
    return tuple(cfg.get("mean", IMAGENET_DEFAULT_MEAN)), tuple(cfg.get("std", IMAGENET_DEFAULT_STD))


TEACHER_KEYS = ("name", "checkpoint", "format", "encoder", "arch", "num_heads", "layer", "patch_size", "img_size")
#: ``model.adapter`` keys and their defaults (docs/method.md §2, row 3; see comad.align).
ADAPTER_DEFAULTS = dict(align="gcca", whiten=True, shrinkage=SHRINKAGE, fit_images=4096, init="orthogonal",
                        trainable=False)
#: ``model.fusion`` keys and their defaults (comad.fusion).
FUSION_DEFAULTS = dict(mode="gated", teacher_drop=0.0, head_hidden=None)


def fusion_options(fusion: dict[str, Any]) -> dict[str, Any]:
    """``model.fusion`` with its defaults, checked (teacher dropping is defined on per-teacher losses)."""
    check_keys("fusion", fusion, list(FUSION_DEFAULTS))
    cfg = {**FUSION_DEFAULTS, **fusion}
    if cfg["mode"] not in FUSION_MODES:
        raise ValueError(f"model.fusion.mode must be one of {FUSION_MODES}, got {cfg['mode']!r}")
    drop = cfg["teacher_drop"]
    if not isinstance(drop, (int, float)) or not 0.0 <= drop < 1.0:
        raise ValueError(f"model.fusion.teacher_drop must be a probability in [0, 1), got {drop!r}")
    if drop and cfg["mode"] != "per-teacher":
        raise ValueError("model.fusion.teacher_drop needs fusion.mode='per-teacher' (UNIC's dropping is defined on "
                         "per-teacher losses; the gated target has one loss)")
    return cfg


def standardize_options(standardize: bool | dict[str, Any]) -> dict[str, Any] | None:
    """``model.standardize``: None (off), or the :class:`~comad.standardize.Standardizer` keywords."""
    if standardize is False or standardize is None:
        return None
    if standardize is True:
        return dict(STANDARDIZE_DEFAULTS)
    if isinstance(standardize, dict):
        check_keys("standardize", standardize, list(STANDARDIZE_DEFAULTS))
        return {**STANDARDIZE_DEFAULTS, **standardize}
    raise ValueError(f"model.standardize must be True, False or a dict of {sorted(STANDARDIZE_DEFAULTS)}, "
                     f"got {standardize!r}")
