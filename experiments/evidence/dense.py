"""The dense probe: do the patch tokens, not their mean, say what is where?

Scenes (fixed by ``split_seed`` before any result was seen): a ``img_size`` x ``img_size`` black
canvas (the student's input size) holding ``dense_items`` Fashion-MNIST items, each resized
(bilinear) from 28 px to a side drawn uniformly in [0.36, 0.64] of the canvas and placed
uniformly at random wholly inside it, later items over earlier ones. An item covers the pixels
where its resized value is at least 16 (of 255); the label of a pixel is the class of the item
covering it, or background (class 10). A patch's label is the label of the pixel at its centre
(row and column ``patch // 2`` inside the patch). Probe-train scenes use only the probe-train
images, probe-test scenes only the probe-test images: no scene holds a distilled image.

Probe: per-patch multinomial logistic regression (scikit-learn, L2, C = ``dense_c``, lbfgs, at
most ``dense_max_iter`` iterations) on the frozen patch tokens standardised with the
probe-train statistics: the student's tokens after the final norm on the whole scene; a
teacher's tokens at the block it is distilled from, on its token grid (the student's); the raw
pixels of each patch as a reference. Metric: mIoU over the 11 classes (10 items + background),
IoU of a class = its patches predicted and labelled / predicted or labelled, summed over the
test scenes. Per test scene the prediction of every patch is kept, so that differences can be
bootstrapped over scenes.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BACKGROUND", "NUM_CLASSES", "Scenes", "make_scenes", "patch_pixels", "dense_probe", "iou_counts",
           "miou", "encode", "decode"]

BACKGROUND = 10
NUM_CLASSES = 11
_ALPHABET = "0123456789b"


@dataclass
class Scenes:
    """Composed scenes: images (S, H, W) uint8 and per-patch labels (S, g * g) int64 (row-major)."""

    images: np.ndarray
    labels: np.ndarray


def make_scenes(images: np.ndarray, labels: np.ndarray, count: int, size: int, patch: int, items: int,
                seed: int) -> Scenes:
    """``count`` scenes of ``items`` items from ``images`` (N, 28, 28) uint8 / ``labels`` (N,), a function of ``seed``."""
    rng = np.random.default_rng([seed, 3])
    canvas = np.zeros((count, size, size), np.uint8)
    pixel_label = np.full((count, size, size), BACKGROUND, np.int64)
    src = torch.from_numpy(np.ascontiguousarray(images)).float().unsqueeze(1)
    for s in range(count):
        for i in rng.choice(len(images), size=items, replace=False):
            side = int(rng.integers(round(0.36 * size), round(0.64 * size) + 1))
            y, x = (int(v) for v in rng.integers(0, size - side + 1, size=2))
            item = F.interpolate(src[i:i + 1], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
            item = item.round().clamp(0, 255).to(torch.uint8).numpy()
            cover = item >= 16
            canvas[s, y:y + side, x:x + side][cover] = item[cover]
            pixel_label[s, y:y + side, x:x + side][cover] = int(labels[i])
    c = patch // 2
    return Scenes(canvas, pixel_label[:, c::patch, c::patch].reshape(count, -1))


def patch_pixels(images: np.ndarray, patch: int) -> Tensor:
    """(S, g * g, patch * patch): each patch's raw pixels in [0, 1] (the reference row)."""
    x = torch.from_numpy(images).float().div(255).unsqueeze(1)  # (S, 1, H, W)
    return F.unfold(x, patch, stride=patch).transpose(1, 2).contiguous()


def encode(pred: np.ndarray) -> str:
    """Per-patch classes (any shape) as one character each ('0'-'9', 'b' for background)."""
    return "".join(_ALPHABET[int(c)] for c in pred.reshape(-1))


def decode(text: str, patches: int) -> np.ndarray:
    """The inverse of :func:`encode`: (S, patches) int64."""
    table = np.full(128, -1, np.int64)
    table[np.frombuffer(_ALPHABET.encode(), np.uint8)] = np.arange(len(_ALPHABET))
    return table[np.frombuffer(text.encode(), np.uint8)].reshape(-1, patches)


def iou_counts(pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per scene and class the intersection and union counts: two (S, NUM_CLASSES) int arrays."""
    cls = np.arange(NUM_CLASSES)[None, None]
    p, t = pred[..., None] == cls, labels[..., None] == cls  # (S, P, C)
    return (p & t).sum(1), (p | t).sum(1)


def miou(inter: np.ndarray, union: np.ndarray) -> float:
    """mIoU in percent from summed (C,) counts (a class absent from prediction and labels is left out)."""
    present = union > 0
    return float(100.0 * (inter[present] / union[present]).mean())


def dense_probe(train_f: Tensor, train_labels: np.ndarray, test_f: Tensor, test_labels: np.ndarray, c: float,
                max_iter: int) -> dict[str, object]:
    """The per-patch linear probe of (S, P, D) token features: mIoU, the encoded test predictions, info."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    d = train_f.shape[-1]
    x_train, x_test = train_f.reshape(-1, d).double().numpy(), test_f.reshape(-1, d).double().numpy()
    scaler = StandardScaler().fit(x_train)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(scaler.transform(x_train), train_labels.reshape(-1))
    pred = clf.predict(scaler.transform(x_test)).reshape(test_labels.shape)
    inter, union = iou_counts(pred, test_labels)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return dict(dense=miou(inter.sum(0), union.sum(0)), dense_pred=encode(pred),
                dense_probe=dict(iterations=int(np.max(clf.n_iter_)), converged=converged, dim=int(d)))
