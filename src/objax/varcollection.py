"""Module path `objax.varcollection`: VarCollection, a {name: variable} dictionary."""

from objax._core.collection import VarCollection

__all__ = ['VarCollection']
