"""k-NN classification against hand-computed cases."""
import math

import pytest
import torch

from transfer.imagenet.knn import knn_scores
from transfer.imagenet.metric import TopKAccuracy
from transfer.imagenet.models import topk_predictions

# 2-D training features on the unit circle at known angles, classes 0/1/2.
ANGLES = torch.tensor([0.0, 10.0, 20.0, 90.0, 100.0, 180.0])
LABELS = torch.tensor([0, 0, 1, 1, 1, 2])


def _feats(deg, scale=1.0):
    r = torch.deg2rad(torch.as_tensor(deg, dtype=torch.float32))
    return scale * torch.stack([torch.cos(r), torch.sin(r)], dim=-1)


def test_dino_weights_by_hand():
    train = _feats(ANGLES, scale=3.0)  # scale must not matter (cosine)
    q = _feats([5.0])
    s = knn_scores(train, LABELS, q, num_classes=3, k=3, temperature=0.07, voting="dino")
    # neighbours of 5 deg: 0 and 10 (cos 5 deg, class 0), 20 (cos 15 deg, class 1)
    c5, c15 = math.cos(math.radians(5)), math.cos(math.radians(15))
    expected = torch.tensor([[2 * math.exp(c5 / 0.07), math.exp(c15 / 0.07), 0.0]])
    torch.testing.assert_close(s, expected, rtol=1e-5, atol=0)


def test_majority_vs_weighted_disagree_by_hand():
    # query at 95 deg, k=5: neighbours 90,100 (class 1, cos 5), 20 (cos 75, class 1),
    # 180 (cos 85, class 2), 10 (cos 85, class 0) -> majority: class 1 with 3 votes
    train = _feats(ANGLES)
    q = _feats([95.0])
    maj = knn_scores(train, LABELS, q, 3, k=5, voting="majority")
    torch.testing.assert_close(maj, torch.tensor([[1.0, 3.0, 1.0]]))
    # weighted voting where a single very close neighbour beats two far ones:
    train2 = _feats([0.0, 60.0, 62.0])
    lab2 = torch.tensor([0, 1, 1])
    q2 = _feats([1.0])
    assert knn_scores(train2, lab2, q2, 2, k=3, voting="majority").argmax().item() == 1
    assert knn_scores(train2, lab2, q2, 2, k=3, temperature=0.07, voting="dino").argmax().item() == 0


def test_top1_top5_and_tie_break():
    """The k-NN task's scoring path: votes -> per-sample top-k (KNNClassifier) -> TopKAccuracy."""
    train = _feats(ANGLES)
    queries = _feats([5.0, 95.0, 175.0, 15.0])
    qlabels = torch.tensor([0, 1, 0, 1])
    metric = TopKAccuracy(topk=(1, 5))
    metric.process({}, topk_predictions(knn_scores(train, LABELS, queries, 3, k=2, voting="majority"), qlabels))
    out = metric.compute_metrics(metric.results)
    # 5 -> {0,10}: class 0 (right); 95 -> {90,100}: class 1 (right);
    # 175 -> {180 (2), 100 (1)}: tie 1 vs 1 -> lower index 1 (wrong, truth 0);
    # 15 -> {10 (0), 20 (1)}: tie -> class 0 (wrong, truth 1)
    assert out["top1"] == pytest.approx(50.0)
    assert out["top5"] == pytest.approx(100.0)  # top-min(5, C) = top-3 of 3 classes: always right


def test_bad_options():
    train = _feats(ANGLES)
    with pytest.raises(ValueError, match="voting 'vote'"):
        knn_scores(train, LABELS, train, 3, k=2, voting="vote")
    with pytest.raises(ValueError, match="k=7"):
        knn_scores(train, LABELS, train, 3, k=7)
