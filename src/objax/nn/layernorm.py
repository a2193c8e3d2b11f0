"""Normalization over the features of each position: LayerNorm and RMSNorm."""

import numbers
from typing import Optional, Tuple

import jax.numpy as jn
from jax import lax

from objax.functional._checks import positive_int
from objax.module import Module
from objax.nn._format import layer_repr
from objax.nn._precision import cast_back, float32_or_wider
from objax.typing import JaxArray
from objax.variable import TrainVar

__all__ = ['LayerNorm', 'RMSNorm']


def _checked_scale(owner: str, nin: int, eps: float, use_scale: bool) -> Tuple[int, float, Optional[TrainVar]]:
    """(nin, eps, gamma): the checked sizes and the scale variable of ones (None without use_scale)."""
    nin = positive_int(owner, 'nin', nin)
    if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f'{owner}: eps must be a non-negative number, got {eps!r}')
    return nin, eps, TrainVar(jn.ones(nin)) if use_scale else None


def _check_features(owner: str, nin: int, x: JaxArray):
    shape = tuple(jn.shape(x))
    if not shape or shape[-1] != nin:
        raise ValueError(f'{owner} expects inputs with {nin} features on the last axis, got shape {shape}')


class LayerNorm(Module):
    """Normalizes the last axis of x to zero mean and unit variance, then scales by gamma and shifts by beta:
    (x - mean) / sqrt(var + eps) * gamma + beta, with the (biased) mean and variance over the last axis.

    Statistics are computed in float32 (or wider) and the result is cast back to x's dtype
    (when x is floating).
    """

    def __init__(self, nin: int, eps: float = 1e-5, use_scale: bool = True, use_bias: bool = True):
        """Creates gamma (ones) then beta (zeros), both of shape (nin,).

        Args:
            nin: number of features (the last axis of the input), a positive int.
            eps: added to the variance before its inverse square root, >= 0.
            use_scale: create and multiply by gamma; False sets `gamma` to None.
            use_bias: create and add beta; False sets `beta` to None.

        Raises:
            ValueError: nin not a positive int or eps negative.
        """
        self.nin, self.eps, self.gamma = _checked_scale('LayerNorm', nin, eps, use_scale)
        self.beta = TrainVar(jn.zeros(self.nin)) if use_bias else None

    def __call__(self, x: JaxArray) -> JaxArray:
        """x normalized over its last axis.

        Args:
            x: input of shape (..., nin).

        Returns:
            (x - mean) / sqrt(var + eps) * gamma + beta, shape and dtype of x.

        Raises:
            ValueError: the last axis of x is not nin.
        """
        _check_features('LayerNorm', self.nin, x)
        xf = x.astype(float32_or_wider(x))
        mean = xf.mean(-1, keepdims=True)
        centered = xf - mean
        y = centered * lax.rsqrt(jn.square(centered).mean(-1, keepdims=True) + self.eps)
        if self.gamma is not None:
            y = y * self.gamma.value
        if self.beta is not None:
            y = y + self.beta.value
        return cast_back(y, x)

    def __repr__(self):
        return layer_repr(self, nin=self.nin, eps=self.eps, use_scale=self.gamma is not None,
                          use_bias=self.beta is not None)


class RMSNorm(Module):
    """Divides the last axis of x by its root mean square, then scales by gamma: x / sqrt(mean(x^2) + eps) * gamma
    (no centering, no bias; as in Llama and T5).

    Computed in float32 (or wider) and cast back to x's dtype.
    """

    def __init__(self, nin: int, eps: float = 1e-6, use_scale: bool = True):
        """Creates gamma (ones) of shape (nin,).

        Args:
            nin: number of features (the last axis of the input), a positive int.
            eps: added to the mean square before its inverse square root, >= 0.
            use_scale: create and multiply by gamma; False sets `gamma` to None.

        Raises:
            ValueError: nin not a positive int or eps negative.
        """
        self.nin, self.eps, self.gamma = _checked_scale('RMSNorm', nin, eps, use_scale)

    def __call__(self, x: JaxArray) -> JaxArray:
        """x divided by its root mean square over the last axis.

        Args:
            x: input of shape (..., nin).

        Returns:
            x / sqrt(mean(x^2, -1) + eps) * gamma, shape and dtype of x.

        Raises:
            ValueError: the last axis of x is not nin.
        """
        _check_features('RMSNorm', self.nin, x)
        xf = x.astype(float32_or_wider(x))
        y = xf * lax.rsqrt(jn.square(xf).mean(-1, keepdims=True) + self.eps)
        if self.gamma is not None:
            y = y * self.gamma.value
        return cast_back(y, x)

    def __repr__(self):
        return layer_repr(self, nin=self.nin, eps=self.eps, use_scale=self.gamma is not None)
