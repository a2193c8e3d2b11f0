"""Objax 1.8 module paths (`objax.variable`, `objax.nn.layers`, ...): each old path imports and exposes the very
same objects."""

import importlib

import pytest

import objax
import objax.functional as F
import objax.nn as nn
import objax.privacy.dpsgd as dpsgd
import objax.random as random
import objax.util as util


def test_variable_path():
    from objax.variable import BaseState, BaseVar, RandomState, StateVar, TrainRef, TrainVar, VarCollection
    assert objax.variable.VarCollection is objax.VarCollection
    assert (BaseState, BaseVar, RandomState, TrainRef, TrainVar, StateVar, VarCollection) == (
        objax.BaseState, objax.BaseVar, objax.RandomState, objax.TrainRef, objax.TrainVar, objax.StateVar,
        objax.VarCollection)
    with pytest.raises(AttributeError, match='NoSuchThing'):
        _ = objax.variable.NoSuchThing


def test_module_path():
    from objax.module import ForceArgs, Function, Jit, Module, ModuleList, Parallel, Vectorize
    assert (ForceArgs, Function, Jit, Module, ModuleList, Parallel, Vectorize) == (
        objax.ForceArgs, objax.Function, objax.Jit, objax.Module, objax.ModuleList, objax.Parallel, objax.Vectorize)
    assert {'Jit', 'Parallel', 'Vectorize'} <= set(objax.module.__all__)
    with pytest.raises(AttributeError):
        _ = objax.module.NoSuchThing


LAYERS = ['BatchNorm', 'BatchNorm0D', 'BatchNorm1D', 'BatchNorm2D', 'Conv2D', 'ConvTranspose2D', 'Dropout',
          'ExponentialMovingAverage', 'GroupNorm', 'GroupNorm0D', 'GroupNorm1D', 'GroupNorm2D', 'Linear',
          'MovingAverage', 'Sequential', 'SyncedBatchNorm', 'SyncedBatchNorm0D', 'SyncedBatchNorm1D',
          'SyncedBatchNorm2D']


@pytest.mark.parametrize('path, new, names', [
    ('objax.nn.layers', nn, LAYERS),
    ('objax.random.random', random,
     ['Generator', 'DEFAULT_GENERATOR', 'normal', 'uniform', 'randint', 'truncated_normal']),
    ('objax.util.tracing', util, ['find_used_variables']),
    ('objax.util.util', util,
     ['EasyDict', 'Renamer', 'args_indexes', 'class_name', 'dummy_context_mgr', 'get_local_devices', 'ilog2',
      'local_kwargs', 'map_to_device', 'multi_host_barrier', 'override_args_kwargs', 'positional_args_names',
      're_sign', 'repr_function', 'to_interpolate', 'to_padding', 'to_tuple', 'find_used_variables']),
    ('objax.functional.core.ops', F,
     ['dynamic_slice', 'flatten', 'interpolate', 'one_hot', 'pad', 'rsqrt', 'scan', 'stop_gradient', 'top_k',
      'upsample_2d', 'upscale_nn']),
    ('objax.functional.core.pooling', F,
     ['average_pool_2d', 'max_pool_2d', 'space_to_batch2d', 'batch_to_space2d', 'space_to_channel2d',
      'channel_to_space2d']),
    ('objax.functional.core.activation', F,
     ['celu', 'elu', 'leaky_relu', 'log_sigmoid', 'log_softmax', 'relu', 'selu', 'sigmoid', 'softmax', 'softplus',
      'swish', 'tanh', 'logsumexp']),
    ('objax.privacy.dpsgd.privacyaccountant', dpsgd, ['analyze_dp', 'analyze_renyi', 'convert_renyidp_to_dp']),
])
def test_old_paths(path, new, names):
    old = importlib.import_module(path)
    for name in names:
        assert getattr(old, name) is getattr(new, name), f'{path}.{name}'
        assert name in old.__all__, f'{name} missing from {path}.__all__'


def test_functional_core_package():
    core = importlib.import_module('objax.functional.core')
    assert core.ops is importlib.import_module('objax.functional.core.ops')
    assert core.pooling is importlib.import_module('objax.functional.core.pooling')
    assert core.activation is importlib.import_module('objax.functional.core.activation')
    assert core.max_pool_2d is F.max_pool_2d and core.relu is F.relu and core.top_k is F.top_k


def test_star_imports():
    for path in ['objax.variable', 'objax.module', 'objax.nn.layers', 'objax.random.random', 'objax.util.tracing',
                 'objax.util.util', 'objax.functional.core', 'objax.privacy.dpsgd.privacyaccountant']:
        namespace = {}
        exec(f'from {path} import *', namespace)
        module = importlib.import_module(path)
        for name in module.__all__:
            assert namespace[name] is getattr(module, name)
