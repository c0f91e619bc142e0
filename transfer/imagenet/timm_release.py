"""The fine-tuned classifier as a release that stock timm builds (published by the task layer).

``<work_dir>/release/<name>-<sha8>.pth`` holds the weights and plain meta; ``<name>.json`` says how
stock timm builds and feeds it::

    cfg = json.load(open("<name>.json"))
    model = timm.models.vision_transformer.VisionTransformer(**cfg["model_args"])
    model.load_state_dict(torch.load("<name>-<sha8>.pth", weights_only=True)["state_dict"])
    transform = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=cfg["pretrained_cfg"]))
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from comad.release import Release

__all__ = ["finetune_release"]


def finetune_release(model: Any, config: str | Path, eval_transform: dict[str, Any], classes: list[str] | None,
                     student: str | Path, student_sha256: str, step: int, seed: int) -> Release:
    """The :class:`~transfer.imagenet.models.ViTClassifier` ``model`` as a :class:`~comad.release.Release`
    with a timm config (.json); ``eval_transform``: the config's test transform (``kind='timm'`` keys)."""
    from ..metrics_io import student_name

    net = model.net
    size = int(eval_transform["input_size"])
    num_classes = int(net.num_classes)
    args = {k: v for k, v in model.arch.items() if k != "num_positions"}  # as comad.checkpoint.build_vit builds it
    args.update(img_size=size, num_heads=int(net.blocks[0].attn.num_heads), num_classes=num_classes,
                global_pool=net.global_pool)
    pretrained_cfg = dict(input_size=[3, size, size], interpolation=eval_transform["interpolation"],
                          mean=list(eval_transform["mean"]), std=list(eval_transform["std"]),
                          crop_pct=eval_transform["crop_pct"], crop_mode="center", num_classes=num_classes,
                          first_conv="patch_embed.proj", classifier="head")
    name = f"{Path(config).stem}_{student_name(student)}"
    names = list(classes) if classes else None
    spec = dict(architecture="timm.models.vision_transformer.VisionTransformer", model_args=args,
                pretrained_cfg=pretrained_cfg, classes=names, weights=f"{name}-<sha8>.pth")
    meta = dict(dataset_meta=dict(classes=names), task="imagenet-ft", iter=int(step), seed=int(seed),
                config=f"{name}.json", benchmark_config=str(config), student=str(student),
                student_sha256=student_sha256, arch=args)
    return Release(name=name, state_dict=net.state_dict(), meta=meta,
                   config_text=json.dumps(spec, indent=2, sort_keys=True) + "\n", config_suffix=".json")
