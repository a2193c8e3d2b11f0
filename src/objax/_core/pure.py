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

from objax._core.frames import LOCAL, Frame, FrameRef, Loan
from objax._core.refs import REFS, STORAGE_LOCK, Ref, jax_tracing, ref_get, ref_set
from objax._core.variables import BaseVar, storage_groups

__all__ = ['Pure', 'has_tracer', 'storage_of', 'NO_REFS']

_LOCAL = LOCAL
_Loan = Loan
_Ref = Ref
_FrameRef = FrameRef
_Tracer = jax.core.Tracer
_tracing = jax_tracing
NO_REFS = {}
_GET = operator.attrgetter('_value')
_LENDING = STORAGE_LOCK


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
        differentiated: set by the gradient transforms, whose calls get differentiated trainable values.
        open_reads: set by Remat and the control flow: with an `owner`, a read outside vc looks through to the
            enclosing transforms (or the storage) instead of being frozen; a write outside vc still raises.
        warned: ids of the variables already warned about (kept by a compiled transform across rebuilds).
        describe: the `describe` given.
    """
    differentiated = False
    open_reads = False

    def __init__(self, f: Optional[Callable], vc: Iterable[BaseVar], owner: Optional[str] = None,
                 describe: Optional[Callable[[BaseVar], Optional[str]]] = None):
        self.f = f
        self.variables = _made(storage_of(vc))
        self.owner = owner
        self._ids = [id(v) for v in self.variables]
        self.warned = set()  # variables already warned about: once per compiled function and variable
        self.describe = describe
        self._loan = None
        self._no_refs_at = -1  # a value of REFS when no storage of `variables` was a jax.Ref

    def values(self, refs: bool = False) -> list:
        """The current values of `variables` (inside a running transform, the values it gave them; while a JAX
        transformation traces, values read through the variables' array references).

        Args:
            refs: outside any transform, give the jax.Ref of a variable whose storage is one (see objax._core.refs)
                instead of a copy of its value; see `refs_of`.

        Returns:
            One value per variable.
        """
        variables = self.variables
        if _LOCAL.frames or _tracing():
            return [v._read() for v in variables]
        version = REFS[0]
        values = list(map(_GET, variables))
        if _Loan in map(type, values):
            values = [v._stored() for v in variables]
        if self._no_refs_at != version and self._has_refs(values, version):
            del values  # _unref_stored counts the references to each storage
            values = _unref_stored(variables)
            if not refs and _Ref in map(type, values):
                values = [ref_get(x, v._label()) if type(x) is _Ref else x for v, x in zip(variables, values)]
        return values

    def _has_refs(self, values: list, version: int) -> bool:
        """Whether a value is a jax.Ref; remembers when none is, `version` being REFS before the values
        were read (until a storage becomes a reference)."""
        if _Ref in map(type, values):
            return True
        self._no_refs_at = version
        return False

    def refs_of(self, values: list):
        """Separates the jax.Ref storages (from `values(refs=True)` or `lend(refs=True)`) from the values.

        Args:
            values: one value or jax.Ref per variable.

        Returns:
            (values with None in place of each reference, {position: reference}).
        """
        if self._no_refs_at == REFS[0] or _Ref not in map(type, values):
            return values, NO_REFS
        refs = {i: x for i, x in enumerate(values) if type(x) is _Ref}
        return [None if type(x) is _Ref else x for x in values], refs

    def lend(self, refs: bool = False) -> list:
        """Takes the current values out of the variables for a call that donates them (outside any running
        transform only). Until `repay` or `cancel`, other threads that read or write these variables wait.
        A value that anything else still references (user code, another variable, another thread) is replaced
        by a fresh copy in the returned list, so donating the list never invalidates an array someone holds.

        A variable whose storage is a jax.Ref that nothing else references any more (no JAX program holds it)
        gets a plain array again (a copy of the reference's value, stored by `repay`). One that a JAX program
        still holds keeps its reference: the list has the jax.Ref with `refs` (see `refs_of`), else a copy
        of its value, which `repay` writes into the reference.

        Args:
            refs: give the references that stay, instead of copies of their values.

        Returns:
            One value per variable.
        """
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
            held = _held(values)
            if self._no_refs_at != REFS[0] and self._has_refs(values, REFS[0]):  # values: lent
                held = _unref_lent(variables, loan, values, held, refs)
            for i in held:
                if isinstance(values[i], jax.Array) and not isinstance(values[i], _Tracer):
                    values[i] = jn.array(values[i], copy=True)
        except BaseException:
            self.cancel()
            raise
        return values

    def repay(self, values: list) -> None:
        """Ends a loan: stores `values` (one per variable, e.g. the compiled call's new values). Values that
        are tracers (the call was traced by an enclosing jax transformation, so nothing was donated) are not
        stored: the variables get their lent values back. A variable that keeps its jax.Ref gets the reference
        back, with the new value written into it (None: the call wrote the reference itself)."""
        if values and isinstance(values[0], _Tracer):
            return self.cancel()
        loan = self._loan
        error = None
        if loan.refs:
            values, error = _repaid_refs(self.variables, loan, values)
        _set_all(self.variables, values)
        loan.thread = loan.values = None
        loan.lock.release()
        if error is not None:
            raise error

    def cancel(self) -> None:
        """Ends a loan that failed before donating: the variables get the lent values back."""
        loan = self._loan
        if loan.values is not None:
            kept = loan.refs or NO_REFS
            for i, (v, x) in enumerate(zip(self.variables, loan.values)):
                if v._value is loan:
                    v._value = kept.get(i, x)
        loan.thread = loan.values = loan.refs = None
        loan.lock.release()

    def write(self, changes: Dict[int, object]) -> None:
        """Stores `changes` ({position in variables: new value}, as returned by a call). Inside a running
        transform the values go where its function sees them; a compiled transform whose collection lacks one
        of these variables raises objax.VariableOutsideCollectionError (its trace is then abandoned)."""
        variables = self.variables
        if not (_LOCAL.frames or _tracing()):
            with _LENDING:  # no storage becomes a jax.Ref meanwhile (see _OwnValue._as_ref)
                version = REFS[0]
                if self._no_refs_at == version or not self._has_refs(list(map(_GET, variables)), version):
                    if len(changes) == len(variables):
                        _set_all(variables, map(changes.__getitem__, range(len(variables))))
                    else:
                        for i, x in changes.items():
                            variables[i]._value = x
                    return
        for i, x in changes.items():
            variables[i]._write(x)

    def __call__(self, values, *args, **kwargs):
        """Runs f with `variables[i]` holding `values[i]`. Returns `(outputs, changes)`, changes being
        `{i: new value}` for the variables f assigned (a new value object, even if equal)."""
        ids = self._ids
        if len(values) != len(ids):
            raise ValueError(f'{self.owner or "Pure"}: got {len(values)} values for {len(ids)} variables')
        frame = Frame(dict(zip(ids, values)), self.owner, self.warned, self.describe)
        frame.differentiated = self.differentiated
        frame.open_reads = self.open_reads
        frames = _LOCAL.frames
        depth = len(frames)
        frames.append(frame)
        try:
            outputs = self.f(*args, **kwargs)
        finally:
            del frames[depth:]
        new = frame.values
        changes = {i: new[k] for i, (k, x) in enumerate(zip(ids, values)) if new[k] is not x}
        if _FrameRef in map(type, changes.values()):  # used by a JAX transformation nested in f
            changes = {i: x.value() if type(x) is _FrameRef else x for i, x in changes.items()
                       if type(x) is not _FrameRef or x.written or x.old is not values[i]}
        return outputs, changes


def _made(variables: List[BaseVar]) -> List[BaseVar]:
    """`variables`, after making the values of those made on first use (values() and lend() read storages)."""
    for v in variables:
        x = v._value
        if x.__class__ is _Loan and x.make is not None:
            v._stored()
    return variables


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


def _unref_stored(variables: List[BaseVar]) -> list:
    """The storages of `variables`, after storing a plain array again in each variable whose storage is a
    jax.Ref that nothing else references (no JAX program holds it)."""
    with _LENDING:  # no other thread takes or converts a storage meanwhile
        values = list(map(_GET, variables))
        for i, n in enumerate(_refcounts(values)):
            if type(values[i]) is _Ref and n <= _UNSHARED + 1:  # held by the list and the variable only
                values[i] = variables[i]._value = ref_get(values[i], variables[i]._label())
    return values


def _unref_lent(variables: List[BaseVar], loan: Loan, values: list, held: List[int], refs: bool) -> List[int]:
    """Pure.lend's handling of the jax.Ref storages in `values` (changed in place; the references that stay
    go to `loan.refs`); returns the positions of `held` that are still to be copied."""
    kept = loan.refs = {}
    done = set()
    held_set = set(held)
    for i, x in enumerate(values):
        if type(x) is _Ref:
            done.add(i)
            if i in held_set:
                kept[i] = x
                if refs:
                    continue
            values[i] = ref_get(x, variables[i]._label())  # a new array, nobody else has it
    return [i for i in held if i not in done]


def _repaid_refs(variables: List[BaseVar], loan: Loan, values: list) -> tuple:
    """Pure.repay's handling of the references that stay: each gets the new value written into it (None: the
    call wrote the reference itself) and goes back in the list. Returns (values, the ValueError of a value of
    another shape or dtype, which is stored instead and leaves the program holding the reference stale)."""
    values = list(values)
    error = None
    for i, ref in loan.refs.items():
        x, values[i] = values[i], ref
        if x is not None:
            try:
                ref_set(ref, x, variables[i]._label())
            except ValueError as e:
                values[i], error = x, e
    loan.refs = None
    return values, error
