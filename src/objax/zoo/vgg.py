"""VGG-19 (Simonyan & Zisserman, 2014, configuration E) as in Objax 1.8, with tensorflow-vgg's pretrained weights."""

import os
from typing import Dict, List, Optional, Union

import jax.numpy as jn
import numpy as np
import safetensors.numpy

from objax import functional
from objax.constants import ConvPadding
from objax.nn import Conv2D, Linear, Sequential
from objax.typing import JaxArray
from objax.zoo._npy_pickle import load_pickled_npy

__all__ = ['VGG19', 'VGG19_NPY', 'convert_vgg19_npy_to_safetensors', 'max_pool_2d', 'preprocess']

# Where Objax 1.8 reads the weights of github.com/machrisaa/tensorflow-vgg (relative to the working directory).
VGG19_NPY = './objax/zoo/pretrained/vgg19.npy'
# Per-channel means of the ImageNet training set in BGR order, on the 0..255 scale (Caffe VGG convention).
_BGR_MEAN = (103.939, 116.779, 123.68)
# Convolution widths of the five stages (each closed by a 2x2 max pooling), the fully connected widths, and
# the side of the last feature map for 224 x 224 inputs.
_STAGES = ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512))
_FC = (4096, 4096, 1000)
_FEATURE_SIDE = 7


def preprocess(x: JaxArray) -> JaxArray:
    """RGB images on the 0..255 scale -> BGR minus the ImageNet channel means, VGG19's input.

    Args:
        x: RGB images of shape (N, 3, H, W), values in 0..255.

    Returns:
        BGR images of shape (N, 3, H, W), each channel minus its ImageNet mean.

    Raises:
        ValueError: `x` is not of shape (N, 3, H, W).
    """
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f'VGG19 preprocess expects RGB images of shape (N, 3, H, W), got {tuple(x.shape)}')
    return jn.stack([x[:, 2] - _BGR_MEAN[0], x[:, 1] - _BGR_MEAN[1], x[:, 0] - _BGR_MEAN[2]], axis=1)


def max_pool_2d(x: JaxArray) -> JaxArray:
    """2x2 max pooling of stride 2 (VALID), as between VGG19's stages.

    Args:
        x: array of shape (N, C, H, W).

    Returns:
        The maxima, shape (N, C, H // 2, W // 2).
    """
    return functional.max_pool_2d(x, size=2, strides=2, padding=ConvPadding.VALID)


def _layer_names() -> List[str]:
    """Objax 1.8's names of the layers, in order: conv1_1, relu1_1, ..., pool5, flatten, fc6, ..., fc8."""
    names = []
    for stage, widths in enumerate(_STAGES, 1):
        for i in range(1, len(widths) + 1):
            names += [f'conv{stage}_{i}', f'relu{stage}_{i}']
        names.append(f'pool{stage}')
    names += ['flatten', 'fc6', 'relu6', 'fc7', 'relu7', 'fc8']
    return names


class VGG19(Sequential):
    """VGG-19: BGR images (N, 3, 224, 224) minus the ImageNet means (see `preprocess`) -> logits (N, 1000).

    The layers are Objax 1.8's, reachable by index or by name: conv1_1, relu1_1, ..., pool1, ..., conv5_4,
    relu5_4, pool5, flatten, fc6, relu6, fc7, relu7, fc8. No preprocessing and no softmax are applied.
    `VGG19(pretrained=True)` loads the weights of tensorflow-vgg's `vgg19.npy` from `path` (default VGG19_NPY).

    Args:
        pretrained: load the pretrained weights (otherwise the weights are freshly initialized).
        path: the vgg19.npy file read when `pretrained`; None for VGG19_NPY (relative to the working directory).

    Raises:
        FileNotFoundError: with `pretrained`, no file at `path`.
        pickle.UnpicklingError: with `pretrained`, the file holds more than numpy arrays and plain containers.
        ValueError: with `pretrained`, the file is unreadable or a layer is missing or mis-shaped (see `load_npy`).
    """

    def __init__(self, pretrained: bool = False, path: Optional[Union[str, os.PathLike]] = None):
        super().__init__()
        self.pretrained = pretrained
        self.build()
        if pretrained:
            self.load_npy(VGG19_NPY if path is None else path)

    def build(self):
        """(Re)creates all layers in place with freshly initialized weights."""
        ops, nin = [], 3
        for widths in _STAGES:
            for nout in widths:
                ops += [Conv2D(nin, nout, 3), functional.relu]
                nin = nout
            ops.append(max_pool_2d)
        ops.append(functional.flatten)
        nin *= _FEATURE_SIDE ** 2
        for i, nout in enumerate(_FC):
            ops.append(Linear(nin, nout))
            if i < len(_FC) - 1:
                ops.append(functional.relu)
            nin = nout
        self.clear()
        self.extend(ops)
        self.__dict__['_index'] = {name: i for i, name in enumerate(_layer_names())}

    def __getattr__(self, name: str):
        index = self.__dict__.get('_index', {})
        if name in index:
            return self[index[name]]
        raise AttributeError(f'{type(self).__name__} has no attribute {name!r}')

    def load_npy(self, path: Union[str, os.PathLike]):
        """Loads tensorflow-vgg's `vgg19.npy` (a pickled dict {layer: [weights, bias]}), all or nothing.

        Args:
            path: the vgg19.npy file. Only numpy arrays and plain containers are unpickled from it.

        Raises:
            FileNotFoundError: no file at `path`.
            pickle.UnpicklingError: the file holds anything but numpy arrays, dtypes, lists, tuples and dicts.
            ValueError: the file is not a readable .npy file, or a layer is missing or has the wrong shape.
        """
        if not os.path.exists(path):
            raise FileNotFoundError(
                f'VGG19(pretrained=True) needs {os.fspath(path)!r}: download vgg19.npy from '
                f'https://github.com/machrisaa/tensorflow-vgg and save it there (or pass path=...)')
        values = _npy_values(load_pickled_npy(path), os.fspath(path))
        targets = {f'{name}.{v}': getattr(getattr(self, name), v) for name in values for v in ('w', 'b')}
        for key, target in targets.items():
            layer, v = key.split('.')
            value = values[layer][v]
            if value.shape != target.value.shape:
                raise ValueError(f'{os.fspath(path)}: {layer} {"weights" if v == "w" else "bias"} have shape '
                                 f'{value.shape}, VGG19 expects {tuple(target.value.shape)}')
        for key, target in targets.items():
            layer, v = key.split('.')
            target.assign(jn.asarray(values[layer][v], target.value.dtype))


def _npy_values(data, source: str) -> Dict[str, Dict[str, np.ndarray]]:
    """{layer: {'w': weights, 'b': bias}} in objax's layout from tensorflow-vgg's {layer: [weights, bias]}.

    Convolution weights are HWIO in both; biases become (nout, 1, 1). fc6's rows follow TensorFlow's NHWC
    flattening (h, w, c) and are reordered to the NCHW flattening (c, h, w) of `functional.flatten`.
    """
    if not isinstance(data, dict):
        raise ValueError(f'{source}: expected a dict of layers, got {type(data).__name__}')
    layers = [n for n in _layer_names() if n.startswith(('conv', 'fc'))]
    missing = [n for n in layers if n not in data]
    if missing:
        raise ValueError(f'{source}: missing layers {missing}')
    values = {}
    for name in layers:
        entry = data[name]
        if not isinstance(entry, (list, tuple)) or len(entry) < 2:
            raise ValueError(f'{source}: {name} must be [weights, bias], got {type(entry).__name__}')
        w, b = (np.asarray(a, np.float32) for a in entry[:2])
        if name.startswith('conv'):
            b = b.reshape((-1, 1, 1)) if b.ndim == 1 else b
        elif name == 'fc6' and w.ndim == 2 and w.shape[0] % _FEATURE_SIDE ** 2 == 0:
            channels = w.shape[0] // _FEATURE_SIDE ** 2
            w = w.reshape((_FEATURE_SIDE, _FEATURE_SIDE, channels, -1)).transpose((2, 0, 1, 3))
            w = w.reshape((channels * _FEATURE_SIDE ** 2, -1))
        values[name] = {'w': w, 'b': b}
    return values


def convert_vgg19_npy_to_safetensors(npy_path: Union[str, os.PathLike], out_path: Union[str, os.PathLike]):
    """Writes tensorflow-vgg's `vgg19.npy` as a safetensors file named like `VGG19().vars()`.

    The result loads with `objax.io.load_safetensors(out_path, VGG19().vars())`, with no pickle involved.

    Args:
        npy_path: tensorflow-vgg's vgg19.npy.
        out_path: the safetensors file to write.

    Raises:
        FileNotFoundError: no file at `npy_path`.
        pickle.UnpicklingError: the file holds anything but numpy arrays, dtypes, lists, tuples and dicts.
        ValueError: the file is not a readable .npy file or a layer is missing.
    """
    values = _npy_values(load_pickled_npy(npy_path), os.fspath(npy_path))
    index = {name: i for i, name in enumerate(_layer_names())}
    tensors = {}
    for layer, wb in values.items():
        kind = 'Conv2D' if layer.startswith('conv') else 'Linear'
        for v in ('b', 'w'):
            tensors[f'(VGG19)[{index[layer]}]({kind}).{v}'] = np.ascontiguousarray(wb[v])
    safetensors.numpy.save_file(tensors, os.fspath(out_path))
