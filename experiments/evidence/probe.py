"""The evidence run's two probes on frozen features, with the correctness of every test image.

Features (chosen before any result): a student's is the **mean of its patch tokens** after the
final norm, all tokens of the unmasked image (its CLS token is never trained by the losses
without ``include_cls``); a teacher's is the mean of its tokens at the block / tap it is
distilled from, at its own input size (the same views the distillation gives it).

- linear: logistic regression (scikit-learn, L2, ``C``, lbfgs) on features standardised with the
  probe-train statistics;
- k-NN: :func:`transfer.imagenet.knn.knn_scores` (cosine, k = 20, T = 0.07, DINO's weighted vote), the
  top-1 class (ties to the lower index, as :func:`~transfer.imagenet.models.topk_predictions`).

Both return a boolean per test image, so that differences can be bootstrapped pairwise.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from transfer.imagenet.knn import knn_scores
from comad.models.vit import forward_kept_tokens
from comad.teachers.teacher import forward_teachers
from .data import CLASSES, to_batch

__all__ = ["student_features", "teacher_features", "pixel_features", "linear_probe", "knn_probe", "probe_all"]


@torch.no_grad()
def _batched(fn: Callable[[Tensor], Tensor], images: np.ndarray, size: int, batch: int, device: str) -> Tensor:
    out = [fn(to_batch(images[i:i + batch], size, device)).float().cpu() for i in range(0, len(images), batch)]
    return torch.cat(out)


def student_features(student: nn.Module, images: np.ndarray, size: int, batch: int = 250,
                     device: str = "cpu", tokens: bool = False) -> Tensor:
    """(N, D): the mean of the student's patch tokens (after the final norm) on uint8 (N, h, w)
    images; with ``tokens`` the tokens themselves, (N, P, D)."""
    student.eval()
    return _batched(lambda x: _pool(forward_kept_tokens(student, x)[0], tokens), images, size, batch, device)


def teacher_features(teacher: nn.Module, layer: int, images: np.ndarray, size: int, batch: int = 100,
                     device: str = "cpu", tokens: bool = False) -> Tensor:
    """(N, C): the mean of a teacher's tokens at ``layer``, from the student-size batch resized to
    the teacher's input size (:func:`~comad.teachers.teacher.forward_teachers`); with ``tokens``
    the tokens on the student's grid, (N, P, C)."""
    return _batched(lambda x: _pool(forward_teachers([teacher], [layer], x, [None])[0], tokens), images, size, batch,
                    device)


def _pool(t: Tensor, tokens: bool) -> Tensor:
    return t if tokens else t.mean(1)


def pixel_features(images: np.ndarray) -> Tensor:
    """(N, 784): the raw 28 x 28 pixels in [0, 1] (a reference row)."""
    return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32) / 255)


def linear_probe(train_f: Tensor, train_y: np.ndarray, test_f: Tensor, test_y: np.ndarray, c: float = 1.0,
                 max_iter: int = 2000) -> tuple[np.ndarray, dict[str, float]]:
    """Logistic regression on standardised features: (correct (N_test,) bool, info)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_f.double().numpy())
    clf = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(scaler.transform(train_f.double().numpy()), train_y)
    pred = clf.predict(scaler.transform(test_f.double().numpy()))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return pred == test_y, dict(iterations=int(np.max(clf.n_iter_)), converged=converged)


def knn_probe(train_f: Tensor, train_y: np.ndarray, test_f: Tensor, test_y: np.ndarray, k: int = 20,
              temperature: float = 0.07) -> np.ndarray:
    """Weighted k-NN (cosine): correct (N_test,) bool."""
    scores = knn_scores(train_f, torch.from_numpy(train_y), test_f, len(CLASSES), k=min(k, len(train_f)),
                        temperature=temperature)
    pred = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, 0].numpy()
    return pred == test_y


def probe_all(train_f: Tensor, train_y: np.ndarray, test_f: Tensor, test_y: np.ndarray, cfg) -> dict[str, object]:
    """Both probes of one feature set: accuracies (percent), per-image correctness as '0'/'1' strings, info."""
    lin, info = linear_probe(train_f, train_y, test_f, test_y, cfg.probe_c, cfg.probe_max_iter)
    knn = knn_probe(train_f, train_y, test_f, test_y, cfg.knn_k, cfg.knn_temperature)
    return dict(linear=100.0 * float(lin.mean()), knn=100.0 * float(knn.mean()), linear_correct=_bits(lin),
                knn_correct=_bits(knn), probe=info, dim=int(train_f.shape[1]))


def _bits(correct: Sequence[bool]) -> str:
    return "".join("1" if c else "0" for c in correct)
