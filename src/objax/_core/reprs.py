"""Objax 1.8 style reprs: `<public module path>.<ClassName>(<constructor arguments>)` and a function format.

Shared by the core classes (variables, Module, ModuleList, Function, ForceArgs and the transforms); any other
class may use `class_path` and `function_repr` to format its own repr (objax.util.class_name and
objax.util.repr_function are these two).
"""

import functools
import inspect
import re
import sys
from typing import Any, Callable

__all__ = ['array_repr', 'class_path', 'function_repr']


def class_path(obj: Any) -> str:
    """`<module path>.<ClassName>` of obj's class (or of obj if it is a class), e.g. 'objax.nn.Linear'.

    A class is shown under the shortest public prefix of its module path that exports it (`objax.TrainVar`,
    `objax.nn.Linear`, `objax.optimizer.Adam`); private modules (a part starting with `_`) are skipped, so a
    class of objax._core shows the public path Objax 1.8 printed. A class that no such prefix exports is looked
    up in the other public modules of its package already imported whose `__all__` lists it
    (`objax.vectorize.ArgumentCountError`), and else shown under the module that defines it.

    Args:
        obj: an object, or a class.

    Returns:
        The dotted path, a str.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    module, qualname = cls.__module__, cls.__qualname__
    parts = module.split('.')
    prefixes = ['.'.join(parts[:n]) for n in range(1, len(parts) + 1)]
    candidates = [m for m in prefixes if not _private(m)]
    if len(candidates) < len(prefixes) and not _private(parts[0]):
        top = qualname.split('.')[0]
        loaded = [m for m, mod in list(sys.modules.items()) if m.startswith(parts[0] + '.') and not _private(m)
                  and top in getattr(mod, '__all__', ())]
        candidates += sorted(set(loaded) - set(candidates), key=lambda m: (m.count('.'), m))
    for path in candidates:
        found = sys.modules.get(path)
        for attr in qualname.split('.'):
            found = getattr(found, attr, None)
        if found is cls:
            return f'{path}.{qualname}'
    return f'{module}.{qualname}'


def _private(module: str) -> bool:
    return any(part.startswith('_') for part in module.split('.'))


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


def array_repr(x: Any) -> str:
    """JAX's repr of an array with every run of blank lines collapsed (`\\n\\n` -> `\\n`)."""
    return re.sub('\n+', '\n', repr(x))
