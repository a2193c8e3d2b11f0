"""Group normalization: channels split into groups normalized per example."""

import numbers

import jax.numpy as jn
from jax import lax

from objax.module import Module
from objax.nn._format import layer_repr
from objax.nn._precision import is_narrow_float
from objax.typing import JaxArray
from objax.variable import TrainVar

__all__ = ['GroupNorm', 'GroupNorm0D', 'GroupNorm1D', 'GroupNorm2D']


class GroupNorm(Module):
    """Normalizes each example's channel groups over (channels in group, spatial axes), then applies
    per-channel gamma/beta of shape (1, nin, 1, ...). Inputs (N, nin, ...) with `rank` dimensions."""

    def __init__(self, nin: int, rank: int, groups: int = 32, eps: float = 1e-5):
        """Creates unit gamma and zero beta of shape (1, nin, 1, ...) (`rank` dimensions).

        Args:
            nin: number of channels (axis 1 of the input), a positive int divisible by groups.
            rank: number of input dimensions, batch and channel axes included (>= 2; 4 for NCHW images).
            groups: number of channel groups, a positive int.
            eps: added to the variance before its inverse square root, >= 0.

        Raises:
            ValueError: nin, rank or groups not positive ints, rank < 2, nin not divisible by groups, or eps
                negative.
        """
        owner = type(self).__name__
        for name, v in (('nin', nin), ('rank', rank), ('groups', groups)):
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v <= 0:
                raise ValueError(f'{owner}: {name} must be a positive int, got {v!r}')
        if rank < 2:
            raise ValueError(f'{owner}: rank (the input dimensions, batch and channels included) must be at '
                             f'least 2, got {rank}')
        if nin % groups:
            raise ValueError(f'{owner}: nin ({nin}) must be divisible by groups ({groups})')
        if not isinstance(eps, numbers.Real) or eps < 0:
            raise ValueError(f'{owner}: eps must be a non-negative number, got {eps!r}')
        self.nin = int(nin)
        self.rank = int(rank)
        self.groups = int(groups)
        self.eps = eps
        shape = (1, nin) + (1,) * (rank - 2)
        self.gamma = TrainVar(jn.ones(shape))  # gamma before beta: vars() order of Objax 1.8
        self.beta = TrainVar(jn.zeros(shape))

    def __call__(self, x: JaxArray, training: bool = True) -> JaxArray:
        """Normalized x, same shape (N, nin, ...); `training` is accepted for compatibility and unused.

        Args:
            x: input of shape (N, nin, ...) with `rank` dimensions.
            training: ignored (group norm has no running statistics).

        Returns:
            Each example's channel groups normalized to zero mean and unit variance, times gamma plus beta;
            shape of x. A bfloat16 or float16 x is normalized in float32 and the result given in x's dtype.

        Raises:
            ValueError: x has not `rank` dimensions or not nin channels on axis 1.
        """
        shape = tuple(jn.shape(x))
        owner = type(self).__name__
        if len(shape) != self.rank:
            raise ValueError(f'{owner} expects inputs of rank {self.rank} (N, {self.nin}, ...), got an input of '
                             f'rank {len(shape)} and shape {shape}')
        if shape[1] != self.nin:
            raise ValueError(f'{owner} expects {self.nin} channels on axis 1 but the input has {shape[1]} '
                             f'(input shape {shape})')
        narrow = is_narrow_float(x)  # bfloat16/float16: statistics and normalization in float32
        grouped = (x.astype(jn.float32) if narrow else x).reshape((shape[0], self.groups, self.nin // self.groups)
                                                                   + shape[2:])
        redux = tuple(range(2, grouped.ndim))
        mean = grouped.mean(redux, keepdims=True)
        var = jn.square(grouped - mean).mean(redux, keepdims=True)
        y = ((grouped - mean) * lax.rsqrt(var + self.eps)).reshape(shape) * self.gamma.value + self.beta.value
        return y.astype(x.dtype) if narrow else y

    def __repr__(self):
        if self._fixed_rank:
            return layer_repr(self, nin=self.nin, groups=self.groups, eps=self.eps)
        return layer_repr(self, nin=self.nin, rank=self.rank, groups=self.groups, eps=self.eps)

    # The 0D/1D/2D variants fix the rank: their repr leaves it out.
    _fixed_rank = False


class GroupNorm0D(GroupNorm):
    """Group norm of (N, nin) inputs."""

    _fixed_rank = True

    def __init__(self, nin: int, groups: int = 32, eps: float = 1e-5):
        """Creates unit gamma and zero beta of shape (1, nin).

        Args:
            nin: number of channels (axis 1 of the input), a positive int divisible by groups.
            groups: number of channel groups, a positive int.
            eps: added to the variance before its inverse square root, >= 0.

        Raises:
            ValueError: nin or groups not positive ints, nin not divisible by groups, or eps negative.
        """
        super().__init__(nin, rank=2, groups=groups, eps=eps)


class GroupNorm1D(GroupNorm):
    """Group norm of (N, nin, L) sequences."""

    _fixed_rank = True

    def __init__(self, nin: int, groups: int = 32, eps: float = 1e-5):
        """Creates unit gamma and zero beta of shape (1, nin, 1).

        Args:
            nin: number of channels (axis 1 of the input), a positive int divisible by groups.
            groups: number of channel groups, a positive int.
            eps: added to the variance before its inverse square root, >= 0.

        Raises:
            ValueError: nin or groups not positive ints, nin not divisible by groups, or eps negative.
        """
        super().__init__(nin, rank=3, groups=groups, eps=eps)


class GroupNorm2D(GroupNorm):
    """Group norm of (N, nin, H, W) images."""

    _fixed_rank = True

    def __init__(self, nin: int, groups: int = 32, eps: float = 1e-5):
        """Creates unit gamma and zero beta of shape (1, nin, 1, 1).

        Args:
            nin: number of channels (axis 1 of the input), a positive int divisible by groups.
            groups: number of channel groups, a positive int.
            eps: added to the variance before its inverse square root, >= 0.

        Raises:
            ValueError: nin or groups not positive ints, nin not divisible by groups, or eps negative.
        """
        super().__init__(nin, rank=4, groups=groups, eps=eps)
