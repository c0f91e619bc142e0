"""What the benchmark runs on: size presets, synthetic teacher files, and the pieces of a step.

Both steps share the frozen teachers and adapters; the naive step trains copies of the
distiller's student and decoder (same initial weights), so neither step's updates reach the
other. Without mmengine (``comad.distiller`` not importable) the same pieces are built directly
and only the naive rows run.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from comad.masking import MaskGenerator

__all__ = ["TEACHER_FORMATS", "PRESETS", "Parts", "load_distiller", "write_teachers", "build_parts",
           "fused_attention_report"]

TEACHER_FORMATS = ("mae", "ibot", "mocov3")
#: small projection heads in the synthetic teacher files (dropped at load; keeps writes quick)
_HEAD_OPTS: dict[str, dict[str, int]] = {"mae": {}, "ibot": dict(out_dim=256, patch_out_dim=256),
                                         "mocov3": dict(mlp_dim=256, out_dim=64)}

PRESETS: dict[str, dict[str, Any]] = {
    # the paper's setting: three ViT-B/16 teachers, ViT-Tiny student, 224 px
    "full": dict(img_size=224, teacher=dict(embed_dim=768, depth=12, num_heads=12),
                 student="vit_tiny_patch16_224", decoder=dict(depth=2, num_heads=3),
                 student_keep=0.25, teacher_keep=(0.50, 0.65, 0.80), matmul_n=8192),
    # the CPU configuration of the issue: ViT-S-sized teachers, 112 px
    "small": dict(img_size=112, teacher=dict(embed_dim=384, depth=12, num_heads=6),
                  student="vit_tiny_patch16_224", decoder=dict(depth=2, num_heads=3),
                  student_keep=0.25, teacher_keep=(0.50, 0.65, 0.80), matmul_n=1024),
    # for the test suite
    "tiny": dict(img_size=64, teacher=dict(embed_dim=32, depth=2, num_heads=2),
                 student=dict(embed_dim=32, depth=2, num_heads=2), decoder=dict(depth=1, num_heads=2),
                 student_keep=0.25, teacher_keep=(0.50, 0.65, 0.80), matmul_n=128),
}


@dataclass
class Parts:
    """The pieces both steps use: frozen teachers and adapters, a student and a decoder."""

    teachers: list[nn.Module]  # comad.teachers.Teacher
    adapters: nn.ModuleList
    student: nn.Module
    decoder: nn.Module
    mask_generator: MaskGenerator
    gating_cfg: dict[str, Any]
    loss_cfg: dict[str, Any]
    teacher_layers: list[int] = field(default_factory=list)


def load_distiller() -> tuple[Any, str | None]:
    """(``CoMADDistiller``, None), or (None, why it is not importable)."""
    try:
        from comad.distiller import CoMADDistiller
    except ImportError as e:
        return None, f"comad.distiller is not importable ({e}); install the carried wheels (benchmarks/gpu_run.sh)"
    return CoMADDistiller, None


def write_teachers(preset: dict[str, Any], folder: Path) -> list[Path]:
    """Synthetic teachers in the three official layouts (random weights, seeded); existing files are kept."""
    from comad.teachers.synthetic import write_checkpoint

    paths = []
    t = preset["teacher"]
    for i, fmt in enumerate(TEACHER_FORMATS[: len(preset["teacher_keep"])]):
        path = folder / f"{fmt}_{t['embed_dim']}x{t['depth']}_{preset['img_size']}.pth"
        if not path.is_file():
            write_checkpoint(fmt, path, embed_dim=t["embed_dim"], depth=t["depth"], num_heads=t["num_heads"],
                             img_size=preset["img_size"], seed=i, **_HEAD_OPTS[fmt])
        paths.append(path)
    return paths


def build_parts(preset: dict[str, Any], ckpts: Sequence[Path], device: torch.device,
                distiller_cls: Any = "import") -> tuple[Any, Parts]:
    """(the distiller or None, the parts of the naive step: shared frozen teachers/adapters,
    copies of the distiller's student and decoder).

    ``distiller_cls``: ``CoMADDistiller``, None (build the pieces without it), or ``'import'``
    (the default: :func:`load_distiller`).
    """
    cls = load_distiller()[0] if isinstance(distiller_cls, str) and distiller_cls == "import" else distiller_cls
    if cls is None:
        return None, _parts_without_distiller(preset, ckpts, device)
    t = preset["teacher"]
    teachers_cfg = [dict(name=f, checkpoint=str(p), format=f, num_heads=t["num_heads"]) for f, p in zip(TEACHER_FORMATS, ckpts)]
    masking = dict(student_keep=preset["student_keep"], teacher_keep=list(preset["teacher_keep"]))
    torch.manual_seed(0)
    # the alignment is fitted on the first image and frozen before any timed step, so that every
    # timed step is a steady-state one (compilable, no statistics); its cost is the align-fit row
    m = cls(teachers=teachers_cfg, student=dict(arch=preset["student"]), decoder=dict(preset["decoder"]),
            masking=masking, img_size=preset["img_size"], adapter=dict(fit_images=1)).to(device)
    m.train()
    if m.fit_pending():
        x = torch.randn(1, 3, preset["img_size"], preset["img_size"], generator=torch.Generator().manual_seed(0))
        m.teacher_targets(x.to(device), m.make_masks(1, device, step=0))
    parts = Parts(list(m.teachers), m.adapters, copy.deepcopy(m.student), copy.deepcopy(m.decoder),
                  m.mask_generator, dict(m.gating_cfg), dict(m.loss_cfg), list(m.teacher_layers))
    return m, parts


def _parts_without_distiller(preset: dict[str, Any], ckpts: Sequence[Path], device: torch.device) -> Parts:
    """The same pieces built directly (for the naive rows only, where mmengine is missing): the
    adapters keep their seeded maps instead of a fitted alignment, which changes their values,
    not the computation a naive step times."""
    from comad.adapters import Adapter
    from comad.models.decoder import MaskedDecoder
    from comad.checkpoint import build_vit
    from comad.teachers import load_teacher

    t = preset["teacher"]
    torch.manual_seed(0)
    s = build_vit(preset["student"], img_size=preset["img_size"])
    n = int(s.patch_embed.num_patches)
    teachers = [load_teacher(p, format=f, img_size=preset["img_size"], num_heads=t["num_heads"])
                for f, p in zip(TEACHER_FORMATS, ckpts)]
    dec = MaskedDecoder(s.embed_dim, n, embed_dim=s.embed_dim, depth=preset["decoder"]["depth"],
                        num_heads=preset["decoder"]["num_heads"], out_dim=s.embed_dim)
    adapters = nn.ModuleList(Adapter(tc.embed_dim, s.embed_dim, seed=1000 + i) for i, tc in enumerate(teachers))
    for mod in (*teachers, adapters, s, dec):
        mod.to(device)
    s.train()
    dec.train()
    return Parts(teachers, adapters, s, dec, MaskGenerator(n, preset["student_keep"], preset["teacher_keep"]),
                 dict(mode="joint", combine="sum", temperature=0.1, stop_gradient=True),
                 dict(token_weight=1.0, map_weight=1.0, token_tau=1.0, map_tau=4.0, map_positions="targets"),
                 [-1] * len(teachers))


def fused_attention_report(parts: Parts) -> dict[str, bool]:
    """Whether every attention block of each ViT uses timm's fused SDPA path."""
    def fused(blocks: Sequence[nn.Module]) -> bool:
        return all(bool(getattr(b.attn, "fused_attn", False)) for b in blocks)

    out = {f"teacher_{t.name}": fused(t.vit.blocks) for t in parts.teachers}
    out["student"] = fused(parts.student.blocks)
    out["decoder"] = fused(parts.decoder.blocks)
    return out
