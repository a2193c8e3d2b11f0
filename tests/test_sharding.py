"""objax.sharding: variables laid out on a mesh (FSDP, data + tensor parallel), Jit keeping those layouts,
optimizer slots following their variables; checked against single-device training on 8 CPU devices."""

import re

import jax
import jax.numpy as jn
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import objax
from objax.sharding import apply_rules, fsdp, get_spec, layout, make_mesh, set_spec, shard, unshard
from objax.util import make_global_batch

STEPS, SIZES, BATCH = 5, (16, 32, 24, 8), 32


def build(opt_class=objax.optimizer.Adam, ema=False, donate=True):
    """An MLP with fixed initial values, its optimizer and a jitted training step; returns (vc, step, batch)."""
    layers = [objax.nn.Linear(a, b) for a, b in zip(SIZES[:-1], SIZES[1:])]
    model = objax.nn.Sequential([layers[0], objax.functional.tanh, layers[1], objax.functional.tanh, layers[2]])
    rng = np.random.RandomState(0)
    for v in model.vars().subset(objax.TrainVar):
        v.assign(jn.asarray(rng.normal(size=v.value.shape).astype(np.float32) * 0.3))
    opt = opt_class(model.vars())
    gv = objax.GradValues(lambda x, y: ((model(x) - y) ** 2).mean(), model.vars())
    vc = model.vars() + opt.vars()
    averages = None
    if ema:
        averages = objax.optimizer.ExponentialMovingAverage(model.vars(), momentum=0.5)
        vc = vc + averages.vars()

    def train_op(x, y):
        grads, values = gv(x, y)
        opt(0.05, grads)
        if averages is not None:
            averages()
        return values[0]

    x = rng.normal(size=(BATCH, SIZES[0])).astype(np.float32)
    y = rng.normal(size=(BATCH, SIZES[-1])).astype(np.float32)
    return vc, objax.Jit(train_op, vc, donate=donate), (x, y)


def train(vc, step, batch):
    losses = [float(step(*batch)) for _ in range(STEPS)]
    return losses, [np.asarray(v) for v in vc.tensors()]


def _same(a, b, ndim: int) -> bool:
    return a.is_equivalent_to(b, ndim)


def reference(**kwargs):
    vc, step, batch = build(**kwargs)
    return train(vc, step, batch)


TENSOR_RULES = [('*[[]0](Linear).w', P(None, 'model')), ('*[[]0](Linear).b', P('model')),
                ('*[[]2](Linear).w', P('model', None)), (re.compile(r'\[4\]\(Linear\)\.w$'), P(None, 'model'))]


def test_fsdp_8way_equals_single_device():
    ref_losses, ref_values = reference()
    vc, step, batch = build()
    mesh = make_mesh({'data': 8})
    layouts = shard(vc, mesh, rules=[fsdp(mesh)])
    x, y = make_global_batch(batch, 'data', mesh=mesh)
    losses, values = train(vc, step, (x, y))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(vc.keys(), values, ref_values):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=name)
    # Each device holds 1/8 of every sharded variable, and so do the Adam slots of that variable.
    w0 = vc['(Sequential)[0](Linear).w']
    assert layouts['(Sequential)[0](Linear).w'].spec == P(None, 'data')  # (16, 32): its largest dimension
    sharded = [(n, v) for n, v in vc.items() if not isinstance(v, objax.TrainRef) and v.value.ndim
               and v.value.dtype == jn.float32]
    assert len(sharded) == 18  # 6 variables, their m and v
    for name, v in sharded:
        shards = v.value.addressable_shards
        assert len(shards) == 8 and len({s.device for s in shards}) == 8, name
        assert all(s.data.size * 8 == v.value.size for s in shards), (name, [s.data.shape for s in shards])
    adam = {n: v for n, v in vc.items() if n.startswith('(Adam)')}
    for i, name in enumerate([n for n, v in vc.items() if n.startswith('(Sequential)')]):
        spec = vc[name].value.sharding.spec
        assert adam[f'(Adam).m(ModuleList)[{i}]'].value.sharding.spec == spec
        assert adam[f'(Adam).v(ModuleList)[{i}]'].value.sharding.spec == spec
    assert vc['(Adam).step'].value.sharding.spec == P() and w0.value.sharding == layouts[
        '(Sequential)[0](Linear).w']


@pytest.mark.parametrize('donate', [True, False])
def test_data_and_tensor_parallel_2x4_equals_single_device(donate):
    ref_losses, ref_values = reference(ema=True)
    vc, step, batch = build(ema=True, donate=donate)
    mesh = make_mesh('data=2,model=4')
    layouts = shard(vc, mesh, rules=TENSOR_RULES)
    assert layouts['(Sequential)[0](Linear).w'].spec == P(None, 'model')
    assert layouts['(Sequential)[2](Linear).w'].spec == P('model')  # written as JAX writes it: no trailing None
    assert layouts['(Sequential)[4](Linear).w'].spec == P(None, 'model')
    assert layouts['(Sequential)[2](Linear).b'].spec == P()
    trained = [n for n, v in vc.items() if n.startswith('(Sequential)') and isinstance(v, objax.TrainVar)]
    slot = {n: i for i, n in enumerate(trained)}  # slot i of Adam and of the EMA tracks the i-th TrainVar
    assert layouts[f"(Adam).m(ModuleList)[{slot['(Sequential)[0](Linear).w']}]"].spec == P(None, 'model')
    assert layouts[f"(ExponentialMovingAverage).m(ModuleList)[{slot['(Sequential)[2](Linear).w']}]"].spec == P('model')
    x, y = make_global_batch(batch, 'data', mesh=mesh)
    assert x.sharding.spec == P('data') and x.addressable_shards[0].data.shape == (BATCH // 2, SIZES[0])
    losses, values = train(vc, step, (x, y))
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for name, a, b in zip(vc.keys(), values, ref_values):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0, err_msg=name)
    for name, v in vc.items():  # no drift after 5 steps, not even of a replicated bias XLA would rather split
        assert _same(v.value.sharding, layout(v), v.value.ndim), (name, v.value.sharding.spec, layout(v).spec)
    w = vc['(Sequential)[0](Linear).w'].value
    assert {s.data.shape for s in w.addressable_shards} == {(16, 8)}


def test_slots_follow_their_variable_not_the_rules():
    vc, _, _ = build(ema=True)
    mesh = make_mesh('data=2,model=4')
    # fsdp would split a slot of (Sequential)[0](Linear).w (16, 32) over 'data' on its own: slots skip rules.
    layouts = shard(vc, mesh, rules=TENSOR_RULES + [fsdp(mesh, 'data')])
    assert layouts['(Sequential)[2](Linear).b'].spec == P('data')  # fsdp took the variables left by the rules
    tracked = {'(Adam).m': '(Adam).train_vars', '(Adam).v': '(Adam).train_vars',
               '(ExponentialMovingAverage).m': '(ExponentialMovingAverage).refs'}
    checked = 0
    for name in layouts:
        prefix, _, index = name.partition('(ModuleList)')
        if prefix in tracked:
            var = vc[f'{tracked[prefix]}(ModuleList){index}']
            assert layouts[name].spec == layout(var).spec, name
            checked += 1
    assert checked == 18
    # A slot given its own spec keeps it.
    set_spec(vc['(Adam).m(ModuleList)[0]'], P('data'))
    assert shard(vc, mesh)['(Adam).m(ModuleList)[0]'].spec == P('data')


@pytest.mark.parametrize('opt_class', [objax.optimizer.Momentum, objax.optimizer.LARS])
def test_momentum_and_lars_slots_follow_their_variables(opt_class):
    ref_losses, ref_values = reference(opt_class=opt_class)
    vc, step, batch = build(opt_class=opt_class)
    mesh = make_mesh('data=2,model=4')
    layouts = shard(vc, mesh, rules=TENSOR_RULES)
    trained = [n for n, v in vc.items() if n.startswith('(Sequential)') and isinstance(v, objax.TrainVar)]
    name = f"({opt_class.__name__}).m(ModuleList)[{trained.index('(Sequential)[2](Linear).w')}]"
    assert layouts[name].spec == P('model')
    losses, values = train(vc, step, batch)  # a local batch: jit lays it out itself
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5, atol=1e-6)
    for a, b in zip(values, ref_values):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    assert _same(vc[name].value.sharding, layouts[name], 2)


def _compiled(step, *args):
    """The program a sharded Jit runs on a call with `args`, compiled: with donation on (the default), its
    donating jax.jit object lowered with the values it passes (its variables' values, placed in their layouts).
    Calls before and after check that this jax.jit object, and no other, is the one that runs, and that the
    lowered signature is the one it ran (no new compilation)."""
    assert step.donate
    step(*args)  # a first call brings the Jit up to date with the layouts `shard` gave (and compiles)
    assert step._call_donating._cache_size() == 1 and step._call._cache_size() == 0
    compiled = step._call_donating.lower(step._placed(step._pure.values()), *args).compile()
    step(*args)
    assert step._call_donating._cache_size() == 1 and step._call._cache_size() == 0
    return compiled


def _variables(step) -> list:
    """The distinct variables holding the data of a Jit's collection (a TrainRef counted once, as its TrainVar)."""
    return step._pure.variables


def _gathers(hlo: str) -> list:
    """Result shapes of the all-gather instructions of an HLO text."""
    return [tuple(int(d) for d in m.group(1).split(',') if d)
            for m in re.finditer(r'= \w+\[([\d,]*)\][^ ]* all-gather\(', hlo)]


def test_fsdp_step_gathers_only_parameters_once_and_returns_shards():
    vc, step, batch = build()
    mesh = make_mesh({'data': 8})
    shard(vc, mesh, rules=[fsdp(mesh)])
    compiled = _compiled(step, *make_global_batch(batch, 'data', mesh=mesh))
    params = [tuple(v.value.shape) for v in vc.subset(objax.TrainVar)]
    gathers = _gathers(compiled.as_text())
    # FSDP gathers each parameter (to use it whole in a layer), once; nothing else (no slot, no update).
    assert sorted(gathers) == sorted(params), gathers
    # What the step returns per device: 1/8 of every variable (all are sharded) and the scalar loss/counter.
    arrays = [v.value for v in _variables(step) if v.value.ndim]  # all but Adam's scalar step counter
    per_device = sum(x.addressable_shards[0].data.nbytes for x in arrays)
    assert per_device * 8 == sum(x.nbytes for x in arrays)
    # + counter + loss + the table of the 1 + 19 output buffers (8 bytes each)
    assert compiled.memory_analysis().output_size_in_bytes == per_device + 4 + 4 + 8 * (1 + len(_variables(step)))


def test_tensor_parallel_step_gathers_no_sharded_variable():
    vc, step, batch = build()
    mesh = make_mesh('data=2,model=4')
    layouts = shard(vc, mesh, rules=TENSOR_RULES)
    compiled = _compiled(step, *make_global_batch(batch, 'data', mesh=mesh))
    sharded = {tuple(v.value.shape) for n, v in vc.items() if not layouts.get(n, NamedSharding(mesh, P()))
               .is_fully_replicated and not isinstance(v, objax.TrainRef)}
    assert sharded and not set(_gathers(compiled.as_text())) & sharded
    per_device = sum(v.value.addressable_shards[0].data.nbytes for v in _variables(step))
    assert compiled.memory_analysis().output_size_in_bytes == per_device + 4 + 8 * (1 + len(_variables(step)))


def test_new_value_keeps_layout_even_when_computed_without_the_old_one():
    v = objax.StateVar(jn.zeros((16, 8)))
    vc = objax.VarCollection({'v': v})
    mesh = make_mesh({'data': 8})
    set_spec(v, P('data'))
    shard(vc, mesh)

    @objax.Function.with_vars(vc)
    def fill(x):
        v.value = jn.broadcast_to(x.sum(), (16, 8))  # nothing ties it to v's old layout

    step = objax.Jit(fill)
    step(jn.arange(3.))
    assert _same(v.value.sharding, NamedSharding(mesh, P('data')), 2)
    np.testing.assert_array_equal(np.asarray(v.value), np.full((16, 8), 3.))
    # A value assigned from outside (on one device) is laid out again when the step reads it.
    v.value = jn.ones((16, 8))
    step(jn.ones(2))
    assert _same(v.value.sharding, NamedSharding(mesh, P('data')), 2)
    # Plain jax.jit would have let it drift: the layouts come from objax, not from GSPMD's defaults.
    plain = jax.jit(lambda x: jn.broadcast_to(x.sum(), (16, 8)))(jn.ones(2))
    assert plain.sharding.is_fully_replicated


def test_specs_given_at_creation_rules_and_errors():
    mesh = make_mesh('data=2,model=4')
    a = set_spec(objax.TrainVar(jn.ones((8, 6))), P('model'))
    b = objax.TrainVar(jn.ones((4, 12)))
    c = objax.StateVar(jn.arange(6.))
    vc = objax.VarCollection({'net.a': a, 'net.b': b, 'stats.c': c})
    assert get_spec(a) == P('model') and get_spec(b) is None
    assert apply_rules(vc, [(re.compile(r'\.b$'), P(None, 'model')), ('stats.*', None), ('*', P('data'))]) == {
        'net.a': P('data'), 'net.b': P(None, 'model')}
    assert get_spec(c) is None  # matched by a rule giving no spec: stays replicated
    set_spec(a, P('model'))
    out = shard(vc, mesh)
    assert {k: s.spec for k, s in out.items()} == {'net.a': P('model'), 'net.b': P(None, 'model'), 'stats.c': P()}
    assert layout(a) == out['net.a'] and {s.data.shape for s in a.value.addressable_shards} == {(2, 6)}
    np.testing.assert_array_equal(np.asarray(b.value), np.ones((4, 12)))

    # Bad specs name the variable and change nothing.
    before = [x.sharding for x in vc.tensors()]
    with pytest.raises(ValueError, match=r'"net.b" \(shape \(4, 12\).*dimension 1 of size 12 does not divide among 8'):
        shard(vc, mesh, rules=[('net.b', P(None, ('data', 'model')))])
    assert get_spec(b) == P(None, 'model') and [x.sharding for x in vc.tensors()] == before
    with pytest.raises(ValueError, match=r'"net.a".*mesh has no axis \'rows\''):
        shard(vc, mesh, rules=[('net.a', P('rows'))])
    with pytest.raises(ValueError, match=r'rule for "stats.c": PartitionSpec .* 2 entries .* only 1 dimensions'):
        apply_rules(vc, [('stats.c', P(None, 'data'))])
    with pytest.raises(TypeError, match=r'rules\[0\]: expected \(glob or re.Pattern, PartitionSpec'):
        apply_rules(vc, [('net.a', 'model')])
    with pytest.raises(TypeError, match='reference; give the spec to the TrainVar'):
        set_spec(objax.TrainRef(a), P())
    explicit = jax.make_mesh((8,), ('data',), axis_types=(jax.sharding.AxisType.Explicit,))
    with pytest.raises(ValueError, match='must be of type Auto'):
        shard(vc, explicit)
    assert [x.sharding for x in vc.tensors()] == before

    unshard(vc)
    assert layout(a) is None and all(len(x.sharding.device_set) == 1 for x in vc.tensors())
    np.testing.assert_array_equal(np.asarray(c.value), np.arange(6.))


def test_make_mesh():
    m = make_mesh('data=2,model=-1')
    assert dict(m.shape) == {'data': 2, 'model': 4} and list(m.devices.flat) == jax.devices()
    assert dict(make_mesh({'x': 4}, devices=jax.devices()[:4]).shape) == {'x': 4}
    with pytest.raises(ValueError, match='need 6 devices, there are 8'):
        make_mesh('data=2,model=3')
    with pytest.raises(ValueError, match='expected "name=size'):
        make_mesh('data:2')
    with pytest.raises(ValueError, match="fsdp: the mesh has no axis 'rows'"):
        fsdp(m, 'rows')
    with pytest.raises(ValueError, match="make_global_batch: the mesh has no axis 'rows'"):
        make_global_batch(np.ones((8, 2)), 'rows', mesh=m)
    x = make_global_batch(np.arange(8.), 'model', mesh=m)  # split 4 ways over 'model', repeated over 'data'
    assert {s.data.shape for s in x.addressable_shards} == {(2,)} and x.sharding.spec == P('model')


def _mlp():
    model = objax.nn.Sequential([objax.nn.Linear(8, 16), objax.functional.relu, objax.nn.Linear(16, 8)])
    return model, model.vars()


def test_exact_variable_name_rule_matches_itself():
    # fnmatch alone reads "[2]" as a character class, so the name vars() prints would never match itself.
    model, vc = _mlp()
    layouts = shard(vc, make_mesh('data=2,model=4'), rules=[('(Sequential)[2](Linear).w', P('model', None))])
    assert layouts['(Sequential)[2](Linear).w'].spec == P('model')
    assert model[2].w.value.sharding.spec == P('model')
    assert layouts['(Sequential)[0](Linear).w'].spec == P()


def test_rule_that_matches_nothing_is_refused_and_changes_nothing():
    model, vc = _mlp()
    mesh = make_mesh('data=2,model=4')
    before = [v.value.sharding for v in vc]
    with pytest.raises(ValueError, match=re.escape("'*(Conv2D).w'")) as e:
        shard(vc, mesh, rules=[('*(Linear).w', P(None, 'model')), ('*(Conv2D).w', P('model'))])
    assert 'nothing was changed' in str(e.value)
    assert [get_spec(v) for v in vc] == [None] * 4
    assert [v.value.sharding for v in vc] == before
    with pytest.raises(ValueError, match='match no variable'):
        apply_rules(vc, [(re.compile('Embedding'), P('model'))])
    with pytest.warns(UserWarning, match=re.escape("'*(Conv2D).w'")):
        layouts = shard(vc, mesh, rules=[('*(Linear).w', P(None, 'model')), ('*(Conv2D).w', P('model'))],
                        strict=False)
    assert layouts['(Sequential)[0](Linear).w'].spec == P(None, 'model')


def test_spec_holding_an_int_is_a_clear_error_and_changes_nothing():
    model, vc = _mlp()
    mesh = make_mesh('data=2,model=4')
    with pytest.raises(ValueError, match=r"'\*\(Linear\).w'.*(P|PartitionSpec)\(1, None\) entry 0 is 1"):
        shard(vc, mesh, rules=[('*(Linear).w', P(1, None))])
    assert [get_spec(v) for v in vc] == [None] * 4
    assert shard(vc, mesh)['(Sequential)[0](Linear).w'].spec == P()  # later calls are not poisoned
    with pytest.raises(ValueError, match='entry 1'):
        set_spec(model[0].w, P(None, ('model', 2)))
    assert get_spec(model[0].w) is None


def test_trailing_none_layout_equals_what_jax_reports_and_compiles_once():
    model, vc = _mlp()
    opt = objax.optimizer.SGD(vc)
    traces = []
    gv = objax.GradValues(lambda x: (model(x) ** 2).mean(), vc)

    def train_op(x):
        traces.append(1)
        grads, values = gv(x)
        opt(0.01, grads)
        return values[0]

    step = objax.Jit(train_op, vc + opt.vars())
    shard(vc + opt.vars(), make_mesh('data=2,model=4'), rules=[('*(Linear).w', P('model', None))])
    w = model[0].w
    assert layout(w) == w.value.sharding  # the recorded layout is the one the value has
    x = jn.ones((4, 8))
    for _ in range(3):
        step(x)
        assert w.value.sharding == layout(w) and w.value.sharding.spec == P('model')
    assert len(traces) == 1
