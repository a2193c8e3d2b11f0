"""Objax2Tf: an Objax module as a TensorFlow module (tf.Module), run through jax.export and XlaCallModule."""

import importlib
import re
import types
from typing import Callable, List, Optional, Sequence, Tuple

import jax
import jax.export
import numpy as np

from objax._core.pure import Pure
from objax.module import Module
from objax.util import _tf_call
from objax.varcollection import VarCollection
from objax.variable import BaseVar, TrainVar

__all__ = ['Objax2Tf']

_PLATFORMS = ('cpu', 'cuda', 'rocm', 'tpu')
_TF_CLASSES = {}  # (user class, tf.Module) -> the class actually instantiated (a subclass of both)


def _import_tensorflow():
    """The tensorflow module, or an ImportError that says TensorFlow is needed."""
    try:
        tf = importlib.import_module('tensorflow')
        importlib.import_module('tensorflow.compiler.tf2xla.python.xla')  # the XlaCallModule op
    except ImportError as e:
        raise ImportError(f'objax.util.Objax2Tf needs TensorFlow, which is not installed or cannot be imported '
                          f'({e}). Install it with `pip install tensorflow` (or `pip install objax[tf]`); the '
                          f'module is exported with jax.export and run by TensorFlow\'s XlaCallModule op.') from e
    return tf


def _pure_call(module: Module, vc: VarCollection) -> Tuple[Callable, List[BaseVar]]:
    """(call, variables): `call(values, *args, **kwargs)` is `module(*args, **kwargs)` run with `variables[i]`
    holding `values[i]` (the distinct variables of `vc`, in `vc` order), as a pure function (objax's core
    primitive). The module's variables are left as they were: state changes made by the call (running
    statistics, random keys, recurrent states) are dropped."""
    pure = Pure(module, vc)

    def call(values, *args, **kwargs):
        return pure(values, *args, **kwargs)[0]

    return call, pure.variables


def _tf_name(name: str) -> str:
    """A TensorFlow-safe variable name made from an Objax name such as '(Linear).w'."""
    name = re.sub(r'[^A-Za-z0-9_.\-/]', '_', name).strip('_')
    return name if name and re.match(r'[A-Za-z0-9.]', name) else f'v{name}'


def _polymorphic_shape(x, index: int = 0):
    """The jax.export.symbolic_shape specification of the TF input number `index` (None when its static shape is
    fully known): an unknown leading size is the batch `b`, shared by all inputs; other unknown sizes get their
    own symbol."""
    shape = getattr(x, 'shape', None)
    if shape is None:
        return None
    dims = shape.as_list() if hasattr(shape, 'as_list') else list(shape)
    if dims is None or all(d is not None for d in dims):
        return None
    return '(' + ', '.join('b' if d is None and i == 0 else f'a{index}d{i}' if d is None else str(d)
                           for i, d in enumerate(dims)) + ')'


class Objax2Tf:
    """Wraps `module` as a tf.Module (instances are also tf.Module instances) that TensorFlow can call and save.

    The module's variables become tf.Variables, in `module.vars()` order (TrainVars trainable), listed in
    `objax_variables`; their values are copied at construction. `__call__` is a tf.function running the module
    exported with jax.export, serialized at the newest StableHLO version both the installed JAX writes and the
    installed TensorFlow reads, through TensorFlow's XlaCallModule op (differentiable by tf.GradientTape). So
    `m.__call__.get_concrete_function(tf.TensorSpec((None, 3, 32, 32), tf.float32))` gives a serving signature for
    tf.saved_model.save; sizes unknown in the input spec are symbolic dimensions. Needs TensorFlow.
    """

    def __new__(cls, module: Module, platforms: Optional[Sequence[str]] = None):
        tf = _import_tensorflow()
        if not issubclass(cls, tf.Module):
            key = (cls, tf.Module)
            if key not in _TF_CLASSES:
                namespace = {'__module__': cls.__module__, '__qualname__': cls.__qualname__, '__doc__': cls.__doc__,
                             '__call__': tf.function(cls.__call__, autograph=False)}
                _TF_CLASSES[key] = types.new_class(cls.__name__, (cls, tf.Module), {},
                                                   lambda ns: ns.update(namespace))
            cls = _TF_CLASSES[key]
        return super().__new__(cls)

    def __init__(self, module: Module, platforms: Optional[Sequence[str]] = None):
        """Copies the variables of `module` into tf.Variables.

        Args:
            module: the objax.Module to export; it is called with its variables set to the tf.Variables' values.
            platforms: the platforms the converted function (and a SavedModel of it) can run on, among 'cpu',
                'cuda', 'rocm' and 'tpu'; by default only the platform JAX runs on here.

        Raises:
            ImportError: TensorFlow is not installed.
            TypeError: `module` is not an objax.Module.
            ValueError: `platforms` names an unknown platform.
        """
        tf = _import_tensorflow()
        if not isinstance(module, Module):
            raise TypeError(f'Objax2Tf(module): module must be an objax.Module, got {type(module).__name__}')
        if platforms is not None:
            platforms = (platforms,) if isinstance(platforms, str) else tuple(platforms)
            unknown = [p for p in platforms if p not in _PLATFORMS]
            if unknown or not platforms:
                raise ValueError(f'Objax2Tf: platforms must be a non-empty sequence of {", ".join(_PLATFORMS)}; '
                                 f'got {platforms!r}')
        tf.Module.__init__(self)
        self._objax_platforms = platforms
        vc = module.vars()
        names = vc.names()
        self._objax_call, variables = _pure_call(module, vc)
        self.objax_variables = [tf.Variable(np.asarray(v.value), trainable=isinstance(v, TrainVar),
                                            name=_tf_name(names.get(id(v), f'variable{i}')))
                                for i, v in enumerate(variables)]

    def __call__(self, *args, **kwargs):
        """Runs the converted module on TensorFlow inputs.

        Args:
            *args: the module's inputs (tf.Tensor or arrays); sizes unknown when traced (None in a TensorSpec)
                become symbolic dimensions, an unknown leading size being the batch shared by all inputs.
            **kwargs: Python values (such as training=False), fixed in the traced function.

        Returns:
            The module's outputs as tf.Tensors.

        Raises:
            TypeError: a keyword argument is a tensor.
            RuntimeError: (a VersionMismatchError) the installed TensorFlow cannot run what the installed JAX
                writes (no StableHLO version in common, or a calling convention too new for XlaCallModule); the
                message names both versions and what to install.
        """
        tf = _import_tensorflow()
        for k, v in kwargs.items():
            if isinstance(v, (tf.Tensor, tf.Variable, np.ndarray)):
                raise TypeError(f'Objax2Tf: keyword argument {k!r} must be a Python value (it is fixed in the '
                                f'converted function), got a {type(v).__name__}; pass tensors positionally')
        values = [tf.convert_to_tensor(v) for v in self.objax_variables]
        args = [tf.convert_to_tensor(x) for x in args]
        scope = jax.export.SymbolicScope()
        specs = [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype.as_numpy_dtype) for v in values]
        for i, x in enumerate(args):
            spec = _polymorphic_shape(x, i)
            shape = tuple(x.shape) if spec is None else jax.export.symbolic_shape(spec, scope=scope)
            specs.append(jax.ShapeDtypeStruct(shape, x.dtype.as_numpy_dtype))
        call, nvalues = self._objax_call, len(values)

        def flat(*xs):
            return call(list(xs[:nvalues]), *xs[nvalues:], **kwargs)

        return _tf_call.call(flat, values + args, specs, self._objax_platforms)
