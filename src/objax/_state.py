"""Moving variable values in and out of traced functions (shared by the transforms)."""

from typing import Callable, Iterable, List, Optional

from objax import _trace
from objax.module import Module
from objax.varcollection import VarCollection
from objax.variable import BaseVar

__all__ = []


def storage_of(variables: Iterable[BaseVar]) -> List[BaseVar]:
    """The distinct variables that hold data behind `variables` (a TrainRef resolves to its TrainVar)."""
    out, seen = [], set()
    for v in variables:
        s = v._storage()
        if id(s) not in seen:
            seen.add(id(s))
            out.append(s)
    return out


def allowed_ids(vc: VarCollection) -> set:
    """ids of the variables a traced function may read: those of vc and the TrainVars behind its TrainRefs."""
    ids = set()
    for v in vc.values():
        ids.add(id(v))
        ids.add(id(v._storage()))
    return ids


def read(storage: List[BaseVar], checked: List[BaseVar]) -> list:
    """Current values of `storage`; inside an enclosing trace, reading also checks the enclosing scope."""
    if _trace.SCOPES:
        for v in checked:
            _trace.check(v)
    return [v._value for v in storage]


def write(storage: List[BaseVar], values: Iterable) -> None:
    for v, x in zip(storage, values):
        v._value = x


class Swap:
    """Context: gives `storage` the traced `values`, restoring the original values on exit."""
    __slots__ = ('storage', 'values', 'saved')

    def __init__(self, storage: List[BaseVar], values):
        self.storage, self.values = storage, values

    def __enter__(self):
        self.saved = [v._value for v in self.storage]
        write(self.storage, self.values)

    def __exit__(self, *exc):
        write(self.storage, self.saved)


def namer(f, vc: VarCollection) -> Callable[[BaseVar], Optional[str]]:
    """Best-effort name of a variable used by `f` (for error messages)."""

    def name(var: BaseVar) -> Optional[str]:
        if isinstance(f, Module):
            found = f.vars().names().get(id(var))
            if found:
                return found
            target = getattr(f, '__wrapped__', None)
        else:
            target = f
        if target is not None:
            from objax._introspect import find_used_variables
            found = find_used_variables(target).names().get(id(var))
            if found:
                return found
        return var.__dict__.get('_name')

    return name
