"""Learning-rate schedules: lr(step) = base_lr * multiplier(step). Steps may be Python numbers or jax arrays
(e.g. a step counter passed into a jitted train step)."""

import abc
import math
from typing import List, Tuple, Union

import jax.numpy as jn

from objax.typing import JaxArray

__all__ = ['Scheduler', 'LinearAnnealing', 'StepDecay']

_Step = Union[float, JaxArray]


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class Scheduler(abc.ABC):
    """Base of the schedules: subclasses define `multiplier(step)`; calling gives base_lr * multiplier(step)."""

    def __init__(self, base_lr: float):
        """Creates the schedule.

        Args:
            base_lr: the learning rate that `multiplier(step)` scales.
        """
        self.base_lr = base_lr

    @abc.abstractmethod
    def multiplier(self, step: _Step) -> _Step:
        """Factor applied to base_lr at `step`.

        Args:
            step: the training step, a Python number or a jax array.

        Returns:
            The factor, a number or an array like `step`.
        """

    def __call__(self, step: _Step) -> _Step:
        """The learning rate at `step`.

        Args:
            step: the training step, a Python number or a jax array.

        Returns:
            base_lr * multiplier(step), a number or an array like `step`.
        """
        return self.base_lr * self.multiplier(step)


class LinearAnnealing(Scheduler):
    """Goes linearly from base_lr at step 0 to min_lr at step max_step; then starts over (is_cycle) or stays
    at min_lr. multiplier(step) = (1 - p) + p * min_lr / base_lr with p the fraction of the cycle done."""

    def __init__(self, max_step: float, base_lr: float = 1.0, is_cycle: bool = True, min_lr: float = 0.0):
        """Creates the schedule.

        Args:
            max_step: length of a cycle (> 0): the step at which the rate reaches min_lr.
            base_lr: the rate at the start of a cycle.
            is_cycle: start over after max_step steps (else stay at min_lr).
            min_lr: the rate at the end of a cycle.

        Raises:
            ValueError: max_step <= 0, or base_lr is 0 while min_lr is not.
        """
        if not max_step > 0:
            raise ValueError(f'LinearAnnealing: max_step must be > 0, got {max_step}')
        if base_lr == 0 and min_lr != 0:
            raise ValueError(f'LinearAnnealing: base_lr must be nonzero when min_lr is not 0 (the multiplier '
                             f'is relative to base_lr), got base_lr={base_lr}, min_lr={min_lr}')
        super().__init__(base_lr)
        self.max_step = max_step
        self.is_cycle = is_cycle
        self.min_lr = min_lr

    def multiplier(self, step: _Step) -> _Step:
        """1 at the start of a cycle, min_lr / base_lr at its end.

        Args:
            step: the training step, a Python number or a jax array.

        Returns:
            The factor, a number or an array like `step`.
        """
        if self.is_cycle:
            p = (step % self.max_step) / self.max_step
        elif _is_number(step):
            p = min(step, self.max_step) / self.max_step
        else:
            p = jn.minimum(step, self.max_step) / self.max_step
        end = self.min_lr / self.base_lr if self.min_lr else 0.0
        return (1 - p) + p * end


class StepDecay(Scheduler):
    """Multiplies the rate by gamma every `step_size` steps, or at each milestone when step_size is a list or
    tuple of increasing steps: multiplier(step) = gamma ** (number of decays reached by `step`)."""

    def __init__(self, step_size: Union[float, List, Tuple], base_lr: float = 1.0, gamma: float = 0.1):
        """Creates the schedule.

        Args:
            step_size: decay every `step_size` steps (a positive number), or at each of these steps (a non-empty
                list or tuple of strictly increasing positive milestones).
            base_lr: the rate before the first decay.
            gamma: the factor applied at each decay.

        Raises:
            ValueError: step_size is neither a positive number nor valid milestones.
        """
        if isinstance(step_size, (list, tuple)):
            if not step_size or not all(_is_number(s) and s > 0 for s in step_size) or \
                    any(a >= b for a, b in zip(step_size, step_size[1:])):
                raise ValueError(f'StepDecay: step_size as a list/tuple must be non-empty, positive and strictly '
                                 f'increasing milestones, got {step_size}')
            step_size = tuple(step_size)
        elif not (_is_number(step_size) and step_size > 0):
            raise ValueError(f'StepDecay: step_size must be a positive number or a list/tuple of milestones, '
                             f'got {step_size!r}')
        super().__init__(base_lr)
        self.step_size = step_size
        self.gamma = gamma

    def multiplier(self, step: _Step) -> _Step:
        """gamma ** floor(step / step_size), or gamma ** (milestones <= step).

        Args:
            step: the training step, a Python number or a jax array.

        Returns:
            The factor, a number or an array like `step`.
        """
        if isinstance(self.step_size, tuple):
            if _is_number(step):
                count = sum(step >= s for s in self.step_size)
            else:
                count = jn.sum(jn.asarray(step)[..., None] >= jn.asarray(self.step_size), axis=-1)
        else:
            count = math.floor(step / self.step_size) if _is_number(step) else jn.floor(step / self.step_size)
        return self.gamma ** count
