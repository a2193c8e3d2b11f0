"""Finding the variables a plain function refers to, through its globals, closure and bound `self`."""

import inspect
import types
from typing import Callable

from objax.module import Module
from objax.varcollection import VarCollection
from objax.variable import BaseVar

__all__ = ['find_used_variables']


def _code_names(code: types.CodeType):
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def find_used_variables(fn: Callable, scope: str = '') -> VarCollection:
    """Variables reachable from the names `fn` uses (globals, closure cells, `self` of a bound method),
    following the functions it calls. Names are the Python names, e.g. `model(Linear).w` or `counter`."""
    vc = VarCollection()
    seen = set()

    def add(name: str, value):
        if isinstance(value, BaseVar):
            if id(value) not in {id(v) for v in vc.values()}:
                vc.update([(name, value)])
        elif isinstance(value, Module):
            if id(value) in seen:
                return
            seen.add(id(value))
            known = {id(v) for v in vc.values()}
            vc.update((k, v) for k, v in value.vars(scope=name).items() if id(v) not in known)
        elif inspect.ismethod(value):
            add(f'{name}.__self__', value.__self__)
            visit(value.__func__, name)
        elif inspect.isfunction(value):
            visit(value, name)

    def visit(f, prefix: str):
        if id(f) in seen:
            return
        seen.add(id(f))
        code = f.__code__
        module = getattr(f, '__module__', None)
        for n in sorted(_code_names(code)):
            if n in f.__globals__:
                value = f.__globals__[n]
                # Only follow functions defined next to `fn`, not library code.
                if inspect.isfunction(value) and value.__module__ != module:
                    continue
                add(scope + n, value)
        for n, cell in zip(code.co_freevars, f.__closure__ or ()):
            try:
                add(scope + n, cell.cell_contents)
            except ValueError:  # empty cell
                pass

    if isinstance(fn, Module):
        add(scope + type(fn).__name__, fn)
    elif inspect.ismethod(fn):
        add(scope + 'self', fn.__self__)
        visit(fn.__func__, '')
    elif inspect.isfunction(fn):
        visit(fn, '')
    elif callable(fn) and hasattr(fn, '__call__') and inspect.ismethod(fn.__call__):
        add(scope + 'self', fn)
    return vc
