"""A fully connected network."""

from typing import Callable, Iterable

from objax.nn import Linear, Sequential

__all__ = ['DNNet']


class DNNet(Sequential):
    """Multi-layer perceptron: Linear layers of sizes layer_sizes[i] -> layer_sizes[i + 1], with `activation`
    between consecutive layers (none after the last). Input (..., layer_sizes[0]) -> (..., layer_sizes[-1])."""

    def __init__(self, layer_sizes: Iterable[int], activation: Callable):
        sizes = list(layer_sizes)
        if len(sizes) < 2:
            raise ValueError(f'DNNet: layer_sizes needs at least 2 sizes (input and output), got {sizes}')
        for s in sizes:
            if int(s) != s or s < 1:
                raise ValueError(f'DNNet: layer_sizes must hold positive integers, got {sizes}')
        if not callable(activation):
            raise TypeError(f'DNNet: activation must be callable, got {type(activation).__name__}')
        ops = []
        for nin, nout in zip(sizes[:-1], sizes[1:]):
            ops += [Linear(nin, nout), activation]
        super().__init__(ops[:-1])
