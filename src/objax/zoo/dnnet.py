"""A fully connected network."""

from typing import Callable, Iterable

from objax.nn import Linear, Sequential

__all__ = ['DNNet']


class DNNet(Sequential):
    """Multi-layer perceptron (..., layer_sizes[0]) -> (..., layer_sizes[-1]).

    A Sequential `[Linear(s0, s1), activation, Linear(s1, s2), activation, ...]`: `activation` follows every
    Linear layer, the last one included (as in Objax 1.8), so a softmax activation gives probabilities.

    Args:
        layer_sizes: the widths [input, hidden..., output]; n sizes make n - 1 Linear layers.
        activation: function applied after each Linear layer (e.g. objax.functional.relu).

    Raises:
        ValueError: a size is not a positive integer.
        TypeError: `activation` is not callable.
    """

    def __init__(self, layer_sizes: Iterable[int], activation: Callable):
        sizes = list(layer_sizes)
        for s in sizes:
            if int(s) != s or s < 1:
                raise ValueError(f'DNNet: layer_sizes must hold positive integers, got {sizes}')
        if not callable(activation):
            raise TypeError(f'DNNet: activation must be callable, got {type(activation).__name__}')
        ops = []
        for nin, nout in zip(sizes[:-1], sizes[1:]):
            ops += [Linear(nin, nout), activation]
        super().__init__(ops)
