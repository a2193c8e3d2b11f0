"""Exponential moving averages of variables, and a module that runs with the averaged weights."""

from typing import Callable, List, Tuple

import jax.numpy as jn

from objax import _state
from objax.module import Module, ModuleList
from objax.optimizer._common import reduce_first
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import RandomState, StateVar, TrainRef, TrainVar

__all__ = ['ExponentialMovingAverage', 'ExponentialMovingAverageModule']


def _averaged(vc: VarCollection) -> list:
    """TrainRefs to the TrainVars of vc, and vc's floating-point StateVars (random keys and counters are not
    averaged; TrainRefs in vc are skipped, their TrainVars are averaged when they are in vc)."""
    out = []
    for v in vc:
        if isinstance(v, TrainVar):
            out.append(TrainRef(v))
        elif isinstance(v, StateVar) and not isinstance(v, RandomState) and jn.issubdtype(v.dtype, jn.inexact):
            out.append(v)
    return out


class ExponentialMovingAverage(Module):
    """Keeps m <- momentum * m + (1 - momentum) * x for every TrainVar and floating-point StateVar x of `vc`.
    Without `debias`, m starts at the current values; with `debias` m starts at zero and reads as
    m / max(1 - momentum^t, eps) after t updates (eps guards t = 0)."""

    def __init__(self, vc: VarCollection, momentum: float = 0.999, debias: bool = False, eps: float = 1e-6):
        if not isinstance(vc, VarCollection):
            raise TypeError(f'ExponentialMovingAverage(vc): vc must be a VarCollection, got {type(vc).__name__}')
        self.momentum = momentum
        self.debias = debias
        self.eps = eps
        self.refs = ModuleList(_averaged(vc))
        self.m = ModuleList(StateVar(jn.zeros_like(x.value) if debias else x.value) for x in self.refs)
        if debias:
            self.step = StateVar(jn.array(0, jn.uint32), reduce=reduce_first)

    def __call__(self):
        """Folds the current values of the variables into their averages."""
        if self.debias:
            self.step.value = self.step.value + 1
        for x, m in zip(self.refs, self.m):
            m.value = (self.momentum * m.value + (1 - self.momentum) * x.value).astype(m.value.dtype)

    def refs_and_values(self) -> Tuple[VarCollection, List[JaxArray]]:
        """The averaged variables (as a VarCollection) and their (debiased when asked) average values."""
        if self.debias:
            t = self.step.value.astype(jn.float32)
            scale = 1 / jn.maximum(1 - self.momentum ** t, self.eps)
            values = [(m.value * scale).astype(m.value.dtype) for m in self.m]
        else:
            values = [m.value for m in self.m]
        return self.refs.vars(), values

    def replace_vars(self, f: Callable) -> Callable:
        """Wraps `f` so that it runs with the averages in place of the variables; the variables get their
        own values back afterwards (changes `f` makes to them are discarded)."""

        def run_with_averages(*args, **kwargs):
            refs, averages = self.refs_and_values()
            pure = _state.Pure(f, refs)  # one distinct variable per averaged entry, in the same order
            return pure(averages, *args, **kwargs)[0]

        return run_with_averages


class ExponentialMovingAverageModule(Module):
    """Wraps `module` with an ExponentialMovingAverage of its variables: calling it runs `module` with the
    averaged weights; `update_ema()` folds the current weights into the averages."""

    def __init__(self, module: Module, momentum: float = 0.999, debias: bool = False, eps: float = 1e-6):
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
