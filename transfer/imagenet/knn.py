"""Weighted k-NN classification on frozen features (DINO's protocol, or plain majority).

DINO (Caron et al. 2021, ``eval_knn.py``): features are L2-normalised; for each query the k
training samples of highest cosine similarity vote for their labels with weight
``exp(sim / T)`` (T = 0.07, k = 20). ``voting='majority'`` gives each neighbour weight 1.
Ties between classes go to the lower class index (the stable sort of
:func:`transfer.imagenet.models.topk_predictions`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["VOTINGS", "knn_scores"]

VOTINGS = ("dino", "majority")


@torch.no_grad()
def knn_scores(train_features: Tensor, train_labels: Tensor, query_features: Tensor, num_classes: int,
               k: int = 20, temperature: float = 0.07, voting: str = "dino", chunk_size: int = 1024) -> Tensor:
    """Class scores (Q, C) of each query from its k nearest training samples (cosine)."""
    if voting not in VOTINGS:
        raise ValueError(f"k-NN voting {voting!r}: expected one of {VOTINGS}")
    if k < 1 or k > train_features.shape[0]:
        raise ValueError(f"k-NN k={k}: must be between 1 and the number of training samples ({train_features.shape[0]})")
    if temperature <= 0:
        raise ValueError(f"k-NN temperature {temperature}: must be > 0")
    train = F.normalize(train_features.float(), dim=1)
    labels = train_labels.long()
    out = []
    for q in torch.split(query_features.float(), chunk_size):
        sim = F.normalize(q, dim=1) @ train.T
        top_sim, top_idx = sim.topk(k, dim=1)
        weights = (top_sim / temperature).exp() if voting == "dino" else torch.ones_like(top_sim)
        scores = torch.zeros(q.shape[0], num_classes, dtype=torch.float32)
        scores.scatter_add_(1, labels[top_idx], weights)
        out.append(scores)
    return torch.cat(out) if out else torch.zeros(0, num_classes)
