"""Vectorize: runs a module or function on every example of a batch (jax.vmap) with shared variables."""

import inspect
import numbers
from typing import Callable, Optional, Tuple, Union

import jax
import numpy as np

from objax._core import reprs, structure
from objax._core.collection import VarCollection
from objax._core.modules import ForceArgs, Module, module_or_function_repr
from objax._core.pure import Pure
from objax._core.transform import module_and_vars
from objax._core.variables import RandomState

__all__ = ['Vectorize', 'ArgumentCountError']


class ArgumentCountError(ValueError, AssertionError):
    """Vectorize got (or its function declares) a number of positional arguments that `batch_axis` does not
    describe. Catchable as ValueError and, as in Objax 1.8, as AssertionError."""


class Vectorize(Module):
    """`Vectorize(f, vc, batch_axis)(*args)` maps f over axis `batch_axis[i]` of argument i (None: not
    batched). Variables are shared; each RandomState gives every example its own key; variables that f
    changes are merged back with their `reduce` (mean by default).

    Args:
        f: the module or function to run on one example.
        vc: the variables f reads or writes; required when f is a plain function. None: `f.vars()`, following f.
        batch_axis: one entry per positional argument of f: the axis holding the batch, or None for an argument
            that every example shares. At least one entry must be an int.

    Raises:
        TypeError: `f` is not callable, `vc` is not a VarCollection, or `batch_axis` is not a tuple of ints/None.
        ValueError: `f` is a plain function and `vc` is None, or every entry of `batch_axis` is None.
        ArgumentCountError: f declares more positional parameters than `batch_axis` has entries.
    """

    def __init__(self, f: Union[Module, Callable], vc: Optional[VarCollection] = None,
                 batch_axis: Tuple[Optional[int], ...] = (0,)):
        follows_module = vc is None
        f, vc = module_and_vars('Vectorize', f, vc)
        batch_axis = _checked_batch_axis(batch_axis)
        _check_declared_arity(f, batch_axis)
        self.__wrapped__ = f
        self.vc = vc
        self.batch_axis = batch_axis
        self._follows_module = follows_module
        self._use(vc)

    def _use(self, vc: VarCollection):
        self.vc = vc
        self._pure = Pure(self.__wrapped__, vc)
        self._random = [i for i, v in enumerate(self._pure.variables) if isinstance(v, RandomState)]
        self._generation = structure.GENERATION

    def __call__(self, *args):
        """Runs f on every example of the batch and merges the variables it changed.

        Args:
            *args: f's positional arguments (arrays or pytrees of arrays), batched as `batch_axis` says; all
                batched arguments have the same batch size n.

        Returns:
            f's outputs, each stacked on a new leading axis: shape (n, *output_shape).

        Raises:
            ArgumentCountError: the number of arguments differs from the number of `batch_axis` entries.
            ValueError: a batched argument lacks its batch axis, the batch sizes disagree, or the batch is empty.
        """
        n = _batch_size(args, self.batch_axis)  # validates the arguments before any variable changes
        if self._follows_module and self._generation != structure.GENERATION:
            self._use(self.__wrapped__.vars())
        pure, random = self._pure, self._random
        values = pure.values()
        keys = [pure.variables[i].split(n) for i in random]  # one key per example; the states advance

        def one_example(shared, example_keys, *example_args):
            call_values = list(shared)
            for i, key in zip(random, example_keys):
                call_values[i] = key
            return pure(call_values, *example_args)

        outputs, changes = jax.vmap(one_example, in_axes=(None, 0) + self.batch_axis)(values, keys, *args)
        for i, x in changes.items():
            pure.variables[i].reduce(x)
        return outputs

    # No vars() of its own (as in Objax 1.8): Module.vars names the variables `(Vectorize)` + the wrapped module's.

    def __repr__(self):
        return (f'{reprs.class_path(self)}(f={module_or_function_repr(self.__wrapped__)}, '
                f'batch_axis={self.batch_axis})')


_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _checked_batch_axis(batch_axis) -> Tuple[Optional[int], ...]:
    """batch_axis as a tuple of ints or None, batching at least one argument."""
    try:
        batch_axis = tuple(batch_axis)
    except TypeError:
        raise TypeError(f'Vectorize(batch_axis=...): expected a tuple with one int (or None) per positional '
                        f'argument, got {batch_axis!r}') from None
    bad = [a for a in batch_axis if a is not None and (isinstance(a, bool) or not isinstance(a, numbers.Integral))]
    if bad:
        raise TypeError(f'Vectorize(batch_axis={batch_axis}): entries must be ints or None, got {bad[0]!r}')
    if all(a is None for a in batch_axis):
        raise ValueError('Vectorize: batch_axis must batch at least one argument (all entries are None)')
    return tuple(a if a is None else int(a) for a in batch_axis)


def _check_declared_arity(f: Callable, batch_axis: Tuple[Optional[int], ...]) -> None:
    """Refuses a function that declares more positional parameters than batch_axis describes (as Objax 1.8).
    Parameters that a ForceArgs wrapper always gives are not counted."""
    try:
        params = inspect.signature(f).parameters.values()
    except (TypeError, ValueError):  # unreadable signature: checked at call time only
        return
    forced = f.forced_kwargs if isinstance(f, ForceArgs) else {}
    declared = sum(p.kind in _POSITIONAL and p.name not in forced for p in params)
    if declared > len(batch_axis):
        raise ArgumentCountError(f'Vectorize: the function declares {declared} positional parameters but '
                                 f'batch_axis={batch_axis} describes {len(batch_axis)}; give one batch axis (or None) '
                                 f'per positional parameter')


def _batch_size(args: tuple, batch_axis: Tuple[Optional[int], ...]) -> int:
    """The common batch size of the batched arguments (each may be an array or a pytree of arrays), after
    checking the argument count, that every batched leaf has its batch axis, and that the batch is not empty."""
    if len(args) != len(batch_axis):
        raise ArgumentCountError(f'Vectorize: got {len(args)} positional arguments but batch_axis={batch_axis} '
                                 f'describes {len(batch_axis)}')
    sizes = {}
    for i, (arg, axis) in enumerate(zip(args, batch_axis)):
        if axis is None:
            continue
        leaves = jax.tree_util.tree_flatten_with_path(arg)[0]
        if not leaves:
            raise ValueError(f'Vectorize: argument {i} is batched (batch_axis[{i}]={axis}) but holds no array')
        for path, x in leaves:
            label = f'argument {i}{jax.tree_util.keystr(path)}'
            shape = np.shape(x)
            if not -len(shape) <= axis < len(shape):
                what = 'a scalar' if not shape else f'of shape {tuple(shape)}'
                raise ValueError(f'Vectorize: {label} is {what}, which has no batch axis {axis} '
                                 f'(batch_axis={batch_axis}); pass None in batch_axis for unbatched arguments')
            sizes.setdefault(shape[axis], label)
    if len(sizes) > 1:
        detail = ', '.join(f'{label}: {n}' for n, label in sizes.items())
        raise ValueError(f'Vectorize: batched arguments disagree on the batch size ({detail})')
    n = next(iter(sizes))
    if n == 0:
        raise ValueError(f'Vectorize: empty batch ({sizes[0]} has 0 examples on its batch axis); nothing to '
                         f'compute, and averaging changed variables over 0 examples would store NaN')
    return n
