"""Module-aware control flow: Scan, ForiLoop, WhileLoop and Cond (jax.lax's, with variables read and written
inside), and the machinery they and objax.nn.Stack share.

A body runs through the transform's Pure with the variables of its collection holding values the loop gives
them. The variables it writes are carried through the loop (part of lax's carry) and stored after it, as Jit
stores what its function wrote; the others are passed as operands of the loop, never closed over as constants
of a compiled program. Which variables a body writes is learnt from its trace: a trace that writes one not yet
carried is abandoned and traced again with it (once: the transform remembers), so a body may be traced twice on
its first call.
"""

from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import jax
import numpy as np

from objax._core.collection import VarCollection
from objax._core.modules import Module
from objax._core.pure import Pure
from objax._core.transform import InPlaceTransform

__all__ = ['Scan', 'ForiLoop', 'WhileLoop', 'Cond', 'Carried', 'Step', 'scan_pure']


class _Uncarried(Exception):
    """A body wrote variables (positions) that the loop does not carry yet: trace again, carrying them."""

    def __init__(self, positions):
        super().__init__(positions)
        self.positions = set(positions)


def _aval(x) -> str:
    """dtype[shape] of an array, e.g. float32[3,4]."""
    return f'{np.dtype(x.dtype).name}[{",".join(map(str, np.shape(x)))}]'


def variable_label(pure: Pure, position: int) -> str:
    """The name of variable `position` of `pure` for messages: `"(Model).w"` when known, else its repr.

    Args:
        pure: the Pure.
        position: the position of the variable in `pure.variables`.

    Returns:
        The label.
    """
    var = pure.variables[position]
    name = None
    if pure.describe is not None:
        try:
            name = pure.describe(var)
        except Exception:  # naming is best effort
            name = None
    return f'"{name}"' if name else var._label()


class Step:
    """One trace of a loop's bodies: runs a function through the Pure with the carried and sliced variables
    holding the loop's values, and notes what it wrote.

    Args:
        carried: the Carried it belongs to.
        values: one value per variable of the Pure (those of carried or sliced positions are replaced).
        positions: the carried positions, sorted.
        sliced: positions whose value is given per step (`svals`) and whose changes are returned per step.
    """

    def __init__(self, carried: 'Carried', values: list, positions: Tuple[int, ...], sliced: Tuple[int, ...]):
        self.carried, self.values, self.positions, self.sliced = carried, values, positions, sliced
        self.written = set()

    def _run(self, cvals: list, svals: Sequence, fn: Callable, args: tuple):
        call = list(self.values)
        for p, x in zip(self.sliced, svals):
            call[p] = x
        for p, x in zip(self.positions, cvals):
            call[p] = x
        outputs, changes = self.carried.pure(call, fn, *args)
        return call, outputs, changes

    def __call__(self, cvals: list, fn: Callable, *args, svals: Sequence = ()):
        """Runs fn(*args) once.

        Args:
            cvals: the values of the carried variables (in `positions` order).
            fn: the function.
            *args: its arguments.
            svals: the values of the sliced variables for this step.

        Returns:
            (fn's outputs, the new carried values, {sliced position: new value} for those fn wrote).

        Raises:
            ValueError: fn changed the shape or dtype of a variable.
        """
        call, outputs, changes = self._run(cvals, svals, fn, args)
        extra = set(changes).difference(self.positions, self.sliced)
        if extra:
            raise _Uncarried(extra)
        pure, owner = self.carried.pure, self.carried.pure.owner
        for p, x in changes.items():
            if np.shape(x) != np.shape(call[p]) or x.dtype != call[p].dtype:
                name = getattr(getattr(fn, '__wrapped__', fn), '__name__', type(fn).__name__)
                raise ValueError(f'{owner}: variable {variable_label(pure, p)} is {_aval(call[p])} before {name} '
                                 f'and {_aval(x)} after it; a variable written inside a loop or a branch keeps '
                                 f'its shape and dtype')
        self.written.update(changes)
        return outputs, [changes.get(p, call[p]) for p in self.positions], \
            {p: changes[p] for p in self.sliced if p in changes}

    def test(self, cvals: list, fn: Callable, *args):
        """Runs a function that must write no variable (a loop's condition) and returns its output.

        Args:
            cvals: the values of the carried variables.
            fn: the function.
            *args: its arguments.

        Returns:
            What fn returns.

        Raises:
            ValueError: fn wrote a variable.
        """
        _, outputs, changes = self._run(cvals, (), fn, args)
        if changes:
            names = ', '.join(variable_label(self.carried.pure, p) for p in sorted(changes))
            raise ValueError(f'{self.carried.pure.owner}: the loop condition writes {names}; a condition may read '
                             f'variables but not write them (JAX evaluates it an unknown number of times)')
        return outputs


class Carried:
    """Which variables of a Pure the bodies of one loop (or the branches of a Cond) write, learnt from their
    traces and carried through the loop.

    Args:
        pure: the Pure the bodies run through (its function is objax._core.transform.call_given).
    """

    def __init__(self, pure: Pure):
        self.pure = pure
        self.positions: Tuple[int, ...] = ()

    def run(self, values: list, loop: Callable, sliced: Sequence[int] = ()):
        """Runs `loop(initial carried values, step)`, which runs a JAX loop whose bodies call `step` (a Step)
        and returns (its result, the final carried values); traced again, carrying more variables, while a
        body writes variables that are not carried.

        Args:
            values: one value per variable of the Pure.
            loop: the function running the JAX loop.
            sliced: positions whose values the loop gives per step (see Step).

        Returns:
            (loop's result, {position: new value} for the carried variables the bodies wrote).
        """
        while True:
            positions = self.positions
            step = Step(self, values, positions, tuple(sliced))
            try:
                result, cvals = loop([values[p] for p in positions], step)
            except _Uncarried as e:
                self.positions = tuple(sorted(e.positions.union(positions)))
                continue
            return result, {p: x for p, x in zip(positions, cvals) if p in step.written}


def scan_pure(carried: Carried, values: list, f: Callable, init, xs, length: Optional[int] = None,
              reverse: bool = False, unroll: Union[int, bool] = 1, sliced: Dict[int, object] = None):
    """jax.lax.scan of `f(carry, x) -> (carry, y)` run through `carried.pure` (Scan's and Stack's loop).

    Args:
        carried: what the body writes, learnt so far.
        values: one value per variable of the Pure.
        f: the body.
        init: the initial carry.
        xs: what is scanned over (a pytree of arrays with a leading axis), or None.
        length: the number of steps (needed when xs is None and nothing is sliced).
        reverse: scan from the end.
        unroll: as lax.scan's.
        sliced: {position: value with a leading axis}: the variable holds one slice per step, and its new
            slices (when the body writes it) are stacked again.

    Returns:
        (final carry, stacked ys, {position: new value} for what the body wrote).
    """
    sliced = sliced or {}
    positions = tuple(sliced)

    def loop(cinit, step):
        def body(state, x):
            carry, cvals = state
            x, svals = x
            (carry, y), cvals, schanges = step(cvals, f, carry, x, svals=svals)
            return (carry, cvals), (y, schanges)

        (carry, cvals), (ys, schanges) = jax.lax.scan(body, (init, cinit), (xs, [sliced[p] for p in positions]),
                                                      length=length, reverse=reverse, unroll=unroll)
        return (carry, ys, schanges), cvals

    (carry, ys, schanges), changes = carried.run(values, loop, positions)
    changes.update(schanges)
    return carry, ys, changes


class _Loop(InPlaceTransform):
    """Base of the control-flow transforms: what their bodies write is learnt per collection."""

    def _renewed(self):
        self._carried = Carried(self._pure)


class Scan(_Loop):
    """Module-aware jax.lax.scan: `Scan(f, vc)(init, xs)` runs `carry, y = f(carry, x)` for each x of xs (slices
    on the leading axis) and returns the final carry and the ys stacked. f may read and write the variables of
    vc: what it writes in one step is what the next step reads, and the last values are stored after the scan,
    as the same Python loop would leave them (random keys advance at each step, so each step draws new numbers).

    Args:
        f: the body, `f(carry, x) -> (carry, y)`; the carry keeps its structure, shapes and dtypes.
        vc: the variables f reads or writes; required when f is a plain function. None: `f.vars()`, following f.

    Raises:
        TypeError: `f` is not callable or `vc` is not a VarCollection.
        ValueError: `f` is a plain function and `vc` is None.
    """

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None):
        super().__init__('Scan', {'f': f}, vc)

    def __call__(self, init, xs=None, length: Optional[int] = None, reverse: bool = False,
                 unroll: Union[int, bool] = 1):
        """Runs the scan and stores what f wrote.

        Args:
            init: the initial carry (a pytree of arrays).
            xs: the pytree of arrays scanned over their leading axis, or None (then `length` is needed).
            length: the number of steps, when xs is None.
            reverse: scan from the last x to the first (ys keep xs's order).
            unroll: how many steps one loop iteration runs (as lax.scan's).

        Returns:
            (final carry, ys): the ys of all steps stacked on a new leading axis.

        Raises:
            objax.VariableOutsideCollectionError: f writes a variable that is not in vc.
            ValueError: f changes the shape or dtype of a variable.
        """
        pure = self._current()
        carry, ys, changes = scan_pure(self._carried, pure.values(), self.__wrapped__, init, xs, length, reverse,
                                       unroll)
        pure.write(changes)
        return carry, ys


class ForiLoop(_Loop):
    """Module-aware jax.lax.fori_loop: `ForiLoop(f, vc)(lower, upper, init)` runs `carry = f(i, carry)` for i
    from lower to upper - 1. f may read and write the variables of vc; what it writes is carried from one
    iteration to the next and stored after the loop. With Python-int bounds the loop can be differentiated.

    Args:
        f: the body, `f(i, carry) -> carry`.
        vc: the variables f reads or writes; required when f is a plain function. None: `f.vars()`, following f.

    Raises:
        TypeError: `f` is not callable or `vc` is not a VarCollection.
        ValueError: `f` is a plain function and `vc` is None.
    """

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None):
        super().__init__('ForiLoop', {'f': f}, vc)

    def __call__(self, lower, upper, init):
        """Runs the loop and stores what f wrote.

        Args:
            lower: the first i (an int or an int scalar array).
            upper: one past the last i.
            init: the initial carry (a pytree of arrays).

        Returns:
            The final carry.

        Raises:
            objax.VariableOutsideCollectionError: f writes a variable that is not in vc.
            ValueError: f changes the shape or dtype of a variable.
        """
        pure, f = self._current(), self.__wrapped__

        def loop(cinit, step):
            def body(i, state):
                carry, cvals = state
                carry, cvals, _ = step(cvals, f, i, carry)
                return carry, cvals

            return jax.lax.fori_loop(lower, upper, body, (init, cinit))

        carry, changes = self._carried.run(pure.values(), loop)
        pure.write(changes)
        return carry


class WhileLoop(_Loop):
    """Module-aware jax.lax.while_loop: `WhileLoop(cond_fn, body_fn, vc)(init)` runs `carry = body_fn(carry)`
    while `cond_fn(carry)` is true. Both may read the variables of vc; body_fn may write them (carried from one
    iteration to the next and stored after the loop), cond_fn may not. Not differentiable in reverse mode (as
    lax.while_loop).

    Args:
        cond_fn: `cond_fn(carry) -> boolean scalar`.
        body_fn: `body_fn(carry) -> carry`.
        vc: the variables they read or write; None: the vars() of both (then both must be Modules).

    Raises:
        TypeError: a function is not callable or `vc` is not a VarCollection.
        ValueError: `vc` is None and a function is not a Module.
    """

    def __init__(self, cond_fn: Union[Module, Callable], body_fn: Union[Module, Callable],
                 vc: Optional[VarCollection] = None):
        super().__init__('WhileLoop', {'cond_fn': cond_fn, 'body_fn': body_fn}, vc)

    def __call__(self, init):
        """Runs the loop and stores what body_fn wrote.

        Args:
            init: the initial carry (a pytree of arrays).

        Returns:
            The final carry.

        Raises:
            objax.VariableOutsideCollectionError: a function writes a variable that is not in vc.
            ValueError: cond_fn writes a variable, or body_fn changes the shape or dtype of one.
        """
        pure, cond_fn, body_fn = self._current(), self.cond_fn, self.body_fn

        def loop(cinit, step):
            def cond(state):
                carry, cvals = state
                return step.test(cvals, cond_fn, carry)

            def body(state):
                carry, cvals = state
                carry, cvals, _ = step(cvals, body_fn, carry)
                return carry, cvals

            return jax.lax.while_loop(cond, body, (init, cinit))

        carry, changes = self._carried.run(pure.values(), loop)
        pure.write(changes)
        return carry


class Cond(_Loop):
    """Module-aware jax.lax.cond: `Cond(true_fn, false_fn, vc)(pred, *operands)` returns
    `true_fn(*operands)` if pred else `false_fn(*operands)`, and keeps the variables that branch wrote. Both
    branches are traced: they must return outputs of the same structure, shapes and dtypes, and leave each
    variable of vc with the same shape and dtype (a variable one branch does not write keeps its value there).

    Args:
        true_fn: the branch taken when pred is true.
        false_fn: the branch taken when pred is false.
        vc: the variables the branches read or write; None: the vars() of both (then both must be Modules).

    Raises:
        TypeError: a function is not callable or `vc` is not a VarCollection.
        ValueError: `vc` is None and a function is not a Module.
    """

    def __init__(self, true_fn: Union[Module, Callable], false_fn: Union[Module, Callable],
                 vc: Optional[VarCollection] = None):
        super().__init__('Cond', {'true_fn': true_fn, 'false_fn': false_fn}, vc)

    def __call__(self, pred, *operands):
        """Runs the branch pred selects and stores what it wrote.

        Args:
            pred: a boolean scalar (an array or a Python bool).
            *operands: the branches' arguments (pytrees of arrays).

        Returns:
            What the selected branch returns.

        Raises:
            objax.VariableOutsideCollectionError: a branch writes a variable that is not in vc.
            ValueError: the branches disagree on the structure, shapes or dtypes of their outputs or of the
                variables they leave.
        """
        pure = self._current()
        branches = [('true_fn', self.true_fn), ('false_fn', self.false_fn)]

        def loop(cinit, step):
            seen = {}

            def branch(name, fn):
                def run(cvals, ops):
                    outputs, cvals, _ = step(cvals, fn, *ops)
                    seen[name] = outputs
                    if len(seen) == len(branches):
                        _check_branches(pure, seen)
                    return outputs, cvals

                return run

            return jax.lax.cond(pred, *[branch(name, fn) for name, fn in branches], cinit, operands)

        outputs, changes = self._carried.run(pure.values(), loop)
        pure.write(changes)
        return outputs


def _check_branches(pure: Pure, seen: Dict[str, object]) -> None:
    """Raises a ValueError naming the outputs on which the branches of a Cond disagree (each branch leaves the
    variables as it found them in shape and dtype: Step checks that)."""
    (name_a, out_a), (name_b, out_b) = seen.items()
    problems: List[str] = []
    leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(out_a)
    leaves_b, tree_b = jax.tree_util.tree_flatten_with_path(out_b)
    if tree_a != tree_b:
        problems.append(f'the outputs differ in structure: {name_a} returns {tree_a}, {name_b} returns {tree_b}')
    else:
        for (path, a), (_, b) in zip(leaves_a, leaves_b):
            if np.shape(a) != np.shape(b) or jax.numpy.result_type(a) != jax.numpy.result_type(b):
                problems.append(f'output{jax.tree_util.keystr(path)} is {_aval(jax.numpy.asarray(a))} in {name_a} '
                                f'and {_aval(jax.numpy.asarray(b))} in {name_b}')
    if problems:
        raise ValueError(f'{pure.owner}: the branches disagree: ' + '; '.join(problems))
