"""Adam with bias correction."""

import warnings
from typing import List, Optional, Union

import jax.numpy as jn

from objax._core.variables import reduce_first
from objax.module import Module, ModuleList
from objax.optimizer._common import (
    NON_NEGATIVE,
    UNIT_OPEN,
    assign_all,
    cast_like,
    check_grads,
    check_hyper,
    check_lr,
    optimizer_repr,
    train_refs,
    zero_slot,
)
from objax.typing import JaxArray
from objax.varcollection import VarCollection
from objax.variable import StateVar

__all__ = ['Adam']


class Adam(Module):
    """Adam as in Objax 1.x, with eps inside the square root of the raw second moment:
    m <- b1 m + (1 - b1) g;  v <- b2 v + (1 - b2) g^2;  t <- t + 1;
    p <- p - lr * sqrt(1 - b2^t) / (1 - b1^t) * m / sqrt(v + eps).
    State: `step` (uint32 StateVar) and one `m` and one `v` StateVar per TrainVar, shaped like it."""

    def __init__(self, vc: VarCollection, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        """Creates the optimizer, its step counter and zero `m`/`v` slots for the TrainVars of `vc`.

        Args:
            vc: the variables to optimize; only its TrainVars (deduplicated, in collection order) are used.
            beta1: decay of the first moment `m`, in [0, 1).
            beta2: decay of the second moment `v`, in [0, 1).
            eps: added to `v` inside the square root, >= 0.

        Raises:
            TypeError: vc is not a VarCollection.
            ValueError: beta1 or beta2 (numbers) outside [0, 1), eps negative, NaN or infinite.

        Warns:
            UserWarning: eps is 0: a parameter whose gradient is exactly zero so far gets 0/0, NaN (the formula
                of Objax 1.8 and optax, kept unchanged).
        """
        self.beta1 = check_hyper('Adam', 'beta1', beta1, UNIT_OPEN)
        self.beta2 = check_hyper('Adam', 'beta2', beta2, UNIT_OPEN)
        self.eps = check_hyper('Adam', 'eps', eps, NON_NEGATIVE)
        if self.eps == 0:
            warnings.warn('Adam: eps=0 makes every parameter whose gradients have all been exactly zero NaN at the '
                          'next step (0 / 0 in m / sqrt(v + eps)); use a small positive eps such as 1e-8',
                          UserWarning, stacklevel=2)
        self.step = StateVar(jn.array(0, jn.uint32), reduce=reduce_first)
        self.train_vars = train_refs('Adam', vc)
        self.m = ModuleList(zero_slot(ref) for ref in self.train_vars)
        self.v = ModuleList(zero_slot(ref) for ref in self.train_vars)

    def __call__(self, lr: Union[float, JaxArray], grads: List[JaxArray], beta1: Optional[float] = None,
                 beta2: Optional[float] = None):
        """Applies one step to every TrainVar, `m`, `v` and `step`, or changes nothing when it raises.

        Args:
            lr: learning rate, a number or an array broadcasting to every variable.
            grads: one gradient per TrainVar, same order and shapes as the collection's TrainVars.
            beta1: overrides the constructor's beta1 for this call only.
            beta2: overrides the constructor's beta2 for this call only.

        Raises:
            ValueError: wrong number or shapes of grads, NaN/infinite lr, beta1/beta2 outside [0, 1), an lr
                that does not broadcast to every variable.
        """
        grads = check_grads('Adam', self.train_vars, grads)
        lr = check_lr('Adam', lr, self.train_vars)
        beta1 = self.beta1 if beta1 is None else check_hyper('Adam', 'beta1', beta1, UNIT_OPEN)
        beta2 = self.beta2 if beta2 is None else check_hyper('Adam', 'beta2', beta2, UNIT_OPEN)
        step = self.step.value + 1
        t = step.astype(jn.float32)
        scaled_lr = lr * jn.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        new_m, new_v, new_p = [], [], []
        for ref, m, v, g in zip(self.train_vars, self.m, self.v, grads):
            m_new = cast_like(beta1 * m.value + (1 - beta1) * g, m.value.dtype)
            v_new = cast_like(beta2 * v.value + (1 - beta2) * jn.square(g), v.value.dtype)
            new_m.append(m_new)
            new_v.append(v_new)
            new_p.append(ref.value - scaled_lr * m_new * jn.reciprocal(jn.sqrt(v_new + self.eps)))
        assign_all('Adam', [self.step] + list(self.m) + list(self.v) + list(self.train_vars),
                   [step] + new_m + new_v + new_p)

    def __repr__(self):
        return optimizer_repr(self, beta1=self.beta1, beta2=self.beta2, eps=self.eps)
