"""GroupNorm against a numpy per-group normalization."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.nn import GroupNorm, GroupNorm0D, GroupNorm1D, GroupNorm2D

RNG = np.random.default_rng(2)


def _np_group_norm(x, groups, gamma, beta, eps):
    """Loops over examples and groups: normalize each group's entries (channels in group x positions)."""
    out = np.empty_like(x, dtype=np.float64)
    per = x.shape[1] // groups
    for n in range(x.shape[0]):
        for g in range(groups):
            block = x[n, g * per:(g + 1) * per].astype(np.float64)
            out[n, g * per:(g + 1) * per] = (block - block.mean()) / np.sqrt(block.var() + eps)
    return out * gamma + beta


@pytest.mark.parametrize('cls,shape,groups', [(GroupNorm0D, (3, 8), 4), (GroupNorm1D, (2, 6, 5), 3),
                                              (GroupNorm2D, (2, 8, 3, 4), 2), (GroupNorm2D, (2, 4, 3, 3), 4),
                                              (GroupNorm2D, (1, 4, 2, 2), 1)])
def test_matches_numpy(cls, shape, groups):
    gn = cls(shape[1], groups=groups, eps=1e-3)
    assert isinstance(gn, GroupNorm) and gn.rank == len(shape)
    param_shape = (1, shape[1]) + (1,) * (len(shape) - 2)
    # Objax 1.8's creation order: gamma, then beta (it decides gradient, slot and checkpoint order).
    assert list(gn.vars().keys()) == [f'({cls.__name__}).gamma', f'({cls.__name__}).beta']
    assert gn.gamma.shape == gn.beta.shape == param_shape
    gn.gamma.assign(jn.asarray(RNG.uniform(0.5, 2, param_shape).astype(np.float32)))
    gn.beta.assign(jn.asarray(RNG.normal(size=param_shape).astype(np.float32)))
    x = (RNG.normal(size=shape) * 3 + 1).astype(np.float32)
    ref = _np_group_norm(x, groups, np.asarray(gn.gamma.value), np.asarray(gn.beta.value), 1e-3)
    np.testing.assert_allclose(gn(jn.asarray(x)), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gn(jn.asarray(x), training=False), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(objax.Jit(gn)(jn.asarray(x)), ref, rtol=1e-4, atol=1e-4)


def test_generic_rank_and_defaults():
    gn = GroupNorm(64, rank=5)
    assert (gn.groups, gn.eps) == (32, 1e-5) and gn.gamma.shape == (1, 64, 1, 1, 1)
    x = RNG.normal(size=(2, 64, 2, 2, 2)).astype(np.float32)
    np.testing.assert_allclose(gn(jn.asarray(x)), _np_group_norm(x, 32, 1, 0, 1e-5), rtol=1e-4, atol=1e-4)


def test_errors():
    with pytest.raises(ValueError, match=r'nin \(10\).*groups \(4\)'):
        GroupNorm2D(10, groups=4)
    with pytest.raises(ValueError, match='divisible'):
        GroupNorm1D(16)  # default 32 groups
    gn = GroupNorm2D(8, groups=2)
    with pytest.raises(ValueError, match=r'rank 4.*rank 3'):
        gn(jn.ones((2, 8, 5)))
    with pytest.raises(ValueError, match=r'8 channels.*has 6'):
        gn(jn.ones((2, 6, 3, 3)))
    with pytest.raises(ValueError, match='groups'):
        GroupNorm0D(8, groups=0)


def test_reprs():
    assert repr(GroupNorm(16, rank=3, groups=4, eps=1e-3)) == 'objax.nn.GroupNorm(nin=16, rank=3, groups=4, eps=0.001)'
    assert repr(GroupNorm2D(64)) == 'objax.nn.GroupNorm2D(nin=64, groups=32, eps=1e-05)'
    assert repr(GroupNorm0D(8, groups=2)) == 'objax.nn.GroupNorm0D(nin=8, groups=2, eps=1e-05)'
    assert repr(GroupNorm1D(6, groups=3, eps=0.1)) == 'objax.nn.GroupNorm1D(nin=6, groups=3, eps=0.1)'


def test_low_precision_input_normalized_in_float32():
    gn = GroupNorm2D(4, groups=2)
    x = jn.asarray(RNG.normal(size=(2, 4, 3, 3)) * 2 + 1, jn.bfloat16)
    y = gn(x)
    assert y.dtype == jn.bfloat16 and gn.gamma.value.dtype == jn.float32
    ref = _np_group_norm(np.asarray(x, np.float32), 2, 1, 0, gn.eps)
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=1e-2, atol=1e-2)
