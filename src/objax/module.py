"""Objax 1.8 module path `objax.module`: Module, ModuleList, Function, ForceArgs and the transforms Jit,
Parallel and Vectorize."""

from objax._core.functions import Function
from objax._core.jit import Jit
from objax._core.modules import ForceArgs, Module, ModuleList
from objax._core.parallel import Parallel
from objax._core.vectorize import Vectorize

__all__ = ['Module', 'ModuleList', 'Function', 'ForceArgs', 'Jit', 'Parallel', 'Vectorize']
