"""VGG-19 (Simonyan & Zisserman, 2014, configuration E) for 224x224 ImageNet-style inputs."""

import jax.numpy as jn

from objax import functional
from objax.nn import Conv2D, Linear, Sequential
from objax.typing import JaxArray

__all__ = ['VGG19', 'max_pool_2d', 'preprocess']

# Per-channel means of the ImageNet training set in BGR order, on the 0..255 scale (Caffe VGG convention).
_BGR_MEAN = (103.939, 116.779, 123.68)
# Convolution widths of the five stages; each stage ends with a 2x2 max pooling.
_STAGES = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))


def preprocess(x: JaxArray) -> JaxArray:
    """RGB images (N, 3, H, W) with values in [0, 1] -> BGR on the 0..255 scale minus the ImageNet means."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f'VGG19 preprocess expects RGB images of shape (N, 3, H, W), got {tuple(x.shape)}')
    x = x * 255
    return jn.stack([x[:, 2] - _BGR_MEAN[0], x[:, 1] - _BGR_MEAN[1], x[:, 0] - _BGR_MEAN[2]], axis=1)


def max_pool_2d(x: JaxArray) -> JaxArray:
    """2x2 max pooling of stride 2: (N, C, H, W) -> (N, C, H // 2, W // 2)."""
    return functional.max_pool_2d(x, size=2, strides=2)


class VGG19(Sequential):
    """VGG-19 classifier: RGB images (N, 3, 224, 224) in [0, 1] -> class probabilities (N, 1000).

    Layers: preprocess, 16 3x3 convolutions with ReLU in five stages each closed by max_pool_2d, flatten,
    fc6 and fc7 (4096 units, ReLU), fc8 (1000 units), softmax. `model[:-1]` gives the logits.
    Pretrained weights cannot be downloaded here: `pretrained=True` raises an error saying how to load
    them from a local file.
    """

    def __init__(self, pretrained: bool = False):
        if pretrained:
            raise RuntimeError(
                'VGG19(pretrained=True): the pretrained VGG19 weights cannot be downloaded here. Load them from a '
                'local file instead: `model = objax.zoo.vgg.VGG19()` then '
                '`objax.io.load_var_collection("vgg19.npz", model.vars())`, where vgg19.npz was written by '
                'objax.io.save_var_collection (a converted copy of the ImageNet weights, variables in the order '
                'of model.vars()).')
        super().__init__()
        self.build()

    def build(self):
        """(Re)creates all layers in place with freshly initialized weights."""
        ops = [preprocess]
        nin = 3
        for stage in _STAGES:
            for nout in stage:
                ops += [Conv2D(nin, nout, 3), functional.relu]
                nin = nout
            ops.append(max_pool_2d)
        ops += [functional.flatten,
                Linear(512 * 7 * 7, 4096), functional.relu,
                Linear(4096, 4096), functional.relu,
                Linear(4096, 1000), functional.softmax]
        self.clear()
        self.extend(ops)
