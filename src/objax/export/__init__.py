"""Export for serving: a module (or function of its variables) as one file of serialized StableHLO and values
(jax.export), run later by `load` in a process that does not have the model's Python code."""

from objax.export.function import PLATFORMS, ExportedFunction, load, save

__all__ = ['save', 'load', 'ExportedFunction', 'PLATFORMS']
