"""Objax 1.8 behaviour of the core: `reduce`, checked `assign`, `round` and item assignment of variables; the
names given by Function, `find_used_variables` and `vars()`; ForceArgs; the signatures and outputs of Grad and
GradValues; Vectorize's arity checks and Parallel's pytree arguments. Also: empty batches, bad arguments with clear
errors and pytree arguments for Vectorize, and variables that never hold weak-typed values. Each test checks the
spec's own example."""

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax

# reduce() stores reduce_fn(values) unchecked: the shape and dtype may change ------------------------------------

def test_reduce_is_unchecked_and_may_change_shape():
    v = objax.TrainVar(jn.array([[1., 2., 3.], [4., 5., 6.]]))
    v.reduce(v.value)
    assert v.shape == (3,)
    np.testing.assert_array_equal(v.value, [2.5, 3.5, 4.5])


def test_reduce_custom_function_and_dtype():
    s = objax.StateVar(jn.array([[0, 4, 2], [3, 1, 5]]), reduce=lambda x: x.min(0))
    s.reduce(s.value)
    np.testing.assert_array_equal(s.value, [0, 1, 2])
    counter = objax.StateVar(jn.array([1, 2], dtype=jn.int32))
    counter.reduce(jn.array([[1, 2], [2, 2]], dtype=jn.int32))  # the mean of integers is a float, as in 1.8
    assert counter.dtype == jn.float32
    np.testing.assert_array_equal(counter.value, [1.5, 2.])


def test_reduce_does_nothing_without_reduce_function():
    tv = objax.TrainVar(jn.array([[1., 2.], [3., 4.]]))
    objax.TrainRef(tv).reduce(jn.zeros((5, 7)))
    np.testing.assert_array_equal(tv.value, [[1., 2.], [3., 4.]])
    key = objax.RandomState(3)
    before = np.asarray(key.value)
    key.reduce(jn.zeros((4, 2), jn.uint32))
    np.testing.assert_array_equal(key.value, before)


# A failed checked assign is an AssertionError (and still a ValueError) ------------------------------------------

def test_failed_checked_assign_is_an_assertion_error():
    v = objax.TrainVar(jn.zeros(2))
    with pytest.raises(AssertionError):
        v.assign(jn.zeros(3))
    with pytest.raises(AssertionError, match='list'):
        v.assign([0, 1])
    with pytest.raises(ValueError):  # the project's ValueError contract holds too
        v.assign(jn.zeros(3))
    assert issubclass(objax.AssignmentError, ValueError) and issubclass(objax.AssignmentError, AssertionError)
    np.testing.assert_array_equal(v.value, [0., 0.])  # refused assigns change nothing
    v.assign(jn.ones(3), check=False)
    np.testing.assert_array_equal(v.value, [1., 1., 1.])


def test_assign_checks_shape_not_dtype():
    v = objax.TrainVar(jn.zeros(2))
    v.assign(jn.array([1, 2], dtype=jn.int32))
    assert v.dtype == jn.int32


def test_statevar_setter_checks_nothing():
    s = objax.StateVar(jn.array(0))
    s.value += 0.5
    assert float(s.value) == 0.5
    s.value = jn.zeros(3)
    assert s.shape == (3,)


def test_collection_assign_refusal_is_an_assertion_error():
    a, b = objax.TrainVar(jn.zeros(2)), objax.StateVar(jn.zeros(1))
    vc = objax.VarCollection({'a': a, 'b': b})
    with pytest.raises(AssertionError, match='b: .*shape'):
        vc.assign([jn.ones(2), jn.ones(2)])
    np.testing.assert_array_equal(a.value, [0., 0.])  # all or nothing


# round() on a variable ------------------------------------------------------------------------------------------

def test_round():
    x = jn.array([1.2, 2.4, 3.7, -4.5])
    v = objax.TrainVar(x)
    np.testing.assert_array_equal(round(v), round(x))
    np.testing.assert_array_equal(round(v), [1, 2, 4, -4])
    np.testing.assert_array_equal(v.__round__(ndigits=None), round(x))
    assert float(round(objax.StateVar(jn.array(2.345)), 1)) == pytest.approx(2.3)


# vc[name] = other_var refuses to rebind a name to a different variable ------------------------------------------

def test_setitem_refuses_to_rebind_a_name():
    a = objax.TrainVar(jn.zeros(1))
    vc = objax.VarCollection({'a': a})
    with pytest.raises(ValueError, match="'a'"):
        vc['a'] = objax.TrainVar(jn.ones(1))
    assert vc['a'] is a
    vc['a'] = a  # the same variable again is fine
    vc['b'] = objax.TrainVar(jn.ones(1))
    assert list(vc) == [a, vc['b']]


# No weak types: variables hold strong-typed values, so jitted steps compile once --------------------------------

def test_variables_never_hold_weak_typed_values():
    v = objax.TrainVar(0.0)
    assert v.value.dtype == jn.float32 and not v.value.weak_type
    s = objax.StateVar(jn.zeros(()))
    s.value = 1.0
    assert not s.value.weak_type
    s.assign(2.0)
    assert not s.value.weak_type
    v.assign(jn.asarray(3.0), check=False)
    assert not v.value.weak_type


def test_scalar_trainvar_optimizer_step_compiles_once():
    w = objax.TrainVar(0.0)
    traces = []

    def step(lr):
        traces.append(1)
        g = objax.Grad(lambda: (w.value - 3.) ** 2, objax.VarCollection({'w': w}))()
        w.assign(w.value - lr * g[0])

    jitted = objax.Jit(step, objax.VarCollection({'w': w}))
    for _ in range(3):
        jitted(jn.float32(0.1))
    assert len(traces) == 1
    assert not w.value.weak_type


# Function prefixes variable names with {function name} ----------------------------------------------------------

class ComplexModule(objax.Module):
    def __init__(self):
        self.v = objax.TrainVar(jn.arange(3.))

    def __call__(self, x):
        return x * self.v.value


def my_func(x, y, *, named=1):
    return x + y * named


def test_function_prefixes_names_with_function_name():
    m = ComplexModule()
    assert list(m.vars()) == [m.v] and list(m.vars().keys()) == ['(ComplexModule).v']
    f = objax.Function(my_func, m.vars())
    assert list(f.vars().keys()) == ['{my_func}(ComplexModule).v'] and f.vars()['{my_func}(ComplexModule).v'] is m.v
    assert list(f.vars('scope').keys()) == ['scope{my_func}(ComplexModule).v']
    assert list(objax.Function.with_vars(m.vars())(my_func).vars().keys()) == ['{my_func}(ComplexModule).v']
    assert list(objax.Function(lambda x: x, m.vars()).vars().keys()) == ['{<lambda>}(ComplexModule).v']
    import functools
    assert list(objax.Function(functools.partial(my_func, named=2), m.vars()).vars().keys()) == ['(ComplexModule).v']
    assert list(objax.Function(ComplexModule(), m.vars()).vars().keys()) == ['(ComplexModule).v']  # no __name__
    import inspect
    assert inspect.signature(f) == inspect.signature(my_func)


# ForceArgs: forced positional arguments, and undo on the root ---------------------------------------------------

class TwoArgs(objax.Module):
    def __init__(self):
        self.w = objax.TrainVar(jn.array([2.]))

    def __call__(self, x, some_arg1, some_arg2=0.):
        return x * self.w.value + some_arg1 * 10 + some_arg2 * 100


def test_force_args_overrides_positional_arguments():
    x = jn.ones(1)
    op = objax.ForceArgs(TwoArgs(), some_arg1=-1.0)
    np.testing.assert_allclose(op(x, 5.0), [2. - 10.])  # the positional 5.0 is replaced
    np.testing.assert_allclose(op(x, 5.0, 1.0), [2. - 10. + 100.])
    np.testing.assert_allclose(op(x, some_arg1=5.0), [2. - 10.])  # keywords are overridden too
    np.testing.assert_allclose(objax.ForceArgs(TwoArgs(), some_arg2=3.0)(x, 1.0, 7.0), [2. + 10. + 300.])

    def star(*args, some_arg1=0.):  # *args: nothing positional to replace, the forced name goes by keyword
        return args, some_arg1
    assert objax.ForceArgs(star, some_arg1=4.)(1, 2) == ((1, 2), 4.)


def test_force_args_undo_on_root():
    model = TwoArgs()
    x = jn.ones(1)
    want = model(x, some_arg1=0.0, some_arg2=0.0)
    wrapped = objax.ForceArgs(model, some_arg1=-1.0)
    objax.ForceArgs.undo(wrapped, some_arg1=1.0)  # another value: kept
    assert wrapped.forced_kwargs == {'some_arg1': -1.0}
    objax.ForceArgs.undo(wrapped)
    assert isinstance(wrapped, objax.ForceArgs) and wrapped.forced_kwargs == {}
    np.testing.assert_array_equal(wrapped(x, some_arg1=0.0, some_arg2=0.0), want)
    wrapped = objax.ForceArgs(model, some_arg1=-1.0, some_arg2=2.0)
    objax.ForceArgs.undo(wrapped, some_arg2=objax.ForceArgs.ANY)
    assert wrapped.forced_kwargs == {'some_arg1': -1.0}


# vars() names of wrapped modules and of transforms --------------------------------------------------------------

def test_wrapped_attribute_is_named_without_attribute_name():
    class Wrapper(objax.Module):
        def __init__(self, inner):
            self.__wrapped__ = inner
            self.extra = objax.StateVar(jn.zeros(1))

    lin = objax.nn.Linear(2, 3)
    names = list(Wrapper(lin).vars().keys())
    assert names == [f'(Wrapper){k}' for k in lin.vars().keys()] + ['(Wrapper).extra']
    assert list(Wrapper(lin).vars('s').keys()) == [f's(Wrapper){k}' for k in lin.vars().keys()] + ['s(Wrapper).extra']


def test_ema_module_wraps_under_the_wrapped_rule():
    seq = objax.nn.Sequential([objax.nn.Linear(2, 3)])
    ema = objax.optimizer.ExponentialMovingAverageModule(seq)
    names = list(ema.vars().keys())
    wrapped = [f'(ExponentialMovingAverageModule){k}' for k in seq.vars().keys()]
    assert '(ExponentialMovingAverageModule)(Sequential)[0](Linear).b' in wrapped
    assert names[:len(wrapped)] == wrapped
    assert all(k.startswith('(ExponentialMovingAverageModule).ema(ExponentialMovingAverage).')
               for k in names[len(wrapped):]) and len(names) > len(wrapped)


def test_module_list_collects_only_its_items():
    lst = objax.ModuleList([objax.TrainVar(jn.zeros(1))])
    lst.attribute = objax.TrainVar(jn.zeros(2))
    assert list(lst.vars().keys()) == ['(ModuleList)[0]']


def test_transforms_name_variables_after_the_wrapped_module():
    lin = objax.nn.Linear(2, 3)
    names = list(lin.vars().keys())
    assert sorted(names) == ['(Linear).b', '(Linear).w']
    assert list(objax.Jit(lin).vars().keys()) == [f'(Jit){k}' for k in names]
    other = objax.VarCollection({'x': objax.TrainVar(jn.zeros(1))}) + lin.vars()
    assert list(objax.Jit(lin, other).vars().keys()) == [f'(Jit){k}' for k in names]  # from the module
    assert list(objax.Vectorize(lin).vars().keys()) == [f'(Vectorize){k}' for k in names]
    assert list(objax.Parallel(lin).vars('top').keys()) == [f'top(Parallel){k}' for k in names]

    def loss_fn(x):
        return lin(x).sum()
    assert list(objax.Jit(loss_fn, lin.vars()).vars().keys()) == [f'(Jit){{loss_fn}}{k}' for k in names]
    assert list(objax.Vectorize(loss_fn, lin.vars()).vars().keys()) == [f'(Vectorize){{loss_fn}}{k}' for k in names]
    # ForceArgs and the gradients report their collection's names unchanged.
    assert list(objax.ForceArgs(lin, x=1).vars().keys()) == names
    for transform in (objax.Grad, objax.GradValues, objax.Jacobian, objax.Hessian):
        assert list(transform(loss_fn, lin.vars()).vars().keys()) == names


def test_private_grad_values_names():
    from objax.privacy.dpsgd import PrivateGradValues
    lin = objax.nn.Linear(2, 1)
    keygen = objax.random.Generator(5)

    def loss(x):
        return lin(x).mean()

    gv = PrivateGradValues(loss, lin.vars(), noise_multiplier=1.0, l2_norm_clip=0.5, microbatch=1, keygen=keygen)
    names = list(gv.vars().keys())
    key_names = list(keygen.vars('(PrivateGradValues).keygen').keys())
    assert names == [f'(PrivateGradValues){k}' for k in lin.vars().keys()] + key_names
    assert len(key_names) == 1 and key_names[0].startswith('(PrivateGradValues).keygen(Generator).')
    assert gv.vars()[key_names[0]] is keygen.vars()[list(keygen.vars().keys())[0]]


# Signatures of Grad and GradValues ------------------------------------------------------------------------------

def test_grad_signatures():
    import inspect
    from typing import Dict, List, Tuple

    from objax.typing import JaxArray

    def f(x: JaxArray, y) -> Tuple[JaxArray, Dict[str, JaxArray]]:
        return x.sum(), {}

    vc = objax.VarCollection()
    x_param = inspect.Parameter('x', inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=JaxArray)
    y_param = inspect.Parameter('y', inspect.Parameter.POSITIONAL_OR_KEYWORD)
    assert inspect.signature(objax.Grad(f, vc)) == inspect.Signature([x_param, y_param],
                                                                     return_annotation=List[JaxArray])
    assert inspect.signature(objax.GradValues(f, vc)) == inspect.Signature(
        [x_param, y_param], return_annotation=Tuple[List[JaxArray], Tuple[JaxArray, Dict[str, JaxArray]]])
    for cls in (objax.Grad, objax.GradValues):  # the classes keep their constructor signature
        assert list(inspect.signature(cls).parameters)[:3] == ['f', 'variables', 'input_argnums']


# GradValues returns f's outputs as f returned them --------------------------------------------------------------

def test_grad_values_returns_outputs_as_f_returned_them():
    w = objax.TrainVar(jn.array([1., 2.]))
    vc = objax.VarCollection({'w': w})
    _, out = objax.GradValues(lambda: ((w.value ** 2).sum(), w.value[0]), vc)()
    assert isinstance(out, tuple) and len(out) == 2 and float(out[0]) == 5. and float(out[1]) == 1.
    _, out = objax.GradValues(lambda: [(w.value ** 2).sum()], vc)()
    assert isinstance(out, list) and float(out[0]) == 5.
    grads, out = objax.GradValues(lambda: (w.value ** 2).sum(), vc)()
    assert isinstance(out, list) and len(out) == 1 and float(out[0]) == 5.
    np.testing.assert_allclose(grads[0], [2., 4.])


# Vectorize arguments: arity checks, empty batches, clear errors for bad arguments, pytrees ----------------------

def _linear_and_state():
    f = objax.nn.Linear(3, 2)
    counter = objax.StateVar(jn.zeros(()))
    gen = objax.random.Generator(7)

    def g(x):
        counter.value = counter.value + 1
        return f(x[None])[0] + objax.random.normal((), generator=gen)

    return f, counter, gen, g, f.vars() + objax.VarCollection({'counter': counter}) + gen.vars()


def test_vectorize_declared_arity_is_checked_at_construction():
    f = objax.nn.Linear(3, 2)
    with pytest.raises(AssertionError, match='declares 2 positional parameters'):
        objax.Vectorize(lambda x, y: f(x) + y, f.vars(), batch_axis=(0,))
    with pytest.raises(ValueError):
        objax.Vectorize(lambda x, y: f(x) + y, f.vars(), batch_axis=(0,))
    objax.Vectorize(lambda x, y: f(x) + y, f.vars(), batch_axis=(0, None))  # enough axes: fine
    with pytest.raises(AssertionError, match='declares 3 positional parameters'):  # a module: its __call__
        objax.Vectorize(TwoArgs(), batch_axis=(0,))
    objax.Vectorize(TwoArgs(), batch_axis=(0, None, None))
    # Arguments a ForceArgs always gives need no batch axis.
    forced = objax.Vectorize(objax.ForceArgs(TwoArgs(), some_arg1=1., some_arg2=0.), batch_axis=(0,))
    np.testing.assert_allclose(forced(jn.arange(3.)), (2 * np.arange(3.) + 10)[:, None])


def test_vectorize_argument_count_is_checked_at_call():
    f = objax.nn.Linear(3, 2)
    x, c = jn.ones((4, 3)), jn.ones(2)
    v = objax.Vectorize(lambda *a: f(a[0]) + a[1], f.vars(), batch_axis=(0,))  # *args declares none
    with pytest.raises(AssertionError, match='got 2 positional arguments'):
        v(x, c)
    np.testing.assert_allclose(objax.Vectorize(lambda *a: f(a[0]) + a[1], f.vars(), batch_axis=(0, None))(x, c),
                               f(x) + c, rtol=1e-6)


def test_vectorize_empty_batch_is_refused_and_state_untouched():
    _, counter, gen, g, vc = _linear_and_state()
    key = np.asarray(gen.key.value)
    v = objax.Vectorize(g, vc)
    with pytest.raises(ValueError, match='empty batch'):
        v(jn.zeros((0, 3)))
    assert float(counter.value) == 0 and np.array_equal(gen.key.value, key)
    v(jn.zeros((4, 3)))
    assert float(counter.value) == 1  # mean of the per-example new values


@pytest.mark.parametrize('args, batch_axis, message', [
    ((jn.zeros((4, 3)),), (2,), r'argument 0 is of shape \(4, 3\), which has no batch axis 2'),
    ((jn.zeros((4, 3)),), (-3,), 'no batch axis -3'),
    ((jn.float32(1.),), (0,), 'argument 0 is a scalar, which has no batch axis 0'),
    (({'a': jn.zeros((4, 3)), 'b': jn.float32(1.)},), (0,), r"argument 0\['b'\] is a scalar"),
    ((jn.zeros((4, 3)), jn.zeros((5, 3))), (0, 0), r'disagree on the batch size \(argument 0: 4, argument 1: 5\)'),
    (({},), (0,), 'holds no array'),
])
def test_vectorize_bad_arguments_get_clear_errors(args, batch_axis, message):
    _, counter, gen, _, vc = _linear_and_state()
    key = np.asarray(gen.key.value)
    v = objax.Vectorize(lambda *a: jax.tree.leaves(a)[0].sum() + objax.random.normal((), generator=gen), vc,
                        batch_axis=batch_axis)
    with pytest.raises(ValueError, match=message):
        v(*args)
    assert np.array_equal(gen.key.value, key)  # nothing changed


def test_vectorize_bad_batch_axis_entries():
    with pytest.raises(TypeError, match="entries must be ints or None, got '0'"):
        objax.Vectorize(lambda x: x, objax.VarCollection(), batch_axis=('0',))
    with pytest.raises(TypeError, match='expected a tuple'):
        objax.Vectorize(lambda x: x, objax.VarCollection(), batch_axis=0)


def test_vectorize_pytree_arguments_with_a_random_state():
    f, _, gen, _, vc = _linear_and_state()
    x1, x2 = jn.arange(12.).reshape(4, 3), jn.arange(4.)

    def pair(t):
        return f(t[0][None])[0] + t[1] + 0 * objax.random.normal((), generator=gen)

    np.testing.assert_allclose(objax.Vectorize(pair, vc)((x1, x2)), f(x1) + x2[:, None], rtol=1e-6)
    as_dict = objax.Vectorize(lambda d: f(d['x'][None])[0] * d['s'], f.vars())
    np.testing.assert_allclose(as_dict({'x': x1, 's': x2}), f(x1) * x2[:, None], rtol=1e-6)


# Parallel takes pytree arguments of arrays with different shapes ------------------------------------------------

def test_parallel_list_argument_of_arrays_with_different_shapes():
    f = objax.nn.Linear(3, 2)
    ndev = jax.device_count()
    x1 = jn.arange(96 * 3, dtype=jn.float32).reshape(96, 3) / 100
    x2 = jn.arange(96, dtype=jn.float32)

    def g(x):
        return f(x[0]) + x[1][:, None]

    out = objax.Parallel(g, vc=f.vars())([x1, x2])
    np.testing.assert_allclose(out, g([x1, x2]), rtol=1e-5)
    assert out.shape == (96, 2) and ndev == 8
    tup = objax.Parallel(lambda t: f(t['a']) * t['b'][:, None], vc=f.vars())({'a': x1, 'b': x2})
    np.testing.assert_allclose(tup, f(x1) * x2[:, None], rtol=1e-5)


# find_used_variables names variables after the Python expressions that reach them -------------------------------

SEQ = objax.nn.Sequential([objax.nn.Conv2D(1, 2, 3), objax.nn.BatchNorm2D(2)])
GLOBAL_COUNTER = objax.StateVar(jn.zeros(()))


class _Holder:
    pass


HOLDER = _Holder()
HOLDER.lin = objax.nn.Linear(2, 2)
HOLDER.scale = objax.TrainVar(jn.ones(()))


def test_find_used_variables_names_after_python_expressions():
    from objax.util import find_used_variables

    def make_closure():
        m = objax.nn.Sequential([objax.nn.Conv2D(1, 2, 3), objax.nn.BatchNorm2D(2)])
        return m, (lambda x: m(x, training=True))

    m, closure = make_closure()
    vc = find_used_variables(closure)
    assert list(vc.keys()) == ['m.' + k for k in m.vars().keys()]  # the order of m.vars() (1.8's creation order: b, w)
    assert {'m.(Sequential)[0](Conv2D).w', 'm.(Sequential)[0](Conv2D).b', 'm.(Sequential)[1](BatchNorm2D).running_mean',
            'm.(Sequential)[1](BatchNorm2D).running_var', 'm.(Sequential)[1](BatchNorm2D).beta',
            'm.(Sequential)[1](BatchNorm2D).gamma'} == set(vc.keys())
    assert vc['m.(Sequential)[1](BatchNorm2D).running_mean'] is m[1].running_mean

    def make_model():
        model = objax.zoo.dnnet.DNNet((3, 4, 2), objax.functional.relu)
        return model, (lambda x: model(x))

    model, lam = make_model()
    names = list(find_used_variables(lam).keys())
    assert names == ['model.' + k for k in model.vars().keys()] and 'model.(DNNet)[0](Linear).b' in names

    def uses_everything(x):
        g = lambda y: SEQ(y, training=False)  # noqa: E731 (a module reached inside a nested lambda)
        return g(x).sum() + HOLDER.lin(x[:, 0, 0, :2]).sum() * HOLDER.scale + GLOBAL_COUNTER.value

    vc = find_used_variables(uses_everything)
    assert list(vc.keys()) == (['SEQ.' + k for k in SEQ.vars().keys()] +
                               ['HOLDER.lin.' + k for k in HOLDER.lin.vars().keys()] +
                               ['HOLDER.scale', 'GLOBAL_COUNTER'])
    assert vc['HOLDER.scale'] is HOLDER.scale and vc['GLOBAL_COUNTER'] is GLOBAL_COUNTER


def test_auto_vars_adds_the_function_prefix():
    def make():
        m = ComplexModule()

        def my_func(x):
            return m(x)

        return m, my_func

    m, my_func = make()
    f = objax.Function.auto_vars(my_func)
    assert list(f.vars().keys()) == ['{my_func}m.(ComplexModule).v'] and f.vars()['{my_func}m.(ComplexModule).v'] is m.v
