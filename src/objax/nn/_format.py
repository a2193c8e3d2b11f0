"""Text of the reprs of nn layers: the Objax 1.8 function format and the `objax.nn.` class prefix.

The rules are those of the core's shared repr formatter (objax/_core/reprs.py), which this module calls.
"""

from typing import Any, Callable

from objax._core import reprs

__all__ = ['format_function', 'class_path', 'layer_repr']


def format_function(f: Callable) -> str:
    """The Objax 1.8 text of a callable (the core's shared function format, objax._core.reprs.function_repr).

    Args:
        f: any callable.

    Returns:
        For example 'xavier_normal(*, gain=1)', 'relu' or 'GradValues'.
    """
    return reprs.function_repr(f)


def class_path(cls: type) -> str:
    """The public path Objax 1.8 prints for a class (objax._core.reprs.class_path): `objax.nn.Name` for nn layers.

    Args:
        cls: any class.

    Returns:
        The dotted path, e.g. 'objax.nn.Linear'.
    """
    return reprs.class_path(cls)


def layer_repr(layer: Any, **arguments) -> str:
    """`objax.nn.Class(k1=v1, ...)` for a layer and its constructor arguments, in the order given: callables in
    the function format, other values with repr().

    Args:
        layer: the layer whose class names the repr.
        **arguments: the constructor arguments to show, by name.

    Returns:
        The repr text, e.g. 'objax.nn.Linear(nin=2, nout=3, use_bias=True, w_init=xavier_normal(*, gain=1))'.
    """
    text = (f'{k}={format_function(v) if callable(v) else repr(v)}' for k, v in arguments.items())
    return f'{class_path(type(layer))}({", ".join(text)})'
