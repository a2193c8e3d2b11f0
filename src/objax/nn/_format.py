"""Text of the reprs of nn layers: the Objax 1.8 function format and the `objax.nn.` class prefix.

The rules are the ones of the shared repr formatter of the core (objax/_repr.py); this private copy lets the
layers use them until the two are unified.
"""

import functools
import inspect
from typing import Any, Callable

__all__ = ['format_function', 'class_path', 'layer_repr']


def format_function(f: Callable) -> str:
    """The Objax 1.8 text of a callable: `name`, or `name(*, k1=v1, ...)` when some parameters have defaults.

    A functools.partial shows its underlying function's name with the partial's effective defaults; a callable
    without `__name__` (an object) shows its class name. Default values are rendered with str().

    Args:
        f: any callable.

    Returns:
        For example 'xavier_normal(*, gain=1)', 'relu' or 'GradValues'.
    """
    if isinstance(f, functools.partial):
        name = _function_name(f.func)
    elif hasattr(f, '__name__'):
        name = f.__name__
    else:
        return type(f).__name__
    try:
        parameters = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):  # builtins without an introspectable signature
        return name
    defaults = [f'{p.name}={p.default}' for p in parameters if p.default is not inspect.Parameter.empty]
    return f'{name}(*, {", ".join(defaults)})' if defaults else name


def _function_name(f: Callable) -> str:
    while isinstance(f, functools.partial):
        f = f.func
    return getattr(f, '__name__', type(f).__name__)


def class_path(cls: type) -> str:
    """The public path Objax 1.8 prints for a class: `objax.nn.Name` for nn layers, `module.Name` otherwise.

    Args:
        cls: any class.

    Returns:
        The dotted path, e.g. 'objax.nn.Linear'.
    """
    module = cls.__module__
    if module == 'objax.nn' or module.startswith('objax.nn.'):
        module = 'objax.nn'
    return f'{module}.{cls.__name__}'


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
