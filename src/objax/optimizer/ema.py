"""Exponential moving averages of variables, and a module that runs with the averaged weights."""

from typing import Callable, List, Tuple

import jax.numpy as jn

from objax._core.pure import Pure
from objax._core.variables import reduce_first
from objax.module import Module, ModuleList
from objax.optimizer._common import NON_NEGATIVE, UNIT_CLOSED, assign_all, cast_like, check_hyper, \
    optimizer_repr, zeros_like_var
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import BaseVar, RandomState, StateVar, TrainRef, TrainVar

__all__ = ['ExponentialMovingAverage', 'ExponentialMovingAverageModule']


def _averaged(vc: VarCollection) -> List[BaseVar]:
    """What an EMA of `vc` averages: first every distinct non-trainable variable except random keys (as they
    are), then a TrainRef to every distinct TrainVar (a TrainRef of `vc` counts as its TrainVar), each part
    in collection order."""
    states, trained, seen = [], [], set()
    for v in vc:
        if isinstance(v, (TrainVar, TrainRef)):
            target = v._storage()
            if id(target) not in seen:
                seen.add(id(target))
                trained.append(TrainRef(target))
        elif not isinstance(v, RandomState):
            states.append(v)
    return states + trained


def _as_float(x: JaxArray) -> JaxArray:
    """Integer/bool values as float32 (so that averages of counters do not wrap around), floats as they are."""
    return x if jn.issubdtype(x.dtype, jn.inexact) else x.astype(jn.float32)


class ExponentialMovingAverage(Module):
    """Keeps m <- m + (1 - momentum) * (x - m) for the variables x of `vc`, all m starting at zero.

    Averaged: every non-trainable variable of `vc` except random keys, then every TrainVar (through TrainRefs).
    The averages read as m, or with `debias` as m / (1 - (1 - eps) * momentum^step) (zero before any update).
    Variables: `step` (uint32 counter of the updates), `refs` (ModuleList of the averaged variables), `m`
    (ModuleList of the averages, StateVars of the variables' shapes and dtypes).
    """

    def __init__(self, vc: VarCollection, momentum: float = 0.999, debias: bool = False, eps: float = 1e-6):
        """Creates zero averages for the variables of `vc`.

        Args:
            vc: the variables to average, e.g. model.vars().
            momentum: weight of the old average at each update, in [0, 1].
            debias: whether reading corrects the bias towards the zero start.
            eps: keeps the debiasing factor finite before the first update (>= 0).

        Raises:
            TypeError: vc is not a VarCollection.
            ValueError: momentum (a number) outside [0, 1], eps negative, NaN or infinite.
        """
        if not isinstance(vc, VarCollection):
            raise TypeError(f'ExponentialMovingAverage(vc): vc must be a VarCollection, got {type(vc).__name__}')
        self.momentum = check_hyper('ExponentialMovingAverage', 'momentum', momentum, UNIT_CLOSED)
        self.debias = debias
        self.eps = check_hyper('ExponentialMovingAverage', 'eps', eps, NON_NEGATIVE)
        self.step = StateVar(jn.array(0, jn.uint32), reduce=reduce_first)
        self.refs = ModuleList(_averaged(vc))
        self.m = ModuleList(StateVar(zeros_like_var(x)) for x in self.refs)

    def __call__(self):
        """Folds the current values of the variables into their averages (all of them, or none on error).

        Raises:
            ValueError: a variable's value no longer has its average's shape (nothing is changed).
        """
        new_m = []
        for x, m in zip(self.refs, self.m):
            old = _as_float(m.value)
            new_m.append(old + (1 - self.momentum) * (_as_float(x.value) - old))
        assign_all('ExponentialMovingAverage', [self.step] + list(self.m), [self.step.value + 1] + new_m)

    def refs_and_values(self) -> Tuple[VarCollection, List[JaxArray]]:
        """The averaged variables and their averages.

        Returns:
            (collection of the averaged variables, list of their averages in the same order, each of its
            variable's shape and dtype; debiased when `debias`).
        """
        if self.debias:
            scale = 1 - (1 - self.eps) * self.momentum ** self.step.value.astype(jn.float32)
            values = [cast_like(_as_float(m.value) / scale, m.value.dtype) for m in self.m]
        else:
            values = [m.value for m in self.m]
        return self.refs.vars(), values

    def replace_vars(self, f: Callable) -> Callable:
        """Wraps `f` so that it runs with the averages in place of the variables; the variables get their
        own values back afterwards (changes `f` makes to them are discarded).

        Args:
            f: the function to run with the averaged values (e.g. a model's evaluation function).

        Returns:
            A function taking `f`'s arguments and returning `f`'s result.
        """

        def run_with_averages(*args, **kwargs):
            refs, averages = self.refs_and_values()
            pure = Pure(f, refs)  # one distinct variable per averaged entry, in the same order
            return pure(averages, *args, **kwargs)[0]

        return run_with_averages

    def __repr__(self):
        return optimizer_repr(self, momentum=self.momentum, debias=self.debias, eps=self.eps)


class ExponentialMovingAverageModule(Module):
    """Wraps `module` with an ExponentialMovingAverage of its variables: calling it runs `module` with the
    averaged weights; `update_ema()` folds the current weights into the averages. The module is the
    attribute `__wrapped__`, so its variables are named as `(ExponentialMovingAverageModule)(Class)...`."""

    def __init__(self, module: Module, momentum: float = 0.999, debias: bool = False, eps: float = 1e-6):
        """Wraps `module`; momentum, debias and eps are those of ExponentialMovingAverage.

        Args:
            module: the module whose variables are averaged and which calls run.
            momentum: weight of the old average at each update, in [0, 1].
            debias: whether reading corrects the bias towards the zero start.
            eps: keeps the debiasing factor finite before the first update (>= 0).

        Raises:
            TypeError: module is not a Module.
            ValueError: momentum (a number) outside [0, 1], eps negative, NaN or infinite.
        """
        if not isinstance(module, Module):
            raise TypeError(f'ExponentialMovingAverageModule(module): module must be an objax Module, '
                            f'got {type(module).__name__}')
        self.__wrapped__ = module
        self.ema = ExponentialMovingAverage(module.vars(), momentum=momentum, debias=debias, eps=eps)

    def __call__(self, *args, **kwargs):
        """Runs the wrapped module with its averaged weights."""
        return self.ema.replace_vars(self.__wrapped__)(*args, **kwargs)

    def update_ema(self):
        """Folds the module's current weights into the averages."""
        self.ema()

    def __repr__(self):
        return optimizer_repr(self, momentum=self.ema.momentum, debias=self.ema.debias, eps=self.ema.eps)
