"""Objax 1.8 style reprs: `<public module path>.<ClassName>(<constructor arguments>)` and a function format.

Shared by the core classes (variables, Module, ModuleList, Function, ForceArgs and the transforms); any other
class may use `class_path`, `function_repr` and `module_or_function_repr` to format its own repr.
"""

import functools
import inspect
import re
import sys
from typing import Any, Callable

__all__ = []


def class_path(obj: Any) -> str:
    """`<module path>.<ClassName>` of obj's class (or of obj if it is a class).

    An objax class is shown under the shortest objax module path that exports it (`objax.TrainVar`,
    `objax.nn.Linear`, `objax.optimizer.Adam`); any other class under the module that defines it.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    module, qualname = cls.__module__, cls.__qualname__
    parts = module.split('.')
    if parts[0] == 'objax':
        for n in range(1, len(parts)):
            found = sys.modules.get('.'.join(parts[:n]))
            for attr in qualname.split('.'):
                found = getattr(found, attr, None)
            if found is cls:
                return f'{".".join(parts[:n])}.{qualname}'
    return f'{module}.{qualname}'


def function_repr(f: Callable) -> str:
    """A callable as Objax 1.8 shows it: `name`, or `name(*, k1=v1, ...)` when some parameters have defaults.

    A functools.partial shows its function's name with the partial's effective defaults; a callable object
    without `__name__` shows its class name. Default values are rendered with `str()`.
    """
    target = f
    while isinstance(target, functools.partial):
        target = target.func
    name = getattr(target, '__name__', None)
    if not isinstance(name, str):
        return type(f).__name__
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):
        params = ()
    defaults = ', '.join(f'{p.name}={p.default}' for p in params if p.default is not inspect.Parameter.empty)
    return f'{name}(*, {defaults})' if defaults else name


def module_or_function_repr(f: Any) -> str:
    """The repr of a Module, the function format of anything else (as the transforms show their `f`)."""
    from objax.module import Module
    return repr(f) if isinstance(f, Module) else function_repr(f)


def array_repr(x: Any) -> str:
    """JAX's repr of an array with every run of blank lines collapsed (`\\n\\n` -> `\\n`)."""
    return re.sub('\n+', '\n', repr(x))


def call_repr(obj: Any, *args: str, **kwargs: Any) -> str:
    """`<class path>(arg, ..., k=repr(v), ...)`: positional parts as given, keyword values through repr()."""
    parts = list(args) + [f'{k}={v!r}' for k, v in kwargs.items()]
    return f'{class_path(obj)}({", ".join(parts)})'
