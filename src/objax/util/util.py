"""Small general helpers: EasyDict, class names, a do-nothing context manager, integer log2.

This is also Objax 1.8's module path `objax.util.util`, which held most of objax.util: those helpers, defined in
the sibling modules, are re-exported here.
"""

import contextlib
import math
import numbers

from objax._core.introspect import find_used_variables
from objax._core.reprs import class_path
from objax.util.conversion import to_interpolate, to_padding, to_tuple
from objax.util.multihost import get_local_devices, map_to_device, multi_host_barrier
from objax.util.renamer import Renamer
from objax.util.signature import (
    args_indexes,
    local_kwargs,
    override_args_kwargs,
    positional_args_names,
    re_sign,
    repr_function,
)

__all__ = ['EasyDict', 'class_name', 'dummy_context_mgr', 'find_used_variables', 'ilog2']
# Objax 1.8's objax.util.util names defined in the sibling modules.
__all__ += ['Renamer', 'args_indexes', 'get_local_devices', 'local_kwargs', 'map_to_device', 'multi_host_barrier',
            'override_args_kwargs', 'positional_args_names', 're_sign', 'repr_function', 'to_interpolate',
            'to_padding', 'to_tuple']


class EasyDict(dict):
    """A dict whose items are also attributes: `d = EasyDict(lr=0.1); d.lr == d['lr']`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f'{type(self).__name__} has no attribute or key {name!r}') from None

    def __setattr__(self, name: str, value):
        self[name] = value

    def __delattr__(self, name: str):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(f'{type(self).__name__} has no attribute or key {name!r}') from None

    def __dir__(self):
        return list(super().__dir__()) + [k for k in self if isinstance(k, str)]

    def copy(self) -> 'EasyDict':
        """A shallow copy that is still an EasyDict."""
        return type(self)(self)

    def __repr__(self):
        return f'{type(self).__name__}({dict.__repr__(self)})'


def class_name(x) -> str:
    """Name of x's class (or of x itself if it is a class), qualified by the shortest module path that exports
    it, e.g. 'objax.nn.Linear'; builtins and classes of __main__ get their bare name.

    Args:
        x: any object or class.

    Returns:
        The qualified class name, a str.
    """
    cls = x if isinstance(x, type) else type(x)
    if cls.__module__ in ('builtins', '__main__'):
        return cls.__qualname__
    return class_path(cls)


@contextlib.contextmanager
def dummy_context_mgr():
    """A context manager that does nothing (yields None), for `with (ctx if cond else dummy_context_mgr()):`."""
    yield None


def ilog2(x: float):
    """Integer log2 rounded up: the smallest int n with 2**n >= x (x > 0), e.g. ilog2(8) == 3, ilog2(9) == 4.

    Args:
        x: a positive finite real number (ints of any size are exact).

    Returns:
        An int, negative for x < 1/2 (e.g. ilog2(0.25) == -2).

    Raises:
        TypeError: x is not a real number (bools are refused).
        ValueError: x is not > 0, or is infinite.
    """
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        raise TypeError(f'ilog2(x): x must be a real number, got {type(x).__name__}')
    if not x > 0:
        raise ValueError(f'ilog2(x): x must be > 0, got {x}')
    if isinstance(x, numbers.Integral):
        return (int(x) - 1).bit_length()  # exact for ints of any size
    if math.isinf(x):
        raise ValueError('ilog2(x): x must be finite, got inf')
    mantissa, exponent = math.frexp(x)  # x = mantissa * 2**exponent, 0.5 <= mantissa < 1
    return exponent - 1 if mantissa == 0.5 else exponent
