"""Learning-rate schedules against hand-computed values."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.optimizer.scheduler import LinearAnnealing, Scheduler, StepDecay


def test_linear_annealing_cycle():
    s = LinearAnnealing(100, base_lr=0.5)
    assert isinstance(s, Scheduler)
    for step, lr in [(0, 0.5), (25, 0.375), (50, 0.25), (99, 0.005), (100, 0.5), (125, 0.375)]:
        assert s(step) == pytest.approx(lr)
        assert s.multiplier(step) == pytest.approx(lr / 0.5)


def test_linear_annealing_no_cycle_and_min_lr():
    s = LinearAnnealing(100, base_lr=0.5, is_cycle=False)
    assert [s(t) for t in (0, 50, 100, 150)] == pytest.approx([0.5, 0.25, 0.0, 0.0])
    s = LinearAnnealing(100, base_lr=0.5, is_cycle=False, min_lr=0.1)
    assert [s(t) for t in (0, 50, 100, 1000)] == pytest.approx([0.5, 0.3, 0.1, 0.1])
    assert s.multiplier(50) == pytest.approx(0.6)
    s = LinearAnnealing(10, base_lr=1.0, min_lr=0.2)  # cycling with a floor: 1 -> 0.2 then back to 1
    assert [s(t) for t in (0, 5, 10, 15)] == pytest.approx([1.0, 0.6, 1.0, 0.6])


def test_step_decay():
    s = StepDecay(10, base_lr=2.0, gamma=0.5)
    assert [s(t) for t in (0, 9, 10, 19.5, 25)] == pytest.approx([2.0, 2.0, 1.0, 1.0, 0.5])
    s = StepDecay([5, 20], base_lr=2.0)  # milestones, default gamma 0.1
    assert [s(t) for t in (0, 4, 5, 19, 20, 100)] == pytest.approx([2.0, 2.0, 0.2, 0.2, 0.02, 0.02])
    assert s.multiplier(20) == pytest.approx(0.01)


def test_array_steps():
    steps = jn.array([0., 5., 20., 25., 150.])
    np.testing.assert_allclose(StepDecay((5, 20), base_lr=2.0)(steps), [2.0, 0.2, 0.02, 0.02, 0.02], rtol=1e-6)
    np.testing.assert_allclose(StepDecay(10, gamma=0.5)(steps), [1.0, 1.0, 0.25, 0.25, 0.5 ** 15], rtol=1e-6)
    np.testing.assert_allclose(LinearAnnealing(100, 0.5, is_cycle=False)(steps),
                               [0.5, 0.475, 0.4, 0.375, 0.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(LinearAnnealing(100, 0.5)(steps), [0.5, 0.475, 0.4, 0.375, 0.25], rtol=1e-6)


def test_schedule_inside_jit():
    w = objax.TrainVar(jn.zeros(()))
    step = objax.StateVar(jn.array(0.))
    opt = objax.optimizer.SGD(objax.VarCollection(w=w))
    schedule = StepDecay(2, base_lr=1.0, gamma=0.5)

    def train():
        opt(schedule(step.value), [jn.array(-1.)])  # w grows by the current lr
        step.value = step.value + 1

    train_op = objax.Jit(train, opt.vars() + objax.VarCollection(step=step))
    for _ in range(5):
        train_op()
    assert float(w.value) == pytest.approx(1 + 1 + 0.5 + 0.5 + 0.25)


def test_schedule_errors():
    with pytest.raises(ValueError, match='max_step must be > 0'):
        LinearAnnealing(0)
    with pytest.raises(ValueError, match='base_lr must be nonzero'):
        LinearAnnealing(10, base_lr=0.0, min_lr=0.1)
    with pytest.raises(ValueError, match='step_size must be a positive number'):
        StepDecay(-1)
    with pytest.raises(ValueError, match='strictly increasing'):
        StepDecay([10, 5])
    with pytest.raises(TypeError, match='abstract'):
        Scheduler(1.0)
