"""Objax 1.8 reprs of the core classes (`objax.Class(constructor arguments)`) and the shared function format."""

import functools

import jax
import jax.numpy as jn

import objax
from objax._core.reprs import function_repr
from objax.privacy.dpsgd import PrivateGradValues


def myloss(x):
    return x.sum()


def test_function_format():
    assert function_repr(myloss) == 'myloss'
    assert function_repr(objax.nn.init.xavier_normal) == 'xavier_normal(*, gain=1)'
    assert function_repr(objax.functional.leaky_relu) == 'leaky_relu(*, negative_slope=0.01)'
    assert function_repr(functools.partial(objax.functional.leaky_relu, negative_slope=0.5)) == \
        'leaky_relu(*, negative_slope=0.5)'
    assert function_repr(jn.concatenate) == 'concatenate(*, axis=0, dtype=None)'
    assert function_repr(objax.GradValues(myloss, objax.VarCollection())) == 'GradValues'
    assert function_repr(jax.lax.tanh) == 'tanh(*, accuracy=None)'
    assert function_repr(lambda x, s='a': x) == '<lambda>(*, s=a)'  # values through str()


def test_variable_reprs():
    assert repr(objax.TrainVar(jn.zeros([1, 2, 3, 2, 1]))) == (
        'objax.TrainVar(Array([[[[[0.],\n          [0.]],\n         [[0.],\n          [0.]],\n'
        '         [[0.],\n          [0.]]],\n        [[[0.],\n          [0.]],\n         [[0.],\n'
        '          [0.]],\n         [[0.],\n          [0.]]]]], dtype=float32), reduce=reduce_mean)')
    assert repr(objax.StateVar(jn.arange(3))) == 'objax.StateVar(Array([0, 1, 2], dtype=int32), reduce=reduce_mean)'
    assert repr(objax.StateVar(jn.ones(1), reduce=None)) == 'objax.StateVar(Array([1.], dtype=float32))'
    t = objax.TrainVar(jn.ones(2))
    assert repr(objax.TrainRef(t)) == ('objax.TrainRef(ref=objax.TrainVar(Array([1., 1.], dtype=float32), '
                                       'reduce=reduce_mean))')
    assert repr(objax.RandomState(0)) == 'objax.RandomState(Array([0, 0], dtype=uint32))'
    big = objax.TrainVar(jn.zeros(2000))  # always the full value, never a shape summary
    assert repr(big) == f'objax.TrainVar({jn.zeros(2000)!r}, reduce=reduce_mean)'


def test_transform_reprs():
    vc = objax.VarCollection()
    grad = objax.Grad(myloss, vc, input_argnums=(0,))
    assert repr(grad) == 'objax.Grad(f=myloss, input_argnums=(0,))'
    gv = objax.GradValues(myloss, vc, input_argnums=(0,))
    assert repr(gv) == 'objax.GradValues(f=myloss, input_argnums=(0,))'
    assert repr(objax.GradValues(myloss, vc)) == 'objax.GradValues(f=myloss, input_argnums=None)'
    assert repr(objax.Jacobian(myloss, vc)) == 'objax.Jacobian(f=myloss, input_argnums=None)'
    assert repr(objax.Hessian(myloss, vc)) == 'objax.Hessian(f=myloss, input_argnums=None)'
    assert repr(objax.Jit(gv)) == 'objax.Jit(f=objax.GradValues(f=myloss, input_argnums=(0,)), static_argnums=None)'
    assert repr(objax.Jit(myloss, vc)) == 'objax.Jit(f=objax.Function(f=myloss), static_argnums=None)'
    assert repr(objax.Jit(myloss, vc, static_argnums=(1,))) == \
        'objax.Jit(f=objax.Function(f=myloss), static_argnums=(1,))'
    assert repr(objax.Parallel(myloss, vc)) == ('objax.Parallel(f=objax.Function(f=myloss), reduce=concatenate(*, '
                                                "axis=0, dtype=None), axis_name='device', static_argnums=None)")
    assert repr(objax.Parallel(myloss, vc, static_argnums=(2, 0))).endswith('static_argnums=(0, 2))')
    assert repr(objax.Vectorize(myloss, vc)) == 'objax.Vectorize(f=objax.Function(f=myloss), batch_axis=(0,))'
    assert repr(objax.Function(myloss, vc)) == 'objax.Function(f=myloss)'
    assert repr(objax.ForceArgs(gv, training=True, word='hello')) == \
        "objax.ForceArgs(module=GradValues, training=True, word='hello')"
    lin = objax.nn.Linear(2, 3)
    assert repr(objax.Grad(lin, None)) == f'objax.Grad(f={lin!r}, input_argnums=None)'
    assert repr(PrivateGradValues(myloss, vc, noise_multiplier=1.0, l2_norm_clip=0.5, microbatch=1)) == (
        'objax.privacy.dpsgd.gradient.PrivateGradValues(f=myloss, noise_multiplier=1.0, l2_norm_clip=0.5, '
        'microbatch=1, batch_axis=(0,))')


def test_module_and_module_list_reprs():
    assert repr(objax.Module()) == 'objax.Module()'

    class Mine(objax.Module):
        pass

    assert repr(Mine()) == f'{__name__}.test_module_and_module_list_reprs.<locals>.Mine()'
    inner = objax.ModuleList([objax.Module(), objax.functional.relu])
    outer = objax.ModuleList([inner, functools.partial(objax.functional.leaky_relu, negative_slope=0.5)])
    assert repr(outer) == ('objax.ModuleList(\n'
                           '  [0] objax.ModuleList(\n'
                           '    [0] objax.Module()\n'
                           '    [1] relu\n'
                           '  )\n'
                           '  [1] leaky_relu(*, negative_slope=0.5)\n'
                           ')')
