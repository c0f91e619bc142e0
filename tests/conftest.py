"""Fixtures shared by the test modules.

``make_student(folder, shape="tiny", seed=0, **arch)`` exports a seeded, untrained ViT in the
project's student format (``comad.export.export_student``: ``<folder>/student.safetensors`` +
``student.pth``, position embeddings at 224 px) and returns the safetensors path. Shapes:

- ``tiny``: 32 px, patch 8, width 32, depth 2, 2 heads (the ImageNet-task and fine-tune tests);
- ``transfer``: 64 px, patch 16, width 48, depth 6, 3 heads (the dense tasks: UperNet reads four
  blocks, which the transfer configs map onto these six).

``run_demo_distill(work_dir, max_iters, interval)`` runs ``tools/distill.sh`` (the embedded
demo) for a few iterations of 4 images, checkpoints every ``interval``, the LATEST_STUDENT
pointer beside the work dir, and returns the finished process.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

STUDENT_SHAPES: dict[str, dict[str, int]] = {
    "tiny": dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2),
    "transfer": dict(img_size=64, patch_size=16, embed_dim=48, depth=6, num_heads=3),
}


@pytest.fixture(scope="session")
def make_student() -> Callable[..., Path]:
    from timm.models.vision_transformer import VisionTransformer

    from comad.export import export_student

    def make(folder: Path, shape: str = "tiny", seed: int = 0, **arch: Any) -> Path:
        torch.manual_seed(seed)
        vit = VisionTransformer(**{**STUDENT_SHAPES[shape], **arch}, num_classes=0)
        return export_student(vit, Path(folder))

    return make


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def run_demo_distill() -> Callable[..., subprocess.CompletedProcess]:
    def run(work_dir: Path, max_iters: int, interval: int) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.run(["bash", "tools/distill.sh", "--work-dir", str(work_dir), "--cfg-options",
                               f"schedule.max_iters={max_iters}", f"default_hooks.checkpoint.interval={interval}",
                               "train_dataloader.batch_size=4",
                               f"custom_hooks.0.latest_pointer={Path(work_dir).parent / 'LATEST_STUDENT'}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)

    return run
