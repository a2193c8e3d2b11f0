"""objax.Parallel and the layouts objax.sharding records: Parallel keeps each variable in its recorded layout, so
that Parallel and Jit steps can alternate on one model without moving any value back and forth; on 8 CPU
devices, checked against unsharded training."""

import jax
import jax.numpy as jn
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import objax
from objax._core import layout as core_layout
from objax.functional.parallel import pmean
from objax.sharding import fsdp, layout, make_mesh, shard

X = np.random.RandomState(0).normal(size=(32, 16)).astype(np.float32)
Y = np.random.RandomState(1).normal(size=(32, 8)).astype(np.float32)
ROUNDS = 3


def build():
    """A two-layer model with fixed initial values and Momentum; returns (collection, Parallel step, Jit step,
    trace counts). Both steps take one gradient step on the whole batch."""
    model = objax.nn.Sequential([objax.nn.Linear(16, 32), objax.functional.tanh, objax.nn.Linear(32, 8)])
    rng = np.random.RandomState(0)
    for v in model.vars().subset(objax.TrainVar):
        v.assign(jn.asarray(rng.normal(size=v.value.shape).astype(np.float32) * 0.3))
    opt = objax.optimizer.Momentum(model.vars())
    gv = objax.GradValues(lambda x, y: ((model(x) - y) ** 2).mean(), model.vars())
    traces = {'parallel': 0, 'jit': 0}

    def parallel_op(x, y):
        traces['parallel'] += 1
        grads, values = gv(x, y)
        opt(0.05, [pmean(g) for g in grads])
        return pmean(values[0])

    def jit_op(x, y):
        traces['jit'] += 1
        grads, values = gv(x, y)
        opt(0.05, grads)
        return values[0]

    vc = model.vars() + opt.vars()
    return vc, objax.Parallel(parallel_op, vc, reduce=lambda x: x[0]), objax.Jit(jit_op, vc), traces


def _values(vc) -> list:
    return [np.asarray(v) for v in vc.tensors()]


def _storage(vc) -> list:
    return [(n, v) for n, v in vc.items() if not isinstance(v, objax.TrainRef)]


@pytest.fixture
def moves(monkeypatch):
    """The values objax moved to another layout (calls of the layout module's `place` that made a new array of
    an array already on devices), as (shape, from sharding, to sharding)."""
    moved = []
    place = core_layout.place

    def counting(x, sharding, local_part=False):
        out = place(x, sharding, local_part)
        if isinstance(x, jax.Array) and out is not x:
            moved.append((tuple(x.shape), x.sharding, sharding))
        return out

    monkeypatch.setattr(core_layout, 'place', counting)
    return moved


@pytest.mark.parametrize('mesh_axes, rules', [({'data': 8}, 'fsdp'),
                                              ('data=2,model=4', [('*[[]0](Linear).w', P(None, 'model')),
                                                                  ('*[[]2](Linear).w', P('model', None))])],
                         ids=['fsdp', 'data_and_model'])
def test_parallel_and_jit_steps_alternate_without_moving_values(mesh_axes, rules, moves):
    ref_vc, ref_parallel, ref_jit, _ = build()  # unsharded: Parallel alone, then Jit alone
    ref_losses = [float(ref_parallel(X, Y)) for _ in range(ROUNDS)]
    ref_losses += [float(ref_jit(X, Y)) for _ in range(ROUNDS)]
    jit_vc, _, jit_alone, _ = build()
    jit_losses = [float(jit_alone(X, Y)) for _ in range(2 * ROUNDS)]
    np.testing.assert_allclose(ref_losses, jit_losses, rtol=1e-5, atol=1e-6)  # the same steps

    vc, parallel, jit, traces = build()
    mesh = make_mesh(mesh_axes)
    shard(vc, mesh, rules=[fsdp(mesh)] if rules == 'fsdp' else rules)
    split = [n for n, v in _storage(vc) if not layout(v).is_fully_replicated]
    assert len(split) == (8 if rules == 'fsdp' else 4)  # 4 parameters and their momentum slots, or 2 and 2
    moves.clear()  # those of the unsharded runs above
    losses = []
    for i in range(ROUNDS):
        for name, step in (('parallel', parallel), ('jit', jit)):
            first = {n: v.value for n, v in _storage(vc)}
            losses.append(float(step(X, Y)))
            for n, v in _storage(vc):  # every value where its recorded layout says it is
                assert v.value.sharding.is_equivalent_to(layout(v), v.value.ndim), (i, name, n)
                assert v.value.sharding == core_layout.canonical(layout(v)), (i, name, n)
            assert all(vc[n].value is not first[n] for n in split)  # new values, computed in place
            assert moves == [], (i, name, moves)  # no value moved to another layout before the call
    assert traces == {'parallel': 1, 'jit': 1}  # and nothing recompiled on the way
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)  # step k gives the same loss either way
    for a, b in zip(_values(vc), _values(jit_vc)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_parallel_replicates_a_layout_over_the_devices_in_another_order():
    # A program takes its inputs from one device order: a mesh over the devices in reverse cannot be kept,
    # the values are replicated on Parallel's mesh as without a layout, and the results are the same.
    ref_vc, ref_parallel, _, _ = build()
    ref_losses = [float(ref_parallel(X, Y)) for _ in range(2)]
    vc, parallel, _, _ = build()
    mesh = make_mesh({'data': 8}, devices=jax.devices()[::-1])
    shard(vc, mesh, rules=[fsdp(mesh)])
    losses = [float(parallel(X, Y)) for _ in range(2)]
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(_values(vc), _values(ref_vc)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    w = vc['(Sequential)[0](Linear).w']
    assert w.value.sharding.is_fully_replicated and len(w.value.sharding.device_set) == 8
