"""Dynamic loss scaling for float16 training: an optimizer wrapper that skips the steps whose gradients overflow."""

import math
import numbers
from typing import Any, List, Union

import jax
import jax.numpy as jn
import numpy as np

from objax._core.pure import Pure
from objax._core.variables import reduce_first
from objax.module import Module
from objax.optimizer._common import optimizer_repr
from objax.typing import JaxArray
from objax.variable import StateVar

__all__ = ['DynamicLossScale', 'all_finite']

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def all_finite(tree: Any) -> JaxArray:
    """Whether every entry of every array of `tree` is finite (no inf, no NaN).

    Args:
        tree: a pytree of arrays, e.g. a list of gradients.

    Returns:
        A boolean scalar array (True for a tree without arrays).
    """
    leaves = [jn.isfinite(x).all() for x in jax.tree.leaves(tree)]
    return jn.stack(leaves).all() if leaves else jn.array(True)


def _positive(name: str, value: Any, at_least_one: bool = False) -> float:
    """`value` as a float after checking it is a finite number > 0 (>= 1 with at_least_one) that float32 holds."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 1 if at_least_one else value > 0) and value <= _FLOAT32_MAX
    if not ok:
        expected = 'a finite number >= 1' if at_least_one else 'a finite number > 0'
        raise ValueError(f'DynamicLossScale: {name} must be {expected} (within float32 range), got {value!r}')
    return float(value)


class DynamicLossScale(Module):
    """Wraps an optimizer with dynamic loss scaling, for training with float16 computations.

    Multiply the loss by the current scale with `scale` (inside the differentiated function), so that small
    float16 gradients do not underflow, then give the gradients of the scaled loss to this wrapper: it divides
    them by the scale and, when all are finite, applies the wrapped optimizer's step; when any is inf or NaN (the
    scale was too large: float16 overflowed), it skips the step (no variable of the optimizer changes: weights,
    slots and step counter stay as they are) and divides the scale by `factor`. After `period` consecutive finite
    steps the scale is multiplied by `factor` (unless that overflows float32). These are the rules of jmp's
    DynamicLossScale.

    The scale and the count of finite steps are StateVars (`loss_scale`, `counter`), so they are saved in
    checkpoints and updated inside objax.Jit: the skip is a `jnp.where` in the compiled step, with no
    synchronization with the host. Under objax.Parallel, average the gradients over the devices (pmean) before
    the call, so that every device takes the same decision.
    """

    def __init__(self, optimizer: Module, initial_scale: float = 2.0 ** 15, period: int = 2000,
                 factor: float = 2.0, min_scale: float = 1.0):
        """Creates the scale (a float32 StateVar) and the count of finite steps (an int32 StateVar, at 0).

        Args:
            optimizer: the optimizer to wrap (objax.optimizer.Adam(model.vars())...); its step is called with
                the unscaled gradients, and only the variables of its vars() are restored by a skipped step.
            initial_scale: the scale to start with, > 0; a large one (the default is 2 ** 15) comes down fast.
            period: number of consecutive finite steps after which the scale grows, a positive int.
            factor: what the scale is multiplied by after `period` finite steps and divided by after a
                non-finite one, >= 1.
            min_scale: the scale never goes below it, > 0.

        Raises:
            TypeError: optimizer is not a callable Module.
            ValueError: initial_scale, factor or min_scale out of range (or NaN, infinite, beyond float32), or
                period not a positive int.
        """
        if not isinstance(optimizer, Module) or not callable(optimizer):
            raise TypeError(f'DynamicLossScale(optimizer): optimizer must be an objax optimizer (a Module), got '
                            f'{type(optimizer).__name__}')
        if not isinstance(period, numbers.Integral) or isinstance(period, bool) or period < 1:
            raise ValueError(f'DynamicLossScale: period must be a positive int, got {period!r}')
        self.optimizer = optimizer
        self.initial_scale = _positive('initial_scale', initial_scale)
        self.period = int(period)
        self.factor = _positive('factor', factor, at_least_one=True)
        self.min_scale = _positive('min_scale', min_scale)
        self.loss_scale = StateVar(jn.array(self.initial_scale, jn.float32), reduce=reduce_first)
        self.counter = StateVar(jn.array(0, jn.int32), reduce=reduce_first)

    def scale(self, tree: Any) -> Any:
        """`tree` (a loss, or a pytree of arrays) multiplied by the current scale.

        Args:
            tree: the loss.

        Returns:
            Each array times `loss_scale` (a float16 array becomes float32, as the scale is float32).
        """
        return jax.tree.map(lambda x: x * self.loss_scale.value, tree)

    def unscale(self, tree: Any) -> Any:
        """`tree` (gradients or a loss computed from a scaled loss) divided by the current scale.

        Args:
            tree: the scaled quantities.

        Returns:
            Each array times 1 / `loss_scale`.
        """
        inverse = 1 / self.loss_scale.value
        return jax.tree.map(lambda x: x * inverse, tree)

    def __call__(self, lr: Union[float, JaxArray], grads: List[JaxArray], *args, **kwargs) -> JaxArray:
        """Unscales `grads` and applies the wrapped optimizer's step if they are all finite; then updates the scale.

        Args:
            lr: the learning rate, given to the wrapped optimizer.
            grads: the gradients of the scaled loss, one per TrainVar of the wrapped optimizer.
            *args: more positional arguments of the wrapped optimizer's step.
            **kwargs: keyword arguments of the wrapped optimizer's step.

        Returns:
            A boolean scalar array: True when the step was applied, False when it was skipped.

        Raises:
            TypeError, ValueError: what the wrapped optimizer raises (wrong number or shapes of grads...); nothing
                is changed then.
        """
        if isinstance(grads, (np.ndarray, jax.Array)) or not hasattr(grads, '__iter__'):
            raise TypeError(f'DynamicLossScale: grads must be a list of arrays (one per TrainVar), got '
                            f'{type(grads).__name__}')
        grads = self.unscale(list(grads))
        finite = all_finite(grads)
        pure = Pure(self.optimizer, self.optimizer.vars())
        old = pure.values()
        _, changes = pure(old, lr, grads, *args, **kwargs)
        pure.write({i: jn.where(finite, x, old[i]) for i, x in changes.items()})
        scale, counter = self.loss_scale.value, self.counter.value
        grown = scale * self.factor
        grown = jn.where(jn.isfinite(grown), grown, scale)
        self.loss_scale.value = jn.where(finite, jn.where(counter == self.period - 1, grown, scale),
                                         jn.maximum(self.min_scale, scale / self.factor)).astype(jn.float32)
        self.counter.value = jn.where(finite, (counter + 1) % self.period, 0).astype(jn.int32)
        return finite

    def __repr__(self):
        return optimizer_repr(self, optimizer=self.optimizer, initial_scale=self.initial_scale, period=self.period,
                              factor=self.factor, min_scale=self.min_scale)
