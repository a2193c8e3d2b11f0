"""Lending: the values of variables taken out for a compiled call that donates their buffers (Jit, Parallel).

A donating call hands the buffers of the variables' values to its program, which writes the new values into them
and deletes the old arrays. `Lending` keeps the variables consistent around such a call:

    lending = Lending(pure.variables)
    call = one_step(lending, program, failed)
    outputs = call(args, kwargs)     # the common case, in one step
    if outputs is NOT_LENT:          # anything else (nothing was changed):
        values = lending.lend()      # a Loan stands in each variable; some values are copies
        new = program(values, ...)   # donates `values`
        lending.repay(new)           # each variable gets its new value, the Loan ends
        # or lending.cancel(): the call failed before donating, the variables get their values back

Taking the values out is exclusive: while a Loan stands in a variable, another call that needs it (from any
thread, through any Lending) waits until it is repaid, as do other threads that read or write the variable. So
the calls of a transform whose variables are lent this way run one at a time without a lock of their own.

Deleting a donated array deletes every other jax.Array on the same buffer too. So `lend` gives the call a copy
of a value (the array itself stays valid) when something else may use it:
- its Python array is referenced by anything but the variable (user code, another variable, another thread):
  seen from its reference count, on every call;
- it is *exposed* (read eagerly through `.value` outside any transform, or assigned by user code, since a
  compiled call stored it; see objax._core.variables) and another live jax.Array uses its buffer (an alias made
  by jax.device_put to the same device, `addressable_data`...): seen by comparing buffer addresses with those of
  `jax.live_arrays()`, only on a call after some value was exposed.
Values that only compiled calls have handled (a training loop's state) are donated as they are: a training step
holds one copy of the state.

This file, pure.py and variables.py are the only code that reads or writes the storage of variables.
"""

import functools
from sys import getrefcount
from threading import get_ident
from typing import Any, Callable, List, Optional, Tuple

import jax
import jax.numpy as jn

from objax._core.aliases import shared_buffers
from objax._core.frames import Loan, wait_while
from objax._core.refs import REFS, STORAGE_LOCK, Ref, Tracer, ref_get, ref_set
from objax._core.variables import EXPOSED, BaseVar

__all__ = ['Lending', 'RefWatch', 'NO_REFS', 'NOT_LENT', 'UNSHARED', 'one_step', 'refcounts']


def refcounts(values: list) -> list:
    """The reference count of each value (see UNSHARED)."""
    return list(map(getrefcount, values))


UNSHARED = refcounts([object()])[0]  # count of a value referenced only by the list itself


def _counts_in_loop(values: list) -> list:
    """The reference count of each value, seen from a loop over the list (see _ALONE_IN_LOOP)."""
    counts = []
    for x in values:
        counts.append(getrefcount(x))
    return counts


_ALONE_IN_LOOP = _counts_in_loop([object()])[0]  # the same, seen by `for x in values: getrefcount(x)`
class _Holder:
    __slots__ = ('_value',)


def _count_in_claim() -> int:
    """The reference count of a value that only its variable held, seen where one_step's call checks it."""
    holder = _Holder()
    holder._value = object()
    values = []
    for v in [holder]:
        x = v._value
        v._value = None
        values.append(x)
        return getrefcount(x)


_ALONE_IN_CLAIM = _count_in_claim()
NO_REFS = {}  # no JAX array reference (an empty {position: reference}; never changed)
NOT_LENT = object()  # what one_step's call returns when it did not run the program


class RefWatch:
    """Base of the classes that read the storages of a list of variables (Pure, Lending): whether one holds a
    jax.Ref, remembered while none does (until REFS changes: a storage became a reference)."""
    _no_refs_at = -1  # a value of REFS when no storage of the variables was a jax.Ref

    def _has_refs(self, values: list, version: int) -> bool:
        """Whether a value is a jax.Ref; remembers when none is, `version` being REFS before the values
        were read."""
        if Ref in map(type, values):
            return True
        self._no_refs_at = version
        return False


class Lending(RefWatch):
    """Lends the values of `variables` to donating calls, one call at a time. See the module docstring.

    Args:
        variables: distinct variables holding data (e.g. a Pure's), in the order of the value lists.

    Attributes:
        refs: after `lend(refs=True)`, the JAX array references that stay the storage of their variables
            ({position: reference}; empty when none), in place of which the lent list holds None.
    """

    def __init__(self, variables: List[BaseVar]):
        self.variables = variables
        self._loan = Loan({id(v): i for i, v in enumerate(variables)})
        self.refs = NO_REFS
        self._checked_at = -1  # a value of EXPOSED when no value of `variables` was exposed
        self._exposed: Optional[Tuple[List[int], int]] = None  # (positions exposed, EXPOSED) seen by this loan

    def lend(self, refs: bool = False) -> list:
        """Takes the current values out of the variables for a call that donates them (outside any running
        transform only). Until `repay` or `cancel`, other threads that read or write
        these variables wait. A value that something else may use (see the module docstring) is replaced by a
        fresh copy in the returned list, so donating the list never invalidates an array someone holds.

        A variable whose storage is a jax.Ref that nothing else references any more (no JAX program holds it)
        gets a plain array again (a copy of the reference's value, stored by `repay`). One that a JAX program
        still holds keeps its reference: with `refs`, the list has None there and the reference is in
        `self.refs`; without, the list has a copy of its value, which `repay` writes into the reference.

        Args:
            refs: give the references that stay in `self.refs` instead of copies of their values.

        Returns:
            One value per variable.
        """
        loan = self._loan
        variables = self.variables
        try:
            values = []
            STORAGE_LOCK.acquire()  # taking values out is atomic across transforms that share variables
            try:
                for v in variables:
                    x = v._value
                    if x.__class__ is Loan:  # another call has them: put back those taken
                        for w, y in zip(variables, values):
                            w._value = y
                        if values:
                            loan.thread = loan.values = None
                        values = None
                        break
                    if not values:  # no variable holds this loan, so no other call: it is this thread's now
                        loan.values, loan.thread = values, get_ident()  # (what cancel puts back)
                    v._value = loan
                    values.append(x)
            finally:
                STORAGE_LOCK.release()
            x = None  # the loop's reference to a value would count as another holder
            if values is None:
                values = _take_when_free(self.variables, loan)
            for x in values:
                if getrefcount(x) > _ALONE_IN_LOOP:  # referenced elsewhere
                    break
            else:
                if EXPOSED[0] == self._checked_at and self._no_refs_at == REFS[0]:
                    return values  # nothing exposed, no reference: every value is the call's to donate
            x = None
            return self._with_copies(values, refs)
        except BaseException:
            self.cancel()
            raise

    def _with_copies(self, values: list, refs: bool) -> list:
        """lend's `values`, a copy in place of each that something else may use; the jax.Ref storages handled."""
        copied = _held(values)
        if EXPOSED[0] != self._checked_at:
            copied = self._add_aliased(values, copied)
        if self._no_refs_at != REFS[0] and self._has_refs(values, REFS[0]):
            self.refs = {}
            copied = _unref(self.variables, values, copied, refs, self.refs)
        for i in copied:
            if isinstance(values[i], jax.Array) and not isinstance(values[i], Tracer):
                values[i] = jn.array(values[i], copy=True)
        return values

    def _add_aliased(self, values: list, copied: List[int]) -> List[int]:
        """`copied` and the positions of the exposed values whose buffer another jax.Array uses (repay clears
        the marks seen here)."""
        exposed = EXPOSED[0]  # read before the marks: a mark made after the read changes it
        found = [i for i, v in enumerate(self.variables) if v._exposed]
        self._exposed = found, exposed
        if not found:
            return copied
        skip = set(copied)
        return copied + shared_buffers(values, [i for i in found if i not in skip])

    def repay(self, values: list) -> None:
        """Ends a loan: stores `values` (one per variable, e.g. the compiled call's new values). A variable that
        keeps its jax.Ref gets the reference back, with the new value written into it (None: the call wrote the
        reference itself).

        Raises:
            ValueError: a value for a kept reference has another shape or dtype (it is stored instead, and the
                JAX program holding the reference reads a stale value).
        """
        variables = self.variables
        error = None
        if self.refs:
            values, error = self._repaid_refs(values)
        if self._exposed is not None:  # the new values are the program's: none is exposed
            found, self._checked_at = self._exposed
            for i in found:
                variables[i]._exposed = False
            self._exposed = None
        loan = self._loan
        loan.thread = loan.values = None  # first: once a value is stored, another call may take this loan
        for v, x in zip(variables, values):
            v._value = x
        if error is not None:
            raise error

    def _repaid_refs(self, values: list) -> tuple:
        """repay's handling of the references that stay: each gets the new value written into it (None: the
        call wrote the reference itself) and goes back in the list. Returns (values, the ValueError of a value
        of another shape or dtype, which is stored instead and leaves the program holding the reference
        stale)."""
        values = list(values)
        error = None
        for i, ref in self.refs.items():
            x, values[i] = values[i], ref
            if x is not None:
                try:
                    ref_set(ref, x, self.variables[i]._label())
                except ValueError as e:
                    values[i], error = x, e
        self.refs = NO_REFS
        return values, error

    def cancel(self) -> None:
        """Ends a loan that failed before donating: the variables get the lent values back."""
        loan = self._loan
        if loan.thread != get_ident():  # no loan of this thread (another call may hold this one: left alone)
            return
        values, refs = loan.values, self.refs
        self.refs = NO_REFS
        self._exposed = None  # the values stay exposed: checked again next call
        loan.thread = loan.values = None  # first: once a value is back, another call may take this loan
        for i, (v, x) in enumerate(zip(self.variables, values)):
            if v._value is loan:
                v._value = refs.get(i, x)


def one_step(lending: Lending, program: Callable, failed: Callable) -> Callable[[tuple, dict], Any]:
    """A function `call(args, kwargs)` that lends, calls `program` and repays in one step, for the common case
    only: no other call has the values, each is held by its variable alone, none was exposed since the last
    check, none is a jax.Ref.

    Everything the step needs is bound once here, so a call costs little more than the program's own dispatch.

    Args:
        lending: the variables' Lending.
        program: `program(values, *args, **kwargs)` -> (outputs, one new value per variable); it donates the values.
        failed: `failed(lent values, error)` gives the exception to raise when the program raised `error` (None:
            `error` itself); the variables get their values back first.

    Returns:
        `call(args, kwargs)`: the program's outputs, or NOT_LENT (nothing was changed) in any other case (use
        lend and repay).
    """
    variables = tuple(lending.variables)
    loan = lending._loan
    take, give = STORAGE_LOCK.acquire, STORAGE_LOCK.release

    def call(args: tuple, kwargs: dict) -> Any:
        values = []
        held = False
        take()
        try:
            for v in variables:
                x = v._value
                if x.__class__ is Loan:  # another call has them
                    for w, y in zip(variables, values):
                        w._value = y
                    return NOT_LENT
                v._value = loan
                values.append(x)
                if getrefcount(x) > _ALONE_IN_CLAIM:  # referenced elsewhere
                    held = True
            loan.values = values
            loan.thread = get_ident()
        finally:
            give()
        x = None  # the loop's reference to the last value would count as another holder
        if held or EXPOSED[0] != lending._checked_at or lending._no_refs_at != REFS[0]:
            lending.cancel()
            return NOT_LENT
        try:
            outputs, new = program(values, *args, **kwargs) if kwargs else program(values, *args)
        except BaseException as e:
            lending.cancel()
            error = failed(values, e)
            if error is None:
                raise
            raise error from e
        loan.thread = loan.values = None  # first: once a value is stored, another call may take this loan
        for v, x in zip(variables, new):
            v._value = x
        return outputs

    return call


def _take_when_free(variables: List[BaseVar], loan: Loan) -> list:
    """The stored values of `variables`, once no other call has them; `loan` stands in each variable from now
    on."""
    while True:
        with STORAGE_LOCK:
            values = [v._value for v in variables]
            busy = next((x for x in values if type(x) is Loan), None)
            if busy is None:
                loan.thread, loan.values = get_ident(), values
                for v in variables:
                    v._value = loan
                return values
        if busy.thread == get_ident():
            raise RuntimeError('objax: a compiled call was started while this thread is lending the same '
                               'variables to another one')
        wait_while(functools.partial(_holds, variables, busy))  # another call has them: wait for its new values
        busy = None


def _holds(variables: List[BaseVar], loan: Loan) -> bool:
    """Whether `loan` stands in one of `variables`."""
    return any(v._value is loan for v in variables)


def _unref(variables: List[BaseVar], values: list, held: List[int], refs: bool, kept: dict) -> List[int]:
    """lend's handling of the jax.Ref storages in `values` (changed in place; the references that stay go to
    `kept`, {position: reference}). Returns the positions of `held` that are still to be copied."""
    done = set()
    held_set = set(held)
    for i, x in enumerate(values):
        if type(x) is Ref:
            done.add(i)
            if i in held_set:
                kept[i] = x
                if refs:
                    values[i] = None
                    continue
            values[i] = ref_get(x, variables[i]._label())  # a new array, nobody else has it
    return [i for i in held if i not in done]


def _held(values: list) -> List[int]:
    """Positions of the values that something besides the list references."""
    return [i for i, n in enumerate(refcounts(values)) if n > UNSHARED]
