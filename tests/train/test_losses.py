"""Losses against brute-force definitions (explicit loops over anchors) and hand-made examples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kglfr.train.losses import (
    batch_hard_triplet,
    cross_entropy,
    draw_keypoint,
    keypoint_mask,
    masked_local_features,
    pairwise_distance,
    weighted_regularized_triplet,
)


def _dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).sum().clamp(min=1e-12).sqrt()


def _brute_batch_hard(x: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    terms = []
    for i in range(len(x)):
        pos = [_dist(x[i], x[j]) for j in range(len(x)) if j != i and labels[j] == labels[i]]
        neg = [_dist(x[i], x[j]) for j in range(len(x)) if labels[j] != labels[i]]
        if pos and neg:
            terms.append(F.relu(torch.stack(pos).max() - torch.stack(neg).min() + margin))
    return torch.stack(terms).mean()


def _brute_wrt(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    terms = []
    for i in range(len(x)):
        dp = torch.stack([_dist(x[i], x[j]) for j in range(len(x)) if labels[j] == labels[i]])
        dn = torch.stack([_dist(x[i], x[j]) for j in range(len(x)) if labels[j] != labels[i]])
        furthest = (torch.exp(dp) / torch.exp(dp).sum() * dp).sum()
        closest = (torch.exp(-dn) / torch.exp(-dn).sum() * dn).sum()
        terms.append(torch.log1p(torch.exp(furthest - closest)))
    return torch.stack(terms).mean()


def _agw_wrt(x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """AGW's TripletLoss_WRT, written as in its code (softmax_weights with the +1e-6)."""

    def softmax_weights(dist, mask):
        max_v = torch.max(dist * mask, dim=1, keepdim=True)[0]
        diff = dist - max_v
        z = torch.sum(torch.exp(diff) * mask, dim=1, keepdim=True) + 1e-6
        return torch.exp(diff) * mask / z

    n = len(x)
    d = (x.pow(2).sum(1, keepdim=True) + x.pow(2).sum(1) - 2 * x @ x.t()).clamp(min=1e-12).sqrt()
    is_pos = labels.expand(n, n).eq(labels.expand(n, n).t()).float()
    is_neg = 1 - is_pos
    dist_ap, dist_an = d * is_pos, d * is_neg
    furthest = torch.sum(dist_ap * softmax_weights(dist_ap, is_pos), dim=1)
    closest = torch.sum(dist_an * softmax_weights(-dist_an, is_neg), dim=1)
    return torch.nn.SoftMarginLoss()(closest - furthest, torch.ones_like(furthest))


def _batch(seed: int = 0, p: int = 4, k: int = 4, d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(p * k, d, generator=g, dtype=torch.float64)
    labels = torch.arange(p).repeat_interleave(k)
    return x, labels[torch.randperm(p * k, generator=g)]


def test_pairwise_distance_matches_cdist_and_is_safe():
    x, _ = _batch()
    y = x[:5] + 0.1
    assert torch.allclose(pairwise_distance(x, y), torch.cdist(x, y), atol=1e-10)
    assert torch.allclose(pairwise_distance(x, y, squared=True), torch.cdist(x, y) ** 2, atol=1e-10)
    xr = x.clone().requires_grad_(True)
    d = pairwise_distance(xr)
    assert torch.allclose(d.diagonal(), torch.full((len(x),), 1e-6, dtype=x.dtype))
    d.sum().backward()
    assert torch.isfinite(xr.grad).all()
    same = torch.ones(3, 4, requires_grad=True)
    pairwise_distance(same).sum().backward()
    assert torch.isfinite(same.grad).all() and (same.grad == 0).all()


@pytest.mark.parametrize("margin", [0.3, 0.01, 5.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_batch_hard_triplet_matches_brute_force(margin, seed):
    x, labels = _batch(seed)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    loss, stats = batch_hard_triplet(x1, labels, margin)
    ref = _brute_batch_hard(x2, labels, margin)
    assert torch.allclose(loss, ref, atol=1e-10)
    loss.backward()
    ref.backward()
    assert torch.allclose(x1.grad, x2.grad, atol=1e-10)
    assert 0.0 <= float(stats["correct"]) <= 1.0 and int(stats["anchors"]) == len(x)
    assert not any(v.requires_grad for v in stats.values())


def test_batch_hard_triplet_hand_made_example():
    # Two identities on a line: a = {0, 1}, b = {3, 5}.
    x = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    labels = torch.tensor([7, 7, 2, 2])
    # anchor 0: d_ap 1, d_an 3; anchor 1: 1, 2; anchor 2: 2, 2; anchor 3: 2, 4.
    loss, stats = batch_hard_triplet(x, labels, margin=0.3)
    expected = (0.0 + 0.0 + 0.3 + 0.0) / 4
    assert math.isclose(float(loss), expected, abs_tol=1e-6)
    assert math.isclose(float(stats["correct"]), 1.0)  # d_an >= d_ap everywhere (anchor 2 ties)
    loss, stats = batch_hard_triplet(x, labels, margin=1.5)
    assert math.isclose(float(loss), (0.0 + 0.5 + 1.5 + 0.0) / 4, abs_tol=1e-6)
    swapped = torch.tensor([7, 2, 7, 2])  # now anchor 0: d_ap 3, d_an 1 -> wrong
    _, stats = batch_hard_triplet(x, swapped, margin=0.3)
    assert float(stats["correct"]) < 1.0


def test_batch_hard_triplet_degenerate_batches():
    x = torch.randn(4, 3, requires_grad=True)
    loss, stats = batch_hard_triplet(x, torch.tensor([0, 0, 0, 0]), 0.3)  # no negatives
    assert float(loss.detach()) == 0.0 and int(stats["anchors"]) == 0
    loss.backward()
    assert (x.grad == 0).all()
    # A singleton identity has no positive: it is left out of the mean.
    x = torch.tensor([[0.0], [1.0], [3.0]])
    loss, stats = batch_hard_triplet(x, torch.tensor([0, 0, 1]), 0.3)
    assert int(stats["anchors"]) == 2 and math.isclose(float(loss), (0.0 + 0.0) / 2, abs_tol=1e-6)
    with pytest.raises(ValueError):
        batch_hard_triplet(torch.zeros(4, 2), torch.zeros(3), 0.3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wrt_matches_brute_force_and_agw(seed):
    x, labels = _batch(seed)
    xs = [x.clone().requires_grad_(True) for _ in range(3)]
    loss, stats = weighted_regularized_triplet(xs[0], labels)
    ref = _brute_wrt(xs[1], labels)
    agw = _agw_wrt(xs[2], labels)
    assert torch.allclose(loss, ref, atol=1e-8)
    assert torch.allclose(loss, agw, atol=1e-5)
    for t in (loss, ref, agw):
        t.backward()
    assert torch.allclose(xs[0].grad, xs[1].grad, atol=1e-8)
    assert torch.allclose(xs[0].grad, xs[2].grad, atol=1e-5)
    assert set(stats) >= {"correct"} and not stats["correct"].requires_grad


def test_wrt_hand_made_example_and_far_negatives():
    # Two identities, pairs at distance 1 (positives: itself at ~0 and its partner at 1, so furthest
    # = e / (1 + e)); anchors 0 and 3 have negatives at 11 and 12, anchors 1 and 2 at 10 and 11.
    x = torch.tensor([[0.0], [1.0], [11.0], [12.0]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    loss, _ = weighted_regularized_triplet(x, labels)
    fp = math.e / (1 + math.e)
    cn0 = (11 * math.exp(-11) + 12 * math.exp(-12)) / (math.exp(-11) + math.exp(-12))
    cn1 = (10 * math.exp(-10) + 11 * math.exp(-11)) / (math.exp(-10) + math.exp(-11))
    expected = (2 * math.log1p(math.exp(fp - cn0)) + 2 * math.log1p(math.exp(fp - cn1))) / 4
    assert math.isclose(float(loss), expected, rel_tol=1e-5)
    # Negatives 1000 apart: still finite (AGW's version underflows there), the loss ~ 0.
    far, _ = weighted_regularized_triplet(torch.tensor([[0.0], [1.0], [1000.0], [1001.0]]), labels)
    assert torch.isfinite(far) and float(far) < 1e-6


def test_cross_entropy_label_smoothing_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g)
    labels = torch.randint(5, (6,), generator=g)
    assert torch.allclose(cross_entropy(logits, labels), F.cross_entropy(logits, labels))
    ls = cross_entropy(logits, labels, label_smoothing=0.1)
    logp = logits.log_softmax(1)
    manual = (-(0.9 * logp.gather(1, labels[:, None]).squeeze(1)) - 0.1 * logp.mean(1)).mean()
    assert torch.allclose(ls, F.cross_entropy(logits, labels, label_smoothing=0.1))
    assert torch.allclose(ls, manual, atol=1e-6)


def test_keypoint_mask_eq3():
    g = torch.Generator().manual_seed(0)
    hm = torch.randn(3, 13, 6, 4, generator=g)
    hm[1, 5] = 0.0  # an all-zero map
    hm[2, 5] = -torch.rand(6, 4, generator=g) - 0.1  # an all-negative map
    m = keypoint_mask(hm, 5)
    assert m.shape == (3, 6, 4)
    assert torch.isfinite(m).all() and (m >= 0).all()
    assert math.isclose(float(m[0].max()), 1.0)
    assert (m[1] == 0).all() and (m[2] == 0).all()
    assert torch.allclose(m[0], F.relu(hm[0, 5] / hm[0, 5].max()))
    assert torch.equal(keypoint_mask(hm[:, 5]), m)
    for k in range(13):
        mk = keypoint_mask(hm, k)
        assert (mk <= 1).all() and (mk >= 0).all()
    with pytest.raises(ValueError):
        keypoint_mask(hm)
    with pytest.raises(ValueError):
        keypoint_mask(hm, 13)
    with pytest.raises(ValueError):
        keypoint_mask(hm[:, 0], 0)


def test_masked_local_features_eq4():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 5, 6, 3, generator=g)
    mask = torch.rand(2, 6, 3, generator=g)
    out = masked_local_features(f, mask)
    manual = torch.empty(2, 5)
    for b in range(2):
        for c in range(5):
            manual[b, c] = sum(float(mask[b, i, j] * f[b, c, i, j]) for i in range(6) for j in range(3)) / 18
    assert out.shape == (2, 5) and torch.allclose(out, manual, atol=1e-6)
    assert torch.allclose(masked_local_features(f, torch.ones(2, 6, 3)), f.mean((2, 3)))
    with pytest.raises(ValueError, match=r"\(5, 3\).*\(6, 3\)"):
        masked_local_features(f, mask[:, :5])


def test_draw_keypoint_deterministic_and_in_range():
    a = [draw_keypoint(torch.Generator().manual_seed(3)) for _ in range(3)]
    assert len(set(a)) == 1
    g = torch.Generator().manual_seed(0)
    draws = [draw_keypoint(g) for _ in range(400)]
    assert set(draws) == set(range(13))
    assert all(0 <= draw_keypoint(None, 4) < 4 for _ in range(10))


def test_losses_run_on_a_realistic_batch():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(64, 2048, generator=g, requires_grad=True)
    labels = torch.arange(8).repeat_interleave(8)
    loss, _ = batch_hard_triplet(feats, labels, 0.3)
    wrt, _ = weighted_regularized_triplet(feats, labels)
    (loss + wrt).backward()
    assert torch.isfinite(feats.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_on_cuda_match_cpu():
    x, labels = _batch()
    for fn in (lambda f, lab: batch_hard_triplet(f, lab, 0.3), weighted_regularized_triplet):
        cpu, _ = fn(x, labels)
        gpu, stats = fn(x.cuda(), labels.cuda())
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-8) and stats["correct"].device.type == "cuda"
    hm = torch.rand(2, 13, 18, 9)
    assert torch.allclose(keypoint_mask(hm.cuda(), 3).cpu(), keypoint_mask(hm, 3))
