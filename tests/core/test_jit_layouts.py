"""objax.Jit and the layouts objax.sharding records: laying out (or bringing back) the variables of one model
recompiles the Jits of that model only, which keep computing what they computed before; on 8 CPU devices."""

import jax.numpy as jn
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import objax
from objax.sharding import fsdp, layout, make_mesh, shard, unshard

X = np.random.RandomState(0).normal(size=(16, 16)).astype(np.float32)
Y = np.random.RandomState(1).normal(size=(16, 8)).astype(np.float32)


def build(seed: int, donate: bool = True):
    """A two-layer model with fixed initial values, its Momentum and a jitted step counting its traces; returns
    (collection, step, trace counter)."""
    model = objax.nn.Sequential([objax.nn.Linear(16, 32), objax.functional.tanh, objax.nn.Linear(32, 8)])
    rng = np.random.RandomState(seed)
    for v in model.vars().subset(objax.TrainVar):
        v.assign(jn.asarray(rng.normal(size=v.value.shape).astype(np.float32) * 0.3))
    opt = objax.optimizer.Momentum(model.vars())
    gv = objax.GradValues(lambda x, y: ((model(x) - y) ** 2).mean(), model.vars())
    traces = []

    def train_op(x, y):
        traces.append(1)  # runs once per trace
        grads, values = gv(x, y)
        opt(0.05, grads)
        return values[0]

    vc = model.vars() + opt.vars()
    return vc, objax.Jit(train_op, vc, donate=donate), traces


def _values(vc) -> list:
    return [np.asarray(v) for v in vc.tensors()]


@pytest.mark.parametrize('donate', [True, False])
def test_laying_out_one_model_recompiles_only_its_own_jit(donate):
    vc_a, step_a, traces_a = build(0, donate)
    vc_b, step_b, traces_b = build(1, donate)
    ref_a, ref_step_a, _ = build(0, donate)  # never laid out: what A computes
    ref_b, ref_step_b, _ = build(1, donate)
    losses = {'a': [], 'b': [], 'ref_a': [], 'ref_b': []}

    def both(n: int = 1):
        for _ in range(n):
            losses['a'].append(float(step_a(X, Y)))
            losses['b'].append(float(step_b(X, Y)))
            losses['ref_a'].append(float(ref_step_a(X, Y)))
            losses['ref_b'].append(float(ref_step_b(X, Y)))

    both(2)
    assert len(traces_a) == len(traces_b) == 1
    mesh = make_mesh({'data': 8})
    shard(vc_a, mesh, rules=[fsdp(mesh)])
    assert layout(vc_a['(Sequential)[0](Linear).w']).spec == P(None, 'data')
    both(2)
    assert len(traces_b) == 1  # B's variables were not laid out: its program is kept
    assert len(traces_a) == 2  # A's were: it compiled once for their new layouts ...
    for name, v in vc_a.items():  # ... and its new values stay in those layouts
        if not isinstance(v, objax.TrainRef):
            assert v.value.sharding.is_equivalent_to(layout(v), v.value.ndim), name
    shard(vc_a, mesh, rules=[fsdp(mesh)])  # the same layouts again: nothing to recompile
    both()
    assert len(traces_a) == 2 and len(traces_b) == 1
    unshard(vc_a)
    both(2)
    assert len(traces_b) == 1 and len(traces_a) == 3
    program = step_b._call_donating if donate else step_b._call
    assert program._cache_size() == 1
    np.testing.assert_allclose(losses['a'], losses['ref_a'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(losses['b'], losses['ref_b'], rtol=1e-6, atol=0)
    for a, b in zip(_values(vc_a) + _values(vc_b), _values(ref_a) + _values(ref_b)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)

