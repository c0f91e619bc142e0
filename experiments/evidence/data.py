"""Fashion-MNIST for the evidence run: the fixed probe subsets, the unlabelled distillation pool, batches.

The four idx files of the Debian package ``dataset-fashion-mnist`` are read as they are. The
probe subsets are fixed by ``split_seed`` alone (the same for every seed and condition): a
class-balanced probe-train set from the training split, a class-balanced probe-test set from the
test split. The distillation pool is every other training image, used without labels, so no
probe image is ever distilled on. A run seed only orders the pool.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor

from comad.data.idx import read_idx
from transfer.imagenet.demo_data import FASHION_MNIST_DIR as DEBIAN_DIR

__all__ = ["FASHION_MNIST_DIR", "FILES", "CLASSES", "FashionMNIST", "load_fashion_mnist", "to_batch"]

#: Where the idx files are: ``COMAD_FASHION_MNIST`` (as experiments/evidence_setup.sh), else the Debian package's folder.
FASHION_MNIST_DIR = Path(os.environ.get("COMAD_FASHION_MNIST", str(DEBIAN_DIR)))
FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
         "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def _balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator, what: str) -> np.ndarray:
    order = rng.permutation(len(labels))
    picks = [order[labels[order] == c][:per_class] for c in range(len(CLASSES))]
    short = [CLASSES[c] for c, p in enumerate(picks) if len(p) < per_class]
    if short:
        raise ValueError(f"Fashion-MNIST {what}: fewer than {per_class} images of {short}")
    return np.sort(np.concatenate(picks))


@dataclass
class FashionMNIST:
    """The evidence run's images (uint8, (N, 28, 28)) and labels.

    Attributes:
        probe_train_x, probe_train_y: the probe's training subset (from the training split).
        probe_test_x, probe_test_y: its test subset (from the test split).
        pool: the distillation images (the rest of the training split; no labels).
    """

    probe_train_x: np.ndarray
    probe_train_y: np.ndarray
    probe_test_x: np.ndarray
    probe_test_y: np.ndarray
    pool: np.ndarray

    def order(self, seed: int, count: int) -> np.ndarray:
        """The first ``count`` pool indices in the order of ``seed``: epoch after epoch, each a
        permutation of the pool of its own (the first epoch's is the one-epoch runs' order)."""
        n = len(self.pool)
        epochs = [np.random.default_rng([seed, 1] + ([e] if e else [])).permutation(n) for e in range(-(-count // n))]
        return np.concatenate(epochs)[:count]


def load_fashion_mnist(root: str | os.PathLike = FASHION_MNIST_DIR, train_per_class: int = 300,
                       test_per_class: int = 200, split_seed: int = 0) -> FashionMNIST:
    """Read Fashion-MNIST from ``root`` and cut the fixed probe subsets and the pool.

    Raises:
        FileNotFoundError: a file is missing (named, with the Debian package that has them).
    """
    root = Path(root)
    missing = [n for n in FILES.values() if not (root / n).is_file()]
    if missing:
        raise FileNotFoundError(f"Fashion-MNIST: {root} lacks {missing}; install the Debian package "
                                f"dataset-fashion-mnist (experiments/evidence_setup.sh) or set COMAD_FASHION_MNIST")
    a = {k: read_idx(root / n) for k, n in FILES.items()}
    rng = np.random.default_rng([split_seed, 0])
    train = _balanced(a["train_labels"], train_per_class, rng, "training split")
    test = _balanced(a["test_labels"], test_per_class, rng, "test split")
    pool = np.setdiff1d(np.arange(len(a["train_labels"])), train)
    return FashionMNIST(a["train_images"][train], a["train_labels"][train].astype(np.int64),
                        a["test_images"][test], a["test_labels"][test].astype(np.int64), a["train_images"][pool])


def to_batch(images: np.ndarray, size: int, device: str | torch.device = "cpu") -> Tensor:
    """uint8 (B, 28, 28) -> (B, 3, size, size) float32: bicubic up-sampling of the grey image,
    clamped to [0, 1], as three channels, normalised with ImageNet's mean and std (what the
    student and, through their own conversions, all teachers take)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device).float().div_(255).unsqueeze(1)
    x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp_(0, 1).expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std
