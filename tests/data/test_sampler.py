import numpy as np
import pytest

from kglfr.data.sampler import IdentitySampler


def make_pool(n_ids=20, seed=0):
    rng = np.random.default_rng(seed)
    pids, mods = [], []
    for pid in range(n_ids):
        for mod in (0, 1):
            n = int(rng.integers(2, 9))  # some identities have fewer than K images
            pids += [pid] * n
            mods += [mod] * n
    return np.array(pids), np.array(mods)


def test_batch_structure_p_ids_times_k_plus_k():
    pids, mods = make_pool()
    sampler = IdentitySampler(pids, mods, num_ids=8, num_per_modality=4, seed=3)
    for batch in sampler:
        assert len(batch) == 64
        blocks = np.array(batch).reshape(8, 2, 4)
        for block in blocks:
            assert len(set(pids[block.ravel()])) == 1
            assert (mods[block[0]] == 0).all() and (mods[block[1]] == 1).all()
        assert len(set(pids[blocks[:, 0, 0]])) == 8


def test_epoch_length_is_visible_images_over_pk():
    pids, mods = make_pool()
    sampler = IdentitySampler(pids, mods, num_ids=4, num_per_modality=4)
    assert len(sampler) == int((mods == 0).sum()) // 16
    assert len(list(sampler)) == len(sampler)


def test_deterministic_for_seed_and_epoch():
    pids, mods = make_pool()
    a = IdentitySampler(pids, mods, num_ids=4, seed=1)
    b = IdentitySampler(pids, mods, num_ids=4, seed=1)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)
    c = IdentitySampler(pids, mods, num_ids=4, seed=2)
    assert list(a) != list(c)


def test_every_identity_is_visited_each_pass():
    pids, mods = make_pool(n_ids=16)
    sampler = IdentitySampler(pids, mods, num_ids=4, iters_per_epoch=4)
    firsts = [np.array(x).reshape(4, 8)[:, 0] for x in sampler]
    seen = {int(p) for f in firsts for p in pids[f]}
    assert seen == set(range(16))


def test_ddp_ranks_get_disjoint_identities_each_step():
    pids, mods = make_pool(n_ids=30)
    world = 3
    ranks = [IdentitySampler(pids, mods, num_ids=4, seed=7, rank=r, world_size=world) for r in range(world)]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert len({len(s) for s in ranks}) == 1
    single = IdentitySampler(pids, mods, num_ids=4, seed=7)
    assert len(ranks[0]) == len(single) // world
    for step in zip(*ranks):
        ids = [set(pids[np.array(b)]) for b in step]
        assert all(len(s) == 4 for s in ids)
        assert len(set.union(*ids)) == 4 * world  # no identity on two ranks in one step


def test_single_modality_identities_are_left_out():
    pids, mods = make_pool(n_ids=10)
    keep = ~((pids == 3) & (mods == 1))
    sampler = IdentitySampler(pids[keep], mods[keep], num_ids=4)
    assert 3 not in sampler.ids
    assert all(3 not in set(pids[keep][np.array(b)]) for b in sampler)


def test_too_few_identities_is_explained():
    pids, mods = make_pool(n_ids=5)
    with pytest.raises(ValueError, match="needs 8 identities"):
        IdentitySampler(pids, mods, num_ids=4, world_size=2)
