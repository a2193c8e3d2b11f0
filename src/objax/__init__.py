"""objax: the Objax programming model (Variables, Modules, VarCollections, module transforms) on today's JAX."""

from objax import random, sharding, typing
from objax._core.control_flow import Cond, ForiLoop, Scan, WhileLoop
from objax._core.frames import VariableOutsideCollectionError, VariableOutsideCollectionWarning
from objax._core.remat import Remat
from objax.constants import ConvPadding, Interpolate
from objax.gradient import Grad, GradValues, Hessian, Jacobian
from objax.io import UnreadableFileError
from objax.jit import Jit
from objax.module import ForceArgs, Function, Module, ModuleList
from objax.parallel import Parallel
from objax.varcollection import VarCollection
from objax.variable import AssignmentError, BaseState, BaseVar, RandomState, StateVar, TrainRef, TrainVar, reduce_mean
from objax.vectorize import Vectorize

__version__ = '2.0.0.dev0'

__all__ = ['AssignmentError', 'BaseVar', 'BaseState', 'TrainVar', 'StateVar', 'TrainRef', 'RandomState',
           'reduce_mean', 'VarCollection', 'Module', 'ModuleList', 'Function', 'ForceArgs', 'Jit', 'Grad',
           'GradValues', 'Jacobian', 'Hessian', 'Vectorize', 'Parallel', 'Remat', 'Scan', 'Cond', 'WhileLoop',
           'ForiLoop', 'ConvPadding', 'Interpolate', 'random', 'sharding', 'typing',
           'VariableOutsideCollectionError', 'VariableOutsideCollectionWarning', 'UnreadableFileError']


def __getattr__(name):
    # The one lazy loader of the package: subpackages load on first use (objax.nn, objax.optimizer...), so that
    # `import objax` stays quick and the core never imports them.
    import importlib
    if name in _SUBPACKAGES:
        return importlib.import_module(f'objax.{name}')
    raise AttributeError(f'module objax has no attribute {name!r}')


_SUBPACKAGES = ('nn', 'functional', 'optimizer', 'io', 'privacy', 'zoo', 'util', 'jaxboard', 'export')
