"""Wide residual networks (Zagoruyko & Komodakis, 2016), pre-activation variant."""

import functools
from typing import Callable, List

import numpy as np

from objax.constants import ConvPadding
from objax.functional import relu
from objax.module import Module
from objax.nn import BatchNorm2D, Conv2D, Linear, Sequential
from objax.nn.init import xavier_truncated_normal
from objax.random import normal
from objax.typing import JaxArray

__all__ = ['WRNBlock', 'WideResNetGeneral', 'WideResNet']

_BN = functools.partial(BatchNorm2D, momentum=0.9, eps=1e-5)


def _conv(nin: int, nout: int, k: int, stride: int = 1) -> Conv2D:
    """k x k SAME convolution without bias, He-normal weights with fan_out = k * k * nout."""
    stddev = float(np.sqrt(2 / (k * k * nout)))
    return Conv2D(nin, nout, k, strides=stride, padding=ConvPadding.SAME, use_bias=False,
                  w_init=functools.partial(normal, stddev=stddev))


class WRNBlock(Module):
    """Pre-activation residual block: (N, nin, H, W) -> (N, nout, ceil(H / stride), ceil(W / stride)).

    bn-relu-conv3x3(stride)-bn-relu-conv3x3; the shortcut is a strided 1x1 convolution of the first
    pre-activation when the shape changes (nin != nout or stride > 1), else the input itself.

    Args:
        nin: number of input channels.
        nout: number of output channels.
        stride: stride of the first convolution and of the shortcut.
        bn: builds a normalization layer from a channel count, called with `training=` (default BatchNorm2D with
            momentum 0.9 and eps 1e-5).
    """

    def __init__(self, nin: int, nout: int, stride: int = 1, bn: Callable = _BN):
        if nin != nout or stride > 1:
            self.proj_conv = _conv(nin, nout, 1, stride)
        else:
            self.proj_conv = None
        self.norm_1 = bn(nin)
        self.conv_1 = _conv(nin, nout, 3, stride)
        self.norm_2 = bn(nout)
        self.conv_2 = _conv(nout, nout, 3)

    def __call__(self, x: JaxArray, training: bool) -> JaxArray:
        """Applies the block.

        Args:
            x: input of shape (N, nin, H, W).
            training: whether normalization layers use and update batch statistics.

        Returns:
            The output, shape (N, nout, ceil(H / stride), ceil(W / stride)).
        """
        o1 = relu(self.norm_1(x, training=training))
        y = self.conv_2(relu(self.norm_2(self.conv_1(o1), training=training)))
        return y + (self.proj_conv(o1) if self.proj_conv is not None else x)


class WideResNetGeneral(Sequential):
    """Wide ResNet for NCHW images: (N, nin, H, W) -> logits (N, nclass).

    A 16-channel 3x3 stem, then group g of max(1, blocks_per_group[g]) WRNBlocks with 16 * 2**g * width
    channels (groups after the first start with stride 2), then bn, relu, spatial mean and a Linear classifier.
    Call with `training=True` to use and update batch statistics.

    Args:
        nin: number of input channels.
        nclass: number of classes (output logits).
        blocks_per_group: number of blocks of each group (values below 1 count as 1); its length is the number of
            groups.
        width: channel multiplier of every group (16 * 2**g * width channels, truncated to an int).
        bn: builds a normalization layer from a channel count, called with `training=` (default BatchNorm2D with
            momentum 0.9 and eps 1e-5).

    Raises:
        ValueError: `nin` is not a positive integer, `blocks_per_group` holds a non-integer, or `width` <= 0.
    """

    @staticmethod
    def mean_reduce(x: JaxArray) -> JaxArray:
        """Averages over the spatial axes.

        Args:
            x: array of shape (N, C, H, W).

        Returns:
            The means, shape (N, C).
        """
        return x.mean((2, 3))

    def __init__(self, nin: int, nclass: int, blocks_per_group: List[int], width: int, bn: Callable = _BN):
        if int(nin) != nin or nin < 1:
            raise ValueError(f'{type(self).__name__}: nin must be a positive integer, got {nin!r}')
        if any(int(b) != b for b in blocks_per_group):
            raise ValueError(f'{type(self).__name__}: blocks_per_group must be a list of integers, '
                             f'got {blocks_per_group!r}')
        if width <= 0:
            raise ValueError(f'{type(self).__name__}: width must be positive, got {width!r}')
        n = 16
        ops = [_conv(nin, n, 3)]
        for group, blocks in enumerate(blocks_per_group):
            nout = int(16 * 2 ** group * width)
            ops.append(WRNBlock(n, nout, 2 if group > 0 else 1, bn))
            ops += [WRNBlock(nout, nout, 1, bn) for _ in range(1, blocks)]
            n = nout
        ops += [bn(n), relu, self.mean_reduce, Linear(n, nclass, w_init=xavier_truncated_normal)]
        super().__init__(ops)


class WideResNet(WideResNetGeneral):
    """WRN-depth-width: three groups of (depth - 4) / 6 blocks (at least one each, as in Objax 1.8, so depth 4
    gives one block per group); depth must be 6n + 4 (4, 10, 16, 22, 28...).

    Maps (N, nin, H, W) -> logits (N, nclass); call with `training=`.

    Args:
        nin: number of input channels.
        nclass: number of classes (output logits).
        depth: the network depth, 6n + 4 for n blocks per group.
        width: channel multiplier (16, 32 and 64 channels times `width` in the three groups).
        bn: builds a normalization layer from a channel count, called with `training=` (default BatchNorm2D with
            momentum 0.9 and eps 1e-5).

    Raises:
        ValueError: `depth` is not 6n + 4, or an argument WideResNetGeneral rejects.
    """

    def __init__(self, nin: int, nclass: int, depth: int = 28, width: int = 2, bn: Callable = _BN):
        if int(depth) != depth or depth < 4 or (depth - 4) % 6:
            raise ValueError(f'WideResNet: depth must be 6n + 4 with n >= 0 (4, 10, 16, 22, 28...), got {depth!r}')
        super().__init__(nin, nclass, [(depth - 4) // 6] * 3, width, bn)
