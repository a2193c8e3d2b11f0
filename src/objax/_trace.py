"""Bookkeeping shared by the compiled transforms (Jit, Parallel) while they trace a function.

While a transform traces, only the variables of its collection may be read: any other variable would be
baked into the compiled program as a constant and silently stop changing. The transforms push the ids of
their variables here; `BaseVar.value` consults the innermost entry and raises when a foreign variable is read.
"""

from typing import Callable, List, Optional, Set

__all__ = ['VariableOutsideCollectionError']


class VariableOutsideCollectionError(ValueError):
    """A compiled transform's function read a variable that is not in the collection it was given."""


class _Scope:
    __slots__ = ('allowed', 'owner', 'describe')

    def __init__(self, allowed: Set[int], owner: str, describe: Optional[Callable[[object], str]]):
        self.allowed = allowed
        self.owner = owner
        self.describe = describe


# Stack of active tracing scopes; empty outside of any compiled trace (the common, fast case).
SCOPES: List[_Scope] = []


def push(allowed: Set[int], owner: str, describe: Optional[Callable[[object], str]] = None) -> None:
    SCOPES.append(_Scope(allowed, owner, describe))


def pop() -> None:
    SCOPES.pop()


def allow(var) -> None:
    """Variables created while tracing belong to the trace (they did not exist before the call)."""
    if SCOPES:
        SCOPES[-1].allowed.add(id(var))


def check(var) -> None:
    scope = SCOPES[-1]
    if id(var) in scope.allowed:
        return
    name = None
    if scope.describe is not None:
        try:
            name = scope.describe(var)
        except Exception:  # naming is best effort, the error below is what matters
            name = None
    label = f'"{name}" ({var!r})' if name else repr(var)
    raise VariableOutsideCollectionError(
        f'{scope.owner} read variable {label}, which is not in the VarCollection it was given. '
        f'Its value would be frozen into the compiled function. Add it to the collection passed to '
        f'{scope.owner.split("(")[0]} (for example `vc = model.vars() + other.vars()`).')
