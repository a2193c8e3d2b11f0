"""The pure-function primitive under every transform: a function of variables as a function of their values.

`Pure(f, vc)` is the only code, besides variable.py, that reads or writes the storage of variables. It is
Objax's cut-down version of Flax NNX's split/merge (Equinox's partition/combine) for a flat collection:

    pure = Pure(f, vc)                  # vc: a VarCollection (or any iterable of variables)
    values = pure.values()              # current values of pure.variables, a list
    outputs, changes = pure(values, *args, **kwargs)
    pure.write(changes)                 # what f wrote, stored (or kept in an enclosing transform)

`pure(values, ...)` runs `f(*args, **kwargs)` with `pure.variables[i]` holding `values[i]` (seen by this
thread only) and returns f's outputs and `changes = {i: new value}` for every variable f wrote. It changes
no variable: it can be traced by jax.jit / grad / vmap / shard_map, called from several threads at once, and
an exception inside f leaves everything as it was.
"""

import collections
import itertools
import operator
import sys
import threading
from typing import Callable, Dict, Iterable, List, Optional

import jax
import jax.numpy as jn

from objax._core.frames import LOCAL, Frame, Loan
from objax._core.variables import BaseVar, storage_groups

__all__ = ['Pure', 'has_tracer', 'storage_of']

_LOCAL = LOCAL
_Loan = Loan
_Tracer = jax.core.Tracer
_GET = operator.attrgetter('_value')
_LENDING = threading.Lock()


def storage_of(variables: Iterable[BaseVar]) -> List[BaseVar]:
    """The distinct variables that hold data behind `variables` (a TrainRef resolves to its TrainVar)."""
    return [storage for storage, _ in storage_groups((None, v) for v in variables)]


class Pure:
    """`f`, a function or module using the variables of `vc`, as `(values, *args, **kwargs) -> (outputs,
    changes)`. See the module docstring.

    Args:
        f: what to run (None when only `values` and `write` are used).
        vc: the variables f may use, a VarCollection or any iterable of variables (a TrainRef stands for its
            TrainVar).
        owner: for a compiled transform, its label such as 'Jit(train_op)': while f runs, reading a variable
            outside vc (and outside any enclosing transform up to this one) warns once per variable with
            objax.VariableOutsideCollectionWarning and uses its current value (frozen into the compiled
            program); writing one raises objax.VariableOutsideCollectionError.
        describe: the best-effort name of a variable, for those messages (see
            objax._core.introspect.variable_namer); None: variables are shown by their repr.

    Attributes:
        variables: the distinct variables holding the data of vc, in vc's order; `values`, `changes` and the
            `values` argument of a call are positional over this list.
        warned: ids of the variables already warned about (kept by a compiled transform across rebuilds).
        describe: the `describe` given.
    """

    def __init__(self, f: Optional[Callable], vc: Iterable[BaseVar], owner: Optional[str] = None,
                 describe: Optional[Callable[[BaseVar], Optional[str]]] = None):
        self.f = f
        self.variables = storage_of(vc)
        self.owner = owner
        self._ids = [id(v) for v in self.variables]
        self.warned = set()  # variables already warned about: once per compiled function and variable
        self.describe = describe
        self._loan = None

    def values(self) -> list:
        """The current values of `variables` (inside a running transform, the values it gave them)."""
        if _LOCAL.frames:
            return [v._read() for v in self.variables]
        values = list(map(_GET, self.variables))
        if _Loan in map(type, values):
            return [v._stored() for v in self.variables]
        return values

    def lend(self) -> list:
        """Takes the current values out of the variables for a call that donates them (outside any running
        transform only). Until `repay` or `cancel`, other threads that read or write these variables wait.
        A value that anything else still references (user code, another variable, another thread) is replaced
        by a fresh copy in the returned list, so donating the list never invalidates an array someone holds."""
        loan = self._loan
        if loan is None:
            loan = self._loan = Loan({k: i for i, k in enumerate(self._ids)})
        variables = self.variables
        loan.lock.acquire()
        try:
            while True:
                with _LENDING:  # taking values out is atomic across transforms that share variables
                    values = list(map(_GET, variables))
                    busy = next((x for x in values if type(x) is _Loan), None) if _Loan in map(type, values) else None
                    if busy is None:
                        loan.thread, loan.values = threading.get_ident(), values
                        _set_all(variables, itertools.repeat(loan))
                        break
                if busy.thread == threading.get_ident():
                    raise RuntimeError('objax: a compiled call was started while this thread is lending the same '
                                       'variables to another one')
                with busy.lock:  # another transform has these variables: wait for its new values
                    busy = None
            for i in _held(values):
                if isinstance(values[i], jax.Array) and not isinstance(values[i], _Tracer):
                    values[i] = jn.array(values[i], copy=True)
        except BaseException:
            self.cancel()
            raise
        return values

    def repay(self, values: list) -> None:
        """Ends a loan: stores `values` (one per variable, e.g. the compiled call's new values). Values that
        are tracers (the call was traced by an enclosing jax transformation, so nothing was donated) are not
        stored: the variables get their lent values back."""
        if values and isinstance(values[0], _Tracer):
            return self.cancel()
        loan = self._loan
        _set_all(self.variables, values)
        loan.thread = loan.values = None
        loan.lock.release()

    def cancel(self) -> None:
        """Ends a loan that failed before donating: the variables get the lent values back."""
        loan = self._loan
        if loan.values is not None:
            for v, x in zip(self.variables, loan.values):
                if v._value is loan:
                    v._value = x
        loan.thread = loan.values = None
        loan.lock.release()

    def write(self, changes: Dict[int, object]) -> None:
        """Stores `changes` ({position in variables: new value}, as returned by a call). Inside a running
        transform the values go where its function sees them; a compiled transform whose collection lacks one
        of these variables raises objax.VariableOutsideCollectionError (its trace is then abandoned)."""
        variables = self.variables
        if _LOCAL.frames:
            for i, x in changes.items():
                variables[i]._write(x)
        elif len(changes) == len(variables):
            _set_all(variables, map(changes.__getitem__, range(len(variables))))
        else:
            for i, x in changes.items():
                variables[i]._value = x

    def __call__(self, values, *args, **kwargs):
        """Runs f with `variables[i]` holding `values[i]`. Returns `(outputs, changes)`, changes being
        `{i: new value}` for the variables f assigned (a new value object, even if equal)."""
        ids = self._ids
        if len(values) != len(ids):
            raise ValueError(f'{self.owner or "Pure"}: got {len(values)} values for {len(ids)} variables')
        frame = Frame(dict(zip(ids, values)), self.owner, self.warned, self.describe)
        frames = _LOCAL.frames
        depth = len(frames)
        frames.append(frame)
        try:
            outputs = self.f(*args, **kwargs)
        finally:
            del frames[depth:]
        new = frame.values
        changes = {i: new[k] for i, (k, x) in enumerate(zip(ids, values)) if new[k] is not x}
        return outputs, changes


def has_tracer(tree) -> bool:
    """True when a leaf of `tree` is a jax tracer (the caller runs inside a jax transformation)."""
    return any(isinstance(x, _Tracer) for x in jax.tree.leaves(tree))


def _refcounts(values: list) -> list:
    return list(map(sys.getrefcount, values))


def _set_all(variables: List[BaseVar], values: Iterable) -> None:
    """Stores values[i] in the storage of variables[i] (a loop in C: this runs on every compiled call)."""
    collections.deque(map(setattr, variables, itertools.repeat('_value'), values), maxlen=0)


_UNSHARED = _refcounts([object()])[0]  # count of a value referenced only by the list itself


def _held(values: list) -> List[int]:
    """Positions of the values that something besides the list references."""
    return [i for i, n in enumerate(_refcounts(values)) if n > _UNSHARED]
