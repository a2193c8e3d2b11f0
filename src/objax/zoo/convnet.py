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

    Args:
        nin: number of input channels.
        nclass: number of classes (output logits).
        scales: number of convolution + pooling stages (0 for none); each pooling divides H and W by 2 by default.
        filters: channels of the stem and of the first stage, doubled at each following stage.
        filters_max: upper bound on the channels of any stage.
        pooling: function applied at the end of each stage to (N, C, H, W) arrays, by default 2x2 max pooling.

    Raises:
        ValueError: `nin`, `nclass`, `filters` or `filters_max` is not a positive integer, or `scales` is negative.
        TypeError: `pooling` is not callable.
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
