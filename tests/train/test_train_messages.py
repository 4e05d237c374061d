"""What training says to a new user: a size other than the store's, too few identities for a step."""

import logging

from kglfr.train.data import size_note


def test_equal_sizes_say_nothing():
    assert size_note((288, 144), (288, 144)) is None


def test_upsampling_is_a_warning_naming_the_overrides():
    level, message = size_note((64, 32), (288, 144))
    assert level == logging.WARNING
    assert "64x32" in message and "288x144" in message and "data.height=64 data.width=32" in message
    assert "upsampled" in message


def test_shrinking_is_a_note():
    level, message = size_note((128, 64), (64, 32))
    assert level == logging.INFO and "data.height=128 data.width=64" in message


def test_too_few_identities_name_the_count_a_step_needs():
    import numpy as np
    import pytest

    from kglfr.data.sampler import IdentitySampler

    pids = np.repeat(np.arange(5), 4)
    mods = np.tile([0, 0, 1, 1], 5)
    with pytest.raises(ValueError, match=r"needs 6 identities with both modalities \(num_ids 3 x 2 ranks\), but only "
                                         r"5 exist; lower num_ids to at most 2"):  # fmt: skip
        IdentitySampler(pids, mods, 3, 1, 0, 0, 2)
