"""Helpers shared by the optimizers: collecting TrainRefs, checking hyper-parameters and gradients, and
writing a whole step at once (every variable or none)."""

import math
import numbers
from typing import Any, List, Sequence

import jax.numpy as jn
import numpy as np

from objax.module import ModuleList
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import BaseVar, TrainRef, TrainVar

__all__ = []


def train_refs(owner: str, vc: VarCollection) -> ModuleList:
    """One TrainRef per distinct TrainVar of `vc`, in collection order."""
    if not isinstance(vc, VarCollection):
        raise TypeError(f'{owner}(vc): vc must be a VarCollection (e.g. model.vars()), got {type(vc).__name__}')
    return ModuleList(TrainRef(v) for v in vc.subset(TrainVar))


def zeros_like_var(var: BaseVar) -> JaxArray:
    """Zeros with the shape and dtype of `var`'s value, never weak-typed (so a compiled step keeps its types)."""
    value = var.value
    return jn.zeros(value.shape, value.dtype)


def optimizer_repr(obj: Any, **args) -> str:
    """`objax.optimizer.Class(k1=v1, ...)` for the optimizers of this package, `module.Class(...)` otherwise."""
    cls = type(obj)
    module = 'objax.optimizer' if cls.__module__.startswith('objax.optimizer') else cls.__module__
    return f'{module}.{cls.__name__}(' + ', '.join(f'{k}={v!r}' for k, v in args.items()) + ')'


# Conditions on hyper-parameters given as Python numbers, with the wording used in error messages.
FINITE = (lambda x: True, 'a finite number')
NON_NEGATIVE = (lambda x: x >= 0, 'a finite number >= 0')
UNIT_OPEN = (lambda x: 0 <= x < 1, 'in [0, 1)')
UNIT_CLOSED = (lambda x: 0 <= x <= 1, 'in [0, 1]')


def check_hyper(owner: str, name: str, value: Any, rule=FINITE) -> Any:
    """Returns `value` after checking it when it is a Python (or numpy scalar) number.

    Arrays (including traced values inside Jit/Grad) pass unchecked: their values are not known here.

    Raises:
        ValueError: a number that is NaN, infinite or outside the range of `rule`.
        TypeError: neither a number nor an array.
    """
    if isinstance(value, numbers.Real):
        ok, expected = rule
        if not (math.isfinite(value) and ok(value)):
            raise ValueError(f'{owner}: {name} must be {expected}, got {value!r}; nothing was changed')
    elif not hasattr(value, 'dtype') and not hasattr(value, '__jax_array__'):
        raise TypeError(f'{owner}: {name} must be a number or an array, got {type(value).__name__}')
    return value


def check_lr(owner: str, lr: Any, refs: Sequence[TrainRef]) -> Any:
    """Returns `lr` after checking that it is finite (a number) or broadcasts to every variable (an array).

    Raises:
        ValueError: a NaN/infinite number, or an array whose shape does not broadcast to a variable's shape.
        TypeError: neither a number nor an array.
    """
    check_hyper(owner, 'lr', lr)
    shape = tuple(np.shape(lr)) if not isinstance(lr, numbers.Real) else ()
    if shape:
        bad = [f'{ref.ref._label()} of shape {tuple(ref.value.shape)}' for ref in refs
               if not _broadcasts_to(shape, tuple(ref.value.shape))]
        if bad:
            raise ValueError(f'{owner}: lr of shape {shape} does not broadcast to ' + ', '.join(bad)
                             + '; nothing was changed')
    return lr


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def check_grads(owner: str, refs: Sequence[TrainRef], grads) -> List[JaxArray]:
    """Returns `grads` as a list after checking there is one per TrainRef, each shaped like its variable."""
    if isinstance(grads, (np.ndarray, JaxArray)) or not hasattr(grads, '__iter__'):
        raise TypeError(f'{owner}: grads must be a list of arrays (one per TrainVar), got {type(grads).__name__}')
    grads = list(grads)
    if len(grads) != len(refs):
        raise ValueError(f'{owner} expected {len(refs)} gradients (one per TrainVar of the collection it was '
                         f'built with), got {len(grads)}; nothing was changed')
    errors = []
    for i, (ref, g) in enumerate(zip(refs, grads)):
        expected = tuple(ref.value.shape)
        got = tuple(np.shape(g))
        if got != expected:
            errors.append(f'grads[{i}] for {ref.ref._label()}: shape {got}, expected {expected}')
    if errors:
        raise ValueError(f'{owner}: gradients do not match the variables, nothing was changed:\n  '
                         + '\n  '.join(errors))
    return grads


def cast_like(x: JaxArray, dtype) -> JaxArray:
    """`x` converted to `dtype` (rounded first when `dtype` is not floating), never weak-typed."""
    x = jn.asarray(x)
    if not jn.issubdtype(dtype, jn.inexact) and jn.issubdtype(x.dtype, jn.inexact):
        x = jn.round(x)
    return x.astype(dtype)


def assign_all(owner: str, variables: Sequence[BaseVar], values: Sequence[JaxArray]) -> None:
    """Writes `values` into `variables`, all of them or none.

    Each value is converted to its variable's dtype (so a compiled step sees the same types every call) and
    must already have its variable's shape; every shape is checked before the first write.

    Raises:
        ValueError: a value whose shape differs from its variable's (nothing is written).
    """
    converted, errors = [], []
    for var, x in zip(variables, values):
        x = cast_like(x, var.value.dtype)
        if x.shape != var.value.shape:
            label = var.ref._label() if isinstance(var, TrainRef) else var._label()
            errors.append(f'{label}: new value of shape {tuple(x.shape)}, expected {tuple(var.value.shape)}')
        converted.append(x)
    if errors:
        raise ValueError(f'{owner}: the step gives values of the wrong shape (does a hyper-parameter array '
                         f'broadcast with every variable?), nothing was changed:\n  ' + '\n  '.join(errors))
    for var, x in zip(variables, converted):
        var.assign(x)

