"""A plain all-convolutional classifier."""

from typing import Callable

from objax.functional import leaky_relu, max_pool_2d
from objax.nn import Conv2D, Sequential
from objax.typing import JaxArray

__all__ = ['ConvNet']


def _spatial_mean(x: JaxArray) -> JaxArray:
    """(N, C, H, W) -> (N, C): average over the spatial axes."""
    return x.mean((2, 3))


class ConvNet(Sequential):
    """Convolutional classifier for NCHW images: (N, nin, H, W) -> logits (N, nclass).

    A 3x3 stem convolution, then `scales` stages of two 3x3 convolutions (leaky ReLU after each) followed by
    `pooling`; stage i works with min(filters_max, filters * 2**i) channels. A final 3x3 convolution to
    `nclass` channels is averaged over space. Extra keyword arguments are accepted and ignored (as in Objax).
    """

    def __init__(self, nin: int, nclass: int, scales: int, filters: int, filters_max: int,
                 pooling: Callable[[JaxArray], JaxArray] = max_pool_2d, **kwargs):
        for name, value in (('nin', nin), ('nclass', nclass), ('filters', filters), ('filters_max', filters_max)):
            if int(value) != value or value < 1:
                raise ValueError(f'ConvNet: {name} must be a positive integer, got {value!r}')
        if int(scales) != scales or scales < 0:
            raise ValueError(f'ConvNet: scales must be a non-negative integer, got {scales!r}')
        if not callable(pooling):
            raise TypeError(f'ConvNet: pooling must be callable, got {type(pooling).__name__}')

        def width(scale: int) -> int:
            return min(filters_max, filters << scale)

        ops = [Conv2D(nin, width(0), 3), leaky_relu]
        for i in range(scales):
            ops += [Conv2D(width(i), width(i), 3), leaky_relu,
                    Conv2D(width(i), width(i + 1), 3), leaky_relu,
                    pooling]
        ops += [Conv2D(width(scales), nclass, 3), _spatial_mean]
        super().__init__(ops)
