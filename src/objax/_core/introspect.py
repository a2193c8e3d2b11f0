"""Finding the variables a plain function refers to, through its globals, closure and bound `self`."""

import dis
import inspect
import types
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

from objax._core.collection import VarCollection
from objax._core.modules import Module
from objax._core.variables import BaseVar, name_of

__all__ = ['find_used_variables', 'variable_namer']

_ROOTS = ('LOAD_GLOBAL', 'LOAD_NAME', 'LOAD_DEREF', 'LOAD_CLASSDEREF')
_ATTRIBUTES = ('LOAD_ATTR', 'LOAD_METHOD')
_MISSING = object()


def _chains(code: types.CodeType, self_name: str = '') -> Iterator[Tuple[str, ...]]:
    """The name chains `a.b.c` that `code` (and the lambdas/functions nested in it) reads, in order of first
    use, as tuples ('a', 'b', 'c'). A chain starts at a global or closure name (or at `self_name`, a bound
    method's first parameter) and goes on through attribute reads."""
    chain = None
    for ins in dis.get_instructions(code):
        if ins.opname in _ATTRIBUTES and chain is not None:
            chain.append(ins.argval)
            continue
        if chain is not None:
            yield tuple(chain)
            chain = None
        if ins.opname in _ROOTS or (self_name and ins.opname == 'LOAD_FAST' and ins.argval == self_name):
            chain = [ins.argval]
        elif ins.opname == 'LOAD_CONST' and isinstance(ins.argval, types.CodeType):  # a nested lambda/function
            yield from _chains(ins.argval)
    if chain is not None:
        yield tuple(chain)


def _getattr(value: Any, name: str) -> Any:
    try:
        return getattr(value, name)
    except Exception:  # a property that fails, a lazy attribute...: not a path to a variable
        return _MISSING


def find_used_variables(fn: Callable, scope: str = '') -> VarCollection:
    """Variables that `fn` reaches by name, named after the Python expression that reaches them.

    A module reached by name `n` (a global, a closure cell, also inside lambdas nested in fn) contributes
    `n.vars(scope=n + '.')`, e.g. `m.(Sequential)[0](Conv2D).w`; a variable reached by name `v` is named `v`;
    an attribute chain `a.b` of other objects is named by its text (`a.b` for a variable, prefix `a.b.` for a
    module). Functions that fn calls and that are defined in the same Python module are followed. A bound
    method reaches its object by its first parameter's name (usually `self`); a Module gives its own vars().

    Args:
        fn: a function, bound method, Module or callable object.
        scope: a prefix for every name.

    Returns:
        A VarCollection with each variable once, under the first name found.
    """
    vc = VarCollection()
    seen_modules, seen_functions = set(), set()

    def add(name: str, value: Any) -> None:
        if isinstance(value, BaseVar):
            if id(value) not in {id(v) for v in vc.values()} and name not in vc:
                vc[name] = value
        elif isinstance(value, Module) and id(value) not in seen_modules:
            seen_modules.add(id(value))
            known = {id(v) for v in vc.values()}
            vc.update((k, v) for k, v in value.vars(scope=name + '.').items() if id(v) not in known and k not in vc)

    def resolve(chain: Tuple[str, ...], value: Any, f: types.FunctionType) -> None:
        for depth in range(len(chain)):
            if depth:
                value = _getattr(value, chain[depth])
                if value is _MISSING:
                    return
            if isinstance(value, (BaseVar, Module)):
                add(scope + '.'.join(chain[:depth + 1]), value)
                return
            if inspect.isfunction(value):
                # Only follow functions defined next to `f`, not library code.
                if depth == 0 and value.__module__ == f.__module__:
                    visit(value)
                return

    def visit(f: types.FunctionType, bound: Any = _MISSING) -> None:
        if id(f) in seen_functions:
            return
        seen_functions.add(id(f))
        code = f.__code__
        cells: Dict[str, Any] = {}
        for n, cell in zip(code.co_freevars, f.__closure__ or ()):
            try:
                cells[n] = cell.cell_contents
            except ValueError:  # empty cell
                pass
        self_name = code.co_varnames[0] if bound is not _MISSING and code.co_argcount else ''
        for chain in _chains(code, self_name):
            root = chain[0]
            if root == self_name:
                value = bound
            elif root in cells:
                value = cells[root]
            else:
                value = f.__globals__.get(root, _MISSING)
            if value is not _MISSING:
                resolve(chain, value, f)

    if isinstance(fn, Module):
        vc.update(fn.vars(scope))
    elif inspect.ismethod(fn) and inspect.isfunction(fn.__func__):
        visit(fn.__func__, fn.__self__)
    elif inspect.isfunction(fn):
        visit(fn)
    elif inspect.isfunction(getattr(type(fn), '__call__', None)):  # a callable object
        visit(type(fn).__call__, fn)
    return vc


def variable_namer(f: Callable, vc: VarCollection) -> Callable[[BaseVar], Optional[str]]:
    """The best-effort name of a variable used by `f` (for the messages of a compiled transform).

    Args:
        f: the function or module the transform runs.
        vc: the collection it was given.

    Returns:
        A function of a variable giving its first name in `vc`, else in f's vars() (a Module), else among the
        variables f reaches by name, else the last name vars() gave it (None if it never had one).
    """

    def name(var: BaseVar) -> Optional[str]:
        found = vc.names().get(id(var))
        if found:
            return found
        if isinstance(f, Module):
            found = f.vars().names().get(id(var))
            if found:
                return found
            target = getattr(f, '__wrapped__', None)
        else:
            target = f
        if target is not None:
            found = find_used_variables(target).names().get(id(var))
            if found:
                return found
        return name_of(var)

    return name
