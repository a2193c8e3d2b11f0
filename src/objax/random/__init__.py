"""objax.random: random key generators and the samplers that draw from them (Objax 1.8 path `objax.random`).

The implementation lives in `objax.random.random`, the module path Objax 1.8 exposed; this package re-exports it.
"""

from objax.random.random import DEFAULT_GENERATOR, Generator, normal, randint, truncated_normal, uniform

__all__ = ['Generator', 'DEFAULT_GENERATOR', 'normal', 'randint', 'truncated_normal', 'uniform']
