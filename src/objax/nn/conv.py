"""2D convolution and transposed convolution on NCHW images with HWIO kernels."""

import numbers
from typing import Callable, Sequence, Tuple, Union

import jax.numpy as jn
from jax import lax

from objax.constants import ConvPadding
from objax.module import Module
from objax.nn._format import layer_repr
from objax.nn.init import kaiming_normal
from objax.typing import JaxArray
from objax.util.conversion import to_padding
from objax.variable import TrainVar

__all__ = ['Conv2D', 'ConvTranspose2D']

PaddingArg = Union[ConvPadding, str, Sequence[Tuple[int, int]], Tuple[int, int], int]
_DIMENSIONS = ('NCHW', 'HWIO', 'NCHW')


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _pair(value, name: str, owner: str) -> Tuple[int, int]:
    """An int or a pair of ints as a pair of positive ints."""
    if _is_int(value):
        value = (value, value)
    try:
        pair = tuple(value)
    except TypeError:
        pair = ()
    if len(pair) != 2 or not all(_is_int(v) and v > 0 for v in pair):
        raise ValueError(f'{owner}: {name} must be a positive int or a pair of positive ints, got {value!r}')
    return int(pair[0]), int(pair[1])


def _padding(padding: PaddingArg, owner: str) -> Union[str, Tuple[Tuple[int, int], ...]]:
    """'SAME'/'VALID', or one (low, high) pair per spatial axis, from any accepted padding form."""
    try:
        return to_padding(padding, 2)
    except (TypeError, ValueError) as e:
        raise type(e)(f'{owner}: {e}') from None


def _check_image(x: JaxArray, nin: int, owner: str):
    shape = tuple(jn.shape(x))
    if len(shape) != 4:
        raise ValueError(f'{owner} expects NCHW images (4 dimensions), got an input of shape {shape}')
    if shape[1] != nin:
        raise ValueError(f'{owner} expects {nin} input channels but the input has {shape[1]} channels '
                         f'(axis 1 of shape {shape}, images are NCHW)')


class Conv2D(Module):
    """2D convolution of NCHW images: x (N, nin, H, W) -> (N, nout, H', W').

    Kernel w of shape (k_h, k_w, nin // groups, nout) (HWIO); bias b of shape (nout, 1, 1), created before w
    (vars() lists `.b` then `.w`, as Objax 1.8).
    """

    def __init__(self, nin: int, nout: int, k: Union[Tuple[int, int], int],
                 strides: Union[Tuple[int, int], int] = 1, dilations: Union[Tuple[int, int], int] = 1,
                 groups: int = 1, padding: PaddingArg = ConvPadding.SAME, use_bias: bool = True,
                 w_init: Callable = kaiming_normal):
        """Creates the kernel w with `w_init` and a zero bias b.

        Args:
            nin: number of input channels, a positive int divisible by groups.
            nout: number of output channels, a positive int divisible by groups.
            k: kernel size, an int (square) or a (k_h, k_w) pair of positive ints.
            strides: step of the kernel, an int or a pair of positive ints.
            dilations: spacing between kernel taps, an int or a pair of positive ints.
            groups: number of channel groups; each group of nout // groups outputs sees nin // groups inputs.
            padding: ConvPadding.SAME / 'same' (output H' = ceil(H / stride)), ConvPadding.VALID / 'valid' (no
                padding), an int (both sides of both axes), a (low, high) pair or ((low, high), (low, high)).
            use_bias: whether to create and add the bias b; False sets `b` to None.
            w_init: called with the kernel shape (k_h, k_w, nin // groups, nout), returns its initial value.

        Raises:
            ValueError: nin, nout or groups not positive ints or not divisible; k, strides or dilations not
                positive; an unknown padding name or a negative or malformed padding.
            TypeError: padding of an unsupported type.
        """
        owner = type(self).__name__
        for name, v in (('nin', nin), ('nout', nout), ('groups', groups)):
            if not _is_int(v) or v <= 0:
                raise ValueError(f'{owner}: {name} must be a positive int, got {v!r}')
        if nin % groups or nout % groups:
            raise ValueError(f'{owner}: nin ({nin}) and nout ({nout}) must both be divisible by groups ({groups})')
        k = _pair(k, 'k', owner)
        self.strides = _pair(strides, 'strides', owner)
        self.dilations = _pair(dilations, 'dilations', owner)
        self.groups = int(groups)
        self.padding = _padding(padding, owner)
        self.b = TrainVar(jn.zeros((nout, 1, 1))) if use_bias else None
        self.w = TrainVar(w_init((*k, nin // groups, nout)))
        self.w_init = w_init

    def __call__(self, x: JaxArray) -> JaxArray:
        """Convolves x (N, nin, H, W) and adds the bias: (N, nout, H', W').

        Args:
            x: images of shape (N, nin, H, W).

        Returns:
            The convolution, shape (N, nout, H', W'); H', W' follow from the padding, strides and dilations.

        Raises:
            ValueError: x is not 4-dimensional or has not nin channels on axis 1.
        """
        w = self.w.value
        _check_image(x, w.shape[2] * self.groups, type(self).__name__)
        y = lax.conv_general_dilated(x, w, self.strides, self.padding, rhs_dilation=self.dilations,
                                     feature_group_count=self.groups, dimension_numbers=_DIMENSIONS)
        if self.b is not None:
            y = y + self.b.value
        return y

    def __repr__(self):
        kh, kw, nin_g, nout = self.w.value.shape
        return layer_repr(self, nin=nin_g * self.groups, nout=nout, k=(kh, kw), strides=self.strides,
                          dilations=self.dilations, groups=self.groups, padding=self.padding,
                          use_bias=self.b is not None, w_init=self.w_init)


class ConvTranspose2D(Conv2D):
    """Transposed 2D convolution of NCHW images: x (N, nin, H, W) -> (N, nout, H', W') (e.g. H' = H * strides
    with SAME padding).

    Kernel w of shape (k_h, k_w, nout, nin); bias b of shape (nout, 1, 1), listed before w by vars().
    """

    def __init__(self, nin: int, nout: int, k: Union[Tuple[int, int], int],
                 strides: Union[Tuple[int, int], int] = 1, dilations: Union[Tuple[int, int], int] = 1,
                 padding: PaddingArg = ConvPadding.SAME, use_bias: bool = True, w_init: Callable = kaiming_normal):
        """Creates the kernel w with `w_init` and a zero bias b.

        Args:
            nin: number of input channels, a positive int.
            nout: number of output channels, a positive int.
            k: kernel size, an int (square) or a (k_h, k_w) pair of positive ints.
            strides: upsampling factor, an int or a pair of positive ints.
            dilations: spacing between kernel taps, an int or a pair of positive ints.
            padding: ConvPadding.SAME / 'same' (output H' = H * stride), ConvPadding.VALID / 'valid', an int,
                a (low, high) pair or ((low, high), (low, high)), as for Conv2D.
            use_bias: whether to create and add the bias b; False sets `b` to None.
            w_init: called with the kernel shape (k_h, k_w, nout, nin), returns its initial value.

        Raises:
            ValueError: nin or nout not positive ints; k, strides or dilations not positive; an unknown
                padding name or a negative or malformed padding.
            TypeError: padding of an unsupported type.
        """
        for name, v in (('nin', nin), ('nout', nout)):
            if not _is_int(v) or v <= 0:
                raise ValueError(f'{type(self).__name__}: {name} must be a positive int, got {v!r}')
        super().__init__(nin=nout, nout=nin, k=k, strides=strides, dilations=dilations, padding=padding,
                         use_bias=False, w_init=w_init)
        # The base class bound b (to None) before w: rebinding keeps that place, so vars() lists b first.
        self.b = TrainVar(jn.zeros((nout, 1, 1))) if use_bias else None

    def __call__(self, x: JaxArray) -> JaxArray:
        """Transposed convolution of x (N, nin, H, W) plus the bias: (N, nout, H', W').

        Args:
            x: images of shape (N, nin, H, W).

        Returns:
            The transposed convolution, shape (N, nout, H', W') (H' = H * strides with SAME padding).

        Raises:
            ValueError: x is not 4-dimensional or has not nin channels on axis 1.
        """
        w = self.w.value
        _check_image(x, w.shape[3], type(self).__name__)
        y = lax.conv_transpose(x, w, self.strides, self.padding, rhs_dilation=self.dilations,
                               dimension_numbers=_DIMENSIONS, transpose_kernel=True)
        if self.b is not None:
            y = y + self.b.value
        return y

    def __repr__(self):
        kh, kw, nout, nin = self.w.value.shape
        return layer_repr(self, nin=nin, nout=nout, k=(kh, kw), strides=self.strides, dilations=self.dilations,
                          padding=self.padding, use_bias=self.b is not None, w_init=self.w_init)
