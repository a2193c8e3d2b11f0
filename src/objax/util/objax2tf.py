"""Objax2Tf: an Objax module as a TensorFlow module (tf.Module), through jax.experimental.jax2tf."""

import functools
import importlib
import re
import types

import numpy as np

from objax import _state
from objax.module import Module
from objax.variable import TrainVar

__all__ = ['Objax2Tf']

_TF_CLASSES = {}


def _import_tensorflow():
    """(tensorflow, jax2tf), or an ImportError that says TensorFlow is needed."""
    try:
        tf = importlib.import_module('tensorflow')
        jax2tf = importlib.import_module('jax.experimental.jax2tf')
    except ImportError as e:
        raise ImportError(f'objax.util.Objax2Tf needs TensorFlow, which is not installed or cannot be imported '
                          f'({e}). Install it with `pip install tensorflow`; the module is converted through '
                          f'jax.experimental.jax2tf.') from e
    return tf, jax2tf


def _tf_name(name: str) -> str:
    """A TensorFlow-safe variable name made from an Objax name such as '(Linear).w'."""
    name = re.sub(r'[^A-Za-z0-9_.\-/]', '_', name).strip('_')
    return name if name and re.match(r'[A-Za-z0-9.]', name) else f'v{name}'


def _polymorphic_shape(x):
    """jax2tf polymorphic shape of a TF input whose static shape has unknown sizes (None when fully known):
    unknown leading axes share the symbol `b` (the batch), other unknown sizes get their own symbol."""
    shape = getattr(x, 'shape', None)
    if shape is None:
        return None
    dims = shape.as_list() if hasattr(shape, 'as_list') else list(shape)
    if dims is None or all(d is not None for d in dims):
        return None
    return '(' + ', '.join('b' if d is None and i == 0 else f'd{i}' if d is None else str(d)
                           for i, d in enumerate(dims)) + ')'


class Objax2Tf:
    """Wraps `module` as a tf.Module (instances are also tf.Module instances): its variables become tf.Variables
    (TrainVars trainable) and calling it runs the module converted with jax2tf, so it can be used in TensorFlow
    and saved with tf.saved_model.save. Needs TensorFlow; variable values are copied at construction."""

    def __new__(cls, module: Module):
        tf, _ = _import_tensorflow()
        if not issubclass(cls, tf.Module):
            key = (cls, tf.Module)
            if key not in _TF_CLASSES:
                namespace = {'__module__': cls.__module__, '__qualname__': cls.__qualname__, '__doc__': cls.__doc__}
                _TF_CLASSES[key] = types.new_class(cls.__name__, (cls, tf.Module), {},
                                                   lambda ns: ns.update(namespace))
            cls = _TF_CLASSES[key]
        return super().__new__(cls)

    def __init__(self, module: Module):
        tf, _ = _import_tensorflow()
        if not isinstance(module, Module):
            raise TypeError(f'Objax2Tf(module): module must be an objax.Module, got {type(module).__name__}')
        tf.Module.__init__(self)
        vc = module.vars()
        pure = _state.Pure(module, vc)  # pure(values, *args, **kwargs) -> (outputs, changes)
        storage = pure.variables
        names = vc.names()
        self.objax_variables = [tf.Variable(np.asarray(v.value), trainable=isinstance(v, TrainVar),
                                            name=_tf_name(names.get(id(v), f'var{i}')))
                                for i, v in enumerate(storage)]

        def call_module(values, *args, **kwargs):
            # Runs the module with its variables holding `values`; state changes (e.g. random keys) are dropped.
            return pure(list(values), *args, **kwargs)[0]

        self._call_module = call_module

    def __call__(self, *args, **kwargs):
        """Runs the converted module on TensorFlow inputs (unknown input sizes are made shape-polymorphic).
        Keyword arguments (such as training=False) are passed as Python values, fixed at conversion."""
        _, jax2tf = _import_tensorflow()
        shapes = [None] + [_polymorphic_shape(x) for x in args]
        call = functools.partial(self._call_module, **kwargs) if kwargs else self._call_module
        converted = jax2tf.convert(call, polymorphic_shapes=shapes)
        return converted(list(self.objax_variables), *args)
