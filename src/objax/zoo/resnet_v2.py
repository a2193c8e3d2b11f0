"""Pre-activation residual networks (ResNet v2, He et al. 2016) laid out as in Objax 1.8.

Layer indices, variable names and creation order follow Objax 1.8, so its checkpoints load unchanged:
`[0]` a 7x7 stride-2 convolution (padding 3), `[1]` a zero padding of 1 on H and W, `[2]` a 3x3 stride-2
VALID max pooling, then one ResNetV2BlockGroup per group from index 3, then normalization, activation,
spatial mean and a Linear classifier. No convolution has a bias.
"""

import functools
from typing import Callable, Sequence

import jax.numpy as jn
import numpy as np

from objax.constants import ConvPadding
from objax.functional import max_pool_2d, relu
from objax.module import Module
from objax.nn import BatchNorm2D, Conv2D, Linear, Sequential
from objax.nn.init import xavier_normal
from objax.random import normal
from objax.typing import JaxArray

__all__ = ['ResNetV2', 'ResNetV2Block', 'ResNetV2BlockGroup', 'ResNet18', 'ResNet34', 'ResNet50', 'ResNet101',
           'ResNet152', 'ResNet200', 'load_pretrained_weights_from_keras']


def _conv(nin: int, nout: int, k: int, stride: int = 1, padding: int = 0) -> Conv2D:
    """k x k convolution without bias, zero padding `padding`, weights N(0, 2 / (k * k * nout))."""
    stddev = float(np.sqrt(2 / (k * k * nout)))
    return Conv2D(nin, nout, k, strides=stride, padding=padding if padding else ConvPadding.VALID, use_bias=False,
                  w_init=functools.partial(normal, stddev=stddev))


def _pad_1(x: JaxArray) -> JaxArray:
    """Zero padding of 1 on both sides of H and W: (N, C, H, W) -> (N, C, H + 2, W + 2)."""
    return jn.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))


def _spatial_mean(x: JaxArray) -> JaxArray:
    """(N, C, H, W) -> (N, C): average over the spatial axes."""
    return x.mean((2, 3))


class ResNetV2Block(Module):
    """Pre-activation residual block (N, nin, H, W) -> (N, nout, ceil(H / stride), ceil(W / stride)).

    Each convolution is preceded by normalization and activation. Bottleneck: 1x1 (nout/4), 3x3 (nout/4,
    strided), 1x1 (nout); otherwise 3x3 then 3x3 (strided). The shortcut is a strided 1x1 convolution of the
    first pre-activation when `use_projection`, else the input subsampled by `stride`.

    Args:
        nin: number of input channels.
        nout: number of output channels (a multiple of 4 for a bottleneck block).
        stride: stride of the strided convolution and of the shortcut (1 keeps H and W).
        use_projection: whether the shortcut is a 1x1 convolution (required when nin != nout).
        bottleneck: use the 1x1 / 3x3 / 1x1 bottleneck layout instead of two 3x3 convolutions.
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).

    Raises:
        ValueError: `nin` != `nout` without `use_projection`.
    """

    def __init__(self, nin: int, nout: int, stride: int, use_projection: bool, bottleneck: bool,
                 normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        if not use_projection and nin != nout:
            raise ValueError(f'ResNetV2Block: without projection nin must equal nout, got nin={nin}, nout={nout}')
        self.use_projection = use_projection
        self.activation_fn = activation_fn
        self.stride = stride
        if use_projection:
            self.proj_conv = _conv(nin, nout, 1, stride)
        if bottleneck:
            mid = nout // 4
            self.norm_0, self.conv_0 = normalization_fn(nin), _conv(nin, mid, 1)
            self.norm_1, self.conv_1 = normalization_fn(mid), _conv(mid, mid, 3, stride, padding=1)
            self.norm_2, self.conv_2 = normalization_fn(mid), _conv(mid, nout, 1)
            self.layers = ((self.norm_0, self.conv_0), (self.norm_1, self.conv_1), (self.norm_2, self.conv_2))
        else:
            self.norm_0, self.conv_0 = normalization_fn(nin), _conv(nin, nout, 3, padding=1)
            self.norm_1, self.conv_1 = normalization_fn(nout), _conv(nout, nout, 3, stride, padding=1)
            self.layers = ((self.norm_0, self.conv_0), (self.norm_1, self.conv_1))

    def __call__(self, x: JaxArray, training: bool) -> JaxArray:
        """Applies the block.

        Args:
            x: input of shape (N, nin, H, W).
            training: whether normalization layers use and update batch statistics.

        Returns:
            The output, shape (N, nout, ceil(H / stride), ceil(W / stride)).
        """
        shortcut = x[:, :, ::self.stride, ::self.stride] if self.stride > 1 else x
        for i, (norm, conv) in enumerate(self.layers):
            x = self.activation_fn(norm(x, training=training))
            if i == 0 and self.use_projection:
                shortcut = self.proj_conv(x)
            x = conv(x)
        return x + shortcut


class ResNetV2BlockGroup(Sequential):
    """`num_blocks` ResNetV2Blocks: the first maps nin -> nout (projecting if asked), the last applies `stride`.

    Maps (N, nin, H, W) -> (N, nout, ceil(H / stride), ceil(W / stride)); call with `training=`.

    Args:
        nin: number of input channels of the first block.
        nout: number of output channels of every block.
        num_blocks: number of blocks.
        stride: stride of the last block (the others use 1).
        use_projection: whether the first block's shortcut is a 1x1 convolution (required when nin != nout).
        bottleneck: use bottleneck blocks.
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).

    Raises:
        ValueError: `nin` != `nout` without `use_projection`.
    """

    def __init__(self, nin: int, nout: int, num_blocks: int, stride: int, use_projection: bool, bottleneck: bool,
                 normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        super().__init__([ResNetV2Block(nin if i == 0 else nout, nout, stride if i == num_blocks - 1 else 1,
                                        use_projection and i == 0, bottleneck, normalization_fn, activation_fn)
                          for i in range(num_blocks)])


class ResNetV2(Sequential):
    """ResNet v2 classifier for NCHW images: (N, in_channels, H, W) -> logits (N, num_classes).

    Group g has blocks_per_group[g] blocks with channels_per_group[g] output channels; its last block is
    strided by group_strides[g]; its first block projects the shortcut when group_use_projection[g].
    Call with `training=True` to use and update batch statistics.

    Args:
        in_channels: number of input channels C.
        num_classes: number of classes (output logits).
        blocks_per_group: number of blocks of each group; its length is the number of groups.
        bottleneck: use bottleneck blocks (1x1 / 3x3 / 1x1) rather than basic ones (3x3 / 3x3).
        channels_per_group: output channels of each group.
        group_strides: stride of the last block of each group.
        group_use_projection: whether the first block of each group projects its shortcut (required for a group
            that changes the channel count).
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).

    Raises:
        ValueError: `channels_per_group`, `group_strides` or `group_use_projection` does not have one entry per group,
            or a group changes the channel count without projection.
    """

    def __init__(self, in_channels: int, num_classes: int, blocks_per_group: Sequence[int], bottleneck: bool = True,
                 channels_per_group: Sequence[int] = (256, 512, 1024, 2048),
                 group_strides: Sequence[int] = (1, 2, 2, 2),
                 group_use_projection: Sequence[bool] = (True, True, True, True),
                 normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        groups = len(blocks_per_group)
        for name, seq in (('channels_per_group', channels_per_group), ('group_strides', group_strides),
                          ('group_use_projection', group_use_projection)):
            if len(seq) != groups:
                raise ValueError(f'ResNetV2: {name} has {len(seq)} entries but blocks_per_group has {groups}')
        ops = [_conv(in_channels, 64, 7, 2, padding=3), _pad_1,
               functools.partial(max_pool_2d, size=3, strides=2, padding=ConvPadding.VALID)]
        nin = 64
        for blocks, nout, stride, projection in zip(blocks_per_group, channels_per_group, group_strides,
                                                    group_use_projection):
            ops.append(ResNetV2BlockGroup(nin, nout, blocks, stride, projection, bottleneck, normalization_fn,
                                          activation_fn))
            nin = nout
        ops += [normalization_fn(nin), activation_fn, _spatial_mean, Linear(nin, num_classes, w_init=xavier_normal)]
        super().__init__(ops)


_WIDE = (256, 512, 1024, 2048)
_NARROW = (64, 128, 256, 512)


class ResNet18(ResNetV2):
    """ResNet-18 v2 (basic blocks 2-2-2-2, 64..512 channels): (N, C, H, W) -> (N, num_classes).

    Args:
        in_channels: number of input channels C.
        num_classes: number of classes (output logits).
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).
    """

    def __init__(self, in_channels: int, num_classes: int, normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        super().__init__(in_channels, num_classes, (2, 2, 2, 2), False, _NARROW, (2, 2, 2, 1),
                         (False, True, True, True), normalization_fn, activation_fn)


class ResNet34(ResNetV2):
    """ResNet-34 v2 (basic blocks 3-4-6-3, 64..512 channels): (N, C, H, W) -> (N, num_classes).

    Args:
        in_channels: number of input channels C.
        num_classes: number of classes (output logits).
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).
    """

    def __init__(self, in_channels: int, num_classes: int, normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        super().__init__(in_channels, num_classes, (3, 4, 6, 3), False, _NARROW, (2, 2, 2, 1),
                         (False, True, True, True), normalization_fn, activation_fn)


class ResNet50(ResNetV2):
    """ResNet-50 v2 (bottleneck blocks 3-4-6-3): (N, C, H, W) -> (N, num_classes).

    Args:
        in_channels: number of input channels C.
        num_classes: number of classes (output logits).
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).
    """

    def __init__(self, in_channels: int, num_classes: int, normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        super().__init__(in_channels, num_classes, (3, 4, 6, 3), True, _WIDE, (2, 2, 2, 1), (True,) * 4,
                         normalization_fn, activation_fn)


class ResNet101(ResNetV2):
    """ResNet-101 v2 (bottleneck blocks 3-4-23-3): (N, C, H, W) -> (N, num_classes).

    Args:
        in_channels: number of input channels C.
        num_classes: number of classes (output logits).
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).
    """

    def __init__(self, in_channels: int, num_classes: int, normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        super().__init__(in_channels, num_classes, (3, 4, 23, 3), True, _WIDE, (2, 2, 2, 1), (True,) * 4,
                         normalization_fn, activation_fn)


class ResNet152(ResNetV2):
    """ResNet-152 v2 (bottleneck blocks 3-8-36-3): (N, C, H, W) -> (N, num_classes).

    Args:
        in_channels: number of input channels C.
        num_classes: number of classes (output logits).
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).
    """

    def __init__(self, in_channels: int, num_classes: int, normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        super().__init__(in_channels, num_classes, (3, 8, 36, 3), True, _WIDE, (2, 2, 2, 1), (True,) * 4,
                         normalization_fn, activation_fn)


class ResNet200(ResNetV2):
    """ResNet-200 v2 (bottleneck blocks 3-24-36-3): (N, C, H, W) -> (N, num_classes).

    Args:
        in_channels: number of input channels C.
        num_classes: number of classes (output logits).
        normalization_fn: builds a normalization layer from a channel count (default BatchNorm2D); called with
            `training=` like BatchNorm2D.
        activation_fn: the activation applied after each normalization (default relu).
    """

    def __init__(self, in_channels: int, num_classes: int, normalization_fn: Callable[..., Module] = BatchNorm2D,
                 activation_fn: Callable[[JaxArray], JaxArray] = relu):
        super().__init__(in_channels, num_classes, (3, 24, 36, 3), True, _WIDE, (2, 2, 2, 1), (True,) * 4,
                         normalization_fn, activation_fn)


_KERAS_ARCHS = {'ResNet50': ResNet50, 'ResNet101': ResNet101, 'ResNet152': ResNet152}


def load_pretrained_weights_from_keras(arch: str, include_top: bool = True, num_classes: int = 1000):
    """Objax 1.8 downloaded Keras ImageNet weights here; this build cannot download them, so it raises an
    error explaining how to load weights from a local file instead.

    Args:
        arch: 'ResNet50', 'ResNet101' or 'ResNet152'.
        include_top: whether the classifier head would be loaded too (only shapes the advice in the message).
        num_classes: number of classes of the head (only shapes the advice in the message).

    Raises:
        ValueError: `arch` is not one of the names above.
        RuntimeError: always otherwise; the message shows how to build the model and load a local .npz file.
    """
    if arch not in _KERAS_ARCHS:
        raise ValueError(f'load_pretrained_weights_from_keras: arch must be one of {sorted(_KERAS_ARCHS)}, '
                         f'got {arch!r}')
    head = f'{num_classes}' if include_top else '<your number of classes>'
    raise RuntimeError(
        f'load_pretrained_weights_from_keras({arch!r}): pretrained Keras weights cannot be downloaded here. '
        f'Load them from a local file instead: build the model with `model = objax.zoo.resnet_v2.{arch}('
        f'in_channels=3, num_classes={head})`, then `objax.io.load_var_collection("weights.npz", model.vars())` '
        f'where weights.npz was written by objax.io.save_var_collection (for instance after converting the '
        f'Keras {arch}V2 weights layer by layer on a machine that has them).')
