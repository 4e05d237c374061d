"""CAJ's channel augmentations (kglfr.data.views) against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kglfr.data.records import Modality
from kglfr.data.views import (
    CAJ_ERASE_FILL,
    GREY_WEIGHTS,
    View,
    adaptive_grey,
    channel_exchange,
    channel_random_erasing,
)


def rgb(n: int, values=(0.1, 0.2, 0.3), hw=(4, 2)) -> torch.Tensor:
    """``n`` images whose channels are the constants ``values``."""
    return torch.tensor(values).view(1, 3, 1, 1).expand(n, 3, *hw).clone()


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_a_view_takes_its_modality_in_the_sampler_order():
    mods = np.array([0, 0, 1, 1, 0, 1])
    assert View("v", Modality.VISIBLE).rows(mods).tolist() == [0, 1, 4]
    assert View("i", Modality.INFRARED).rows(mods).tolist() == [2, 3, 5]
    assert View("all").rows(mods) is None


def test_channel_exchange_copies_one_drawn_channel_into_all_three():
    out = channel_exchange(rgb(600), gen())
    u = torch.rand(600, generator=gen())  # the draws it made: channel floor(3u)
    want = torch.tensor([0.1, 0.2, 0.3])[(u * 3).long()]
    assert torch.equal(out, want.view(-1, 1, 1, 1).expand_as(out))
    counts = torch.bincount((u * 3).long(), minlength=3)
    assert counts.min() > 150  # each of R, G, B about a third of the time


@pytest.mark.parametrize("prob", [0.0, 1.0])
def test_adaptive_grey_is_a_channel_copy_or_the_weighted_grey(prob):
    n = 800
    out = adaptive_grey(rgb(n), gen(3), prob=prob)
    grey = 0.2989 * 0.1 + 0.5870 * 0.2 + 0.1140 * 0.3  # 0.18149
    assert GREY_WEIGHTS == (0.2989, 0.5870, 0.1140)
    u = torch.rand(2 * n, generator=gen(3))
    pick = (u[:n] * 4).long()
    for i in range(n):
        px = out[i, :, 0, 0].tolist()
        if pick[i] < 3:
            assert px == pytest.approx([(0.1, 0.2, 0.3)[pick[i]]] * 3)
        elif prob == 1.0:
            assert px == pytest.approx([grey] * 3, abs=1e-7)
        else:
            assert px == pytest.approx([0.1, 0.2, 0.3])  # the fourth outcome keeps the image
    assert 150 < int((pick == 3).sum()) < 250  # a quarter of the images


def test_channel_random_erasing_fills_one_rectangle_with_cajs_constants():
    h, w = 20, 10
    images = torch.zeros(1, 3, h, w)
    out = channel_random_erasing(images, gen(5), prob=1.0)
    g = gen(5)  # the draws, in its order: 100 (area, aspect) pairs, the corner, the erase coin
    u = torch.rand(1, 100, 2, generator=g, dtype=torch.float64)[0]
    corner = torch.rand(1, 2, generator=g, dtype=torch.float64)[0]
    for a, r in u.tolist():  # the first attempt that fits, by hand
        area, aspect = (0.02 + 0.38 * a) * h * w, 0.3 + (1 / 0.3 - 0.3) * r
        eh, ew = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if eh < h and ew < w:
            break
    y0, x0 = int(corner[0] * (h - eh + 1)), int(corner[1] * (w - ew + 1))
    want = torch.zeros(1, 3, h, w)
    for c in range(3):
        want[0, c, y0 : y0 + eh, x0 : x0 + ew] = CAJ_ERASE_FILL[c]
    assert torch.equal(out, want)


def test_channel_random_erasing_at_probability_zero_keeps_the_images():
    images = torch.randn(4, 3, 8, 4)
    assert torch.equal(channel_random_erasing(images, gen(1), prob=0.0), images)
