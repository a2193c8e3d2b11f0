"""The dtype normalization layers compute in: float32 (or wider) whatever the input's precision."""

import jax.numpy as jn

from objax.typing import JaxArray

__all__ = ['float32_or_wider', 'cast_back', 'is_narrow_float']


def float32_or_wider(x: JaxArray):
    """float32 for inputs of lower precision (bfloat16, float16, ints); float64 inputs stay float64.

    Args:
        x: an array.

    Returns:
        The dtype to compute statistics of x in.
    """
    return jn.promote_types(jn.result_type(x), jn.float32)


def cast_back(y: JaxArray, x: JaxArray) -> JaxArray:
    """y in the dtype of x when x is floating (an integer x leaves y in the compute dtype).

    Args:
        y: the result, computed in `float32_or_wider(x)`.
        x: the layer's input.

    Returns:
        y, cast to x's dtype when x is floating.
    """
    return y.astype(x.dtype) if jn.issubdtype(x.dtype, jn.inexact) else y


def is_narrow_float(x: JaxArray) -> bool:
    """Whether x is a floating array of less than 32 bits (bfloat16, float16...), which batch and group norm
    upcast to float32 for their statistics and normalization.

    Args:
        x: an array.

    Returns:
        True for a floating dtype narrower than float32.
    """
    dtype = jn.result_type(x)
    return bool(jn.issubdtype(dtype, jn.floating) and jn.finfo(dtype).bits < 32)
