"""CAJ's ADP triplet (kglfr.train.losses.adp_triplet) against a plain-Python reference of the published formula."""

from __future__ import annotations

import math

import pytest
import torch

from kglfr.train.losses import ADP_CLAMP, adp_softmax_weights, adp_triplet


def reference(x: list[float], labels: list[int], alpha=1.0, gamma=1.0, square=True) -> float:
    """TripletLoss_ADP on 1-D features, written out by hand (the diagonal distance is sqrt(1e-12) = 1e-6)."""
    n = len(x)
    d = [[abs(x[i] - x[j]) if i != j else 1e-6 for j in range(n)] for i in range(n)]
    total = 0.0
    for i in range(n):
        pos = [d[i][j] if labels[j] == labels[i] else 0.0 for j in range(n)]
        neg = [d[i][j] if labels[j] != labels[i] else 0.0 for j in range(n)]
        mp, mn = max(p * alpha for p in pos), max(-v * alpha for v in neg)
        ep = [math.exp(p * alpha - mp) if labels[j] == labels[i] else 0.0 for j, p in enumerate(pos)]
        en = [math.exp(-v * alpha - mn) if labels[j] != labels[i] else 0.0 for j, v in enumerate(neg)]
        far = sum(e * p for e, p in zip(ep, pos)) / (sum(ep) + 1e-6)
        close = sum(e * v for e, v in zip(en, neg)) / (sum(en) + 1e-6)
        if square:
            gap = min(gamma * (far - close) ** 2, 88.0)
            total += math.log1p(math.exp(gap if far > close else -gap))
        else:
            total += math.log1p(math.exp(gamma * (far - close)))
    return total / n


@pytest.mark.parametrize(("alpha", "gamma", "square"), [(1, 1, True), (2, 0.5, True), (1, 1, False)])
def test_adp_matches_the_published_formula(alpha, gamma, square):
    x, labels = [0.0, 1.0, 3.0, 6.0, 2.0, 2.5], [0, 0, 1, 1, 2, 2]
    loss, _ = adp_triplet(torch.tensor(x, dtype=torch.float64)[:, None], torch.tensor(labels), alpha, gamma, square)
    assert float(loss) == pytest.approx(reference(x, labels, alpha, gamma, square), rel=1e-9)


def test_the_clamp_at_88_stops_the_gradient_and_normalised_features_restore_it():
    # positives 30 apart, negatives 1 apart: furthest - closest = 29, squared 841 > 88
    x = torch.tensor([[0.0], [30.0], [1.0], [31.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1])
    loss, _ = adp_triplet(x, labels)
    assert ADP_CLAMP == 88.0 and float(loss.detach()) == pytest.approx(88.0)  # softplus(88): what a stuck run reads
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0
    y = torch.tensor([[0.0, 1.0], [30.0, 1.0], [1.0, 2.0], [31.0, -1.0]], requires_grad=True)
    loss_n, _ = adp_triplet(y, labels, normalize=True)
    loss_n.backward()
    assert float(loss_n.detach()) < 88.0 and torch.count_nonzero(y.grad) > 0


def test_the_published_1e6_keeps_far_negatives_at_weight_zero_not_nan():
    # negatives 200 apart: exp(-200) underflows to 0 in float32, so the weights' sum is 0 + 1e-6
    values = -torch.tensor([[0.0, 200.0, 200.5]])
    mask = torch.tensor([[False, True, True]])
    w = adp_softmax_weights(values, mask)
    assert torch.equal(w, torch.zeros(1, 3))
    x = torch.tensor([[0.0], [0.5], [200.0], [200.5]], requires_grad=True)
    loss, stats = adp_triplet(x, torch.tensor([0, 0, 1, 1]))
    loss.backward()
    assert torch.isfinite(loss.detach()) and torch.isfinite(x.grad).all()
    assert float(stats["d_an"]) == 0.0  # every closest negative weighted to 0


def test_weights_over_a_row_follow_the_formula():
    values, mask = torch.tensor([[1.0, 2.0, 5.0]]), torch.tensor([[True, True, False]])
    z = math.exp(1 - 2) + math.exp(0) + 1e-6  # max of values * mask = 2
    want = [math.exp(-1) / z, 1 / z, 0.0]
    assert adp_softmax_weights(values, mask)[0].tolist() == pytest.approx(want)


def test_adp_normalizes_from_random_initialisation_under_auto():
    from kglfr.train import config as C
    from kglfr.train.methods.base import adp_normalized

    def cfg(*overrides):
        return C.load_config("sysu/caj", ["data.store=S", *overrides])

    assert adp_normalized(cfg("model.pretrained=none"))  # auto: random init would sit at the clamp
    assert not adp_normalized(cfg())  # auto: ImageNet start, the published loss
    assert adp_normalized(cfg("loss.adp_normalize=on")) and adp_normalized(cfg("loss.adp_normalize=true"))
    assert not adp_normalized(cfg("model.pretrained=none", "loss.adp_normalize=off"))
    assert C.load_config("demo_caj", ["data.store=S"]).loss.adp_normalize == "on"
