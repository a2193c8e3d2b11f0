"""objax.util.to_padding / to_tuple / to_interpolate and objax.util.check."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.util import check, to_interpolate, to_padding, to_tuple


def test_to_padding():
    assert to_padding(objax.ConvPadding.SAME, 2) == 'SAME'
    assert to_padding('valid', 2) == 'VALID'
    assert to_padding('Same', 1) == 'SAME'
    assert to_padding(1, 2) == ((1, 1), (1, 1))
    assert to_padding(3, 1) == ((3, 3),)
    assert to_padding((1, 2), 2) == ((1, 2), (1, 2))
    assert to_padding([(1, 2), (0, 3)], 2) == ((1, 2), (0, 3))
    assert to_padding(((1, 2), (0, 3), (4, 5)), 3) == ((1, 2), (0, 3), (4, 5))
    assert to_padding(np.int64(2), 2) == ((2, 2), (2, 2))


@pytest.mark.parametrize('bad,match', [('full', 'padding must be one of'), (-1, 'non-negative'),
                                       ([(1, 2)] * 3, 'one \\(low, high\\) pair per spatial axis'),
                                       ([(1, 2), (1,)], 'int pairs'), ([(1, 2), (0.5, 1)], 'int pairs'),
                                       ((1, -2), 'non-negative')])
def test_to_padding_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        to_padding(bad, 2)
    with pytest.raises(TypeError, match='padding must be'):
        to_padding(None, 2)


def test_to_tuple():
    assert to_tuple(3, 2) == (3, 3)
    assert to_tuple(0.5, 3) == (0.5, 0.5, 0.5)
    assert to_tuple((1, 2), 2) == (1, 2)
    assert to_tuple([4, 5, 6], 3) == (4, 5, 6)
    # As in Objax 1.8: tuples unchanged and other iterables as tuples, whatever their length.
    assert to_tuple((1, 2), 3) == (1, 2)
    assert to_tuple([1, 2], 3) == (1, 2)
    assert to_tuple(1.5, 3) == (1.5, 1.5, 1.5)
    assert to_tuple((1, 2, 3), 2) == (1, 2, 3)
    assert to_tuple(range(2), 5) == (0, 1)
    with pytest.raises(TypeError, match='number or a sequence'):
        to_tuple(None, 2)


def test_to_interpolate():
    for m in objax.Interpolate:
        assert to_interpolate(m) == m.value
        assert to_interpolate(m.value.upper()) == m.value
    with pytest.raises(ValueError, match="'bilinear'"):
        to_interpolate('area')
    with pytest.raises(ValueError, match='interpolation method'):
        to_interpolate(3)


def test_check_assigned():
    check.assert_assigned_type_and_shape_match(jn.zeros((2, 3)), jn.ones((2, 3)))
    check.assert_assigned_type_and_shape_match(jn.zeros((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match=r'shape \(3, 2\).*shape \(2, 3\)'):
        check.assert_assigned_type_and_shape_match(jn.zeros((2, 3)), jn.ones((3, 2)))
    with pytest.raises(AssertionError, match=r'shape \(3, 2\)'):  # Objax 1.8 raised AssertionError
        check.assert_assigned_type_and_shape_match(jn.zeros((2, 3)), jn.ones((3, 2)))
    check.assert_assigned_type_and_shape_match(jn.zeros((2, 3)), jn.ones((2, 3), jn.int32))  # dtype not checked
    with pytest.raises(ValueError, match='must be arrays'):
        check.assert_assigned_type_and_shape_match(jn.zeros((2, 3)), [[0, 0, 0], [0, 0, 0]])
