"""Layer-wise adaptive rate scaling (LARS) with momentum and weight decay."""

from typing import List, Union

import jax.numpy as jn

from objax.module import Module, ModuleList
from objax.optimizer._common import (
    NON_NEGATIVE,
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

__all__ = ['LARS']


class LARS(Module):
    """Per TrainVar p with gradient g (norms over the whole tensor):
    trust = tc * |p| / (|g| + weight_decay * |p| + eps), or 1 when |p| or |g| is 0;
    m <- momentum * m + lr * trust * (g + weight_decay * p);  p <- p - m."""

    def __init__(self, vc: VarCollection, momentum: float = 0.9, weight_decay: float = 1e-4, tc: float = 1e-3,
                 eps: float = 1e-5):
        """Creates the optimizer and its zero `m` slots for the TrainVars of `vc`.

        Args:
            vc: the variables to optimize; only its TrainVars (deduplicated, in collection order) are used.
            momentum: decay of the accumulated step `m`.
            weight_decay: L2 penalty coefficient added to the gradient (and to the trust ratio's denominator).
            tc: trust coefficient scaling the layer-wise trust ratio.
            eps: added to the trust ratio's denominator, >= 0.

        Raises:
            TypeError: vc is not a VarCollection.
            ValueError: momentum, weight_decay or tc NaN or infinite; eps negative, NaN or infinite.
        """
        self.momentum = check_hyper('LARS', 'momentum', momentum)
        self.wd = check_hyper('LARS', 'weight_decay', weight_decay)
        self.tc = check_hyper('LARS', 'tc', tc)
        self.eps = check_hyper('LARS', 'eps', eps, NON_NEGATIVE)
        self.train_vars = train_refs('LARS', vc)
        self.m = ModuleList(zero_slot(ref) for ref in self.train_vars)

    def __call__(self, lr: Union[float, JaxArray], grads: List[JaxArray]):
        """Applies one step to every TrainVar and its `m`, or changes nothing when it raises.

        Args:
            lr: learning rate, a number or an array broadcasting to every variable.
            grads: one gradient per TrainVar, same order and shapes as the collection's TrainVars.

        Raises:
            ValueError: wrong number or shapes of grads, a NaN/infinite lr, an lr that does not broadcast.
        """
        grads = check_grads('LARS', self.train_vars, grads)
        lr = check_lr('LARS', lr, self.train_vars)
        new_m, new_p = [], []
        for ref, m, g in zip(self.train_vars, self.m, grads):
            p = ref.value
            p_norm = jn.linalg.norm(p)
            g_norm = jn.linalg.norm(g)
            trust = self.tc * p_norm / (g_norm + self.wd * p_norm + self.eps)
            trust = jn.where(jn.logical_or(p_norm == 0, g_norm == 0), 1.0, trust)
            m_new = cast_like(self.momentum * m.value + lr * trust * (g + self.wd * p), m.value.dtype)
            new_m.append(m_new)
            new_p.append(p - m_new)
        assign_all('LARS', list(self.m) + list(self.train_vars), new_m + new_p)

    def __repr__(self):
        return optimizer_repr(self, momentum=self.momentum, weight_decay=self.wd, tc=self.tc, eps=self.eps)
