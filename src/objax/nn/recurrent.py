"""Recurrent cells: one step of a GRU or an LSTM, with PyTorch's gates in objax's weight layout."""

import math
from typing import Tuple

import jax
import jax.numpy as jn

from objax import random
from objax.functional._checks import positive_int
from objax.module import Module
from objax.nn._format import layer_repr
from objax.typing import JaxArray
from objax.variable import TrainVar

__all__ = ['GRUCell', 'LSTMCell']


def _gate_variables(owner: str, nin: int, nout: int, gates: int) -> tuple:
    """(nin, nout, w_ih, w_hh, b_ih, b_hh): w_ih (nin, gates * nout), w_hh (nout, gates * nout), b_ih and b_hh
    (gates * nout,), all drawn from U(-1/sqrt(nout), 1/sqrt(nout)) as PyTorch does."""
    nin = positive_int(owner, 'nin', nin)
    nout = positive_int(owner, 'nout', nout)
    bound = 1 / math.sqrt(nout)
    width = gates * nout
    return (nin, nout) + tuple(TrainVar(random.uniform(shape) * (2 * bound) - bound)
                               for shape in ((nin, width), (nout, width), (width,), (width,)))


def _check_step(owner: str, nin: int, nout: int, x: JaxArray, *state: JaxArray):
    """Refuses an x that is not (batch, nin) or a state (h, then c) that is not (batch, nout)."""
    shape = tuple(jn.shape(x))
    if len(shape) != 2 or shape[1] != nin:
        raise ValueError(f'{owner}: x must have shape (batch, nin={nin}), got {shape}')
    for name, s in zip(('h', 'c'), state):
        if tuple(jn.shape(s)) != (shape[0], nout):
            raise ValueError(f'{owner}: the state {name} must have shape (batch, nout) = {(shape[0], nout)}, '
                             f'got {tuple(jn.shape(s))}')


def _zeros(owner: str, batch: int, nout: int) -> JaxArray:
    return jn.zeros((positive_int(f'{owner}.initial_state', 'batch', batch), nout))


class GRUCell(Module):
    """One step of a gated recurrent unit, PyTorch's GRUCell: with gates r, z, n in this order along the columns,

        r = sigmoid(x w_ih[r] + b_ih[r] + h w_hh[r] + b_hh[r])
        z = sigmoid(x w_ih[z] + b_ih[z] + h w_hh[z] + b_hh[z])
        n = tanh(x w_ih[n] + b_ih[n] + r * (h w_hh[n] + b_hh[n]))
        h' = (1 - z) * n + z * h

    Variables, in vars() order: w_ih (nin, 3 nout), w_hh (nout, 3 nout), b_ih (3 nout,), b_hh (3 nout,): PyTorch's
    weight_ih, weight_hh, bias_ih, bias_hh, the weights transposed.
    """

    def __init__(self, nin: int, nout: int):
        """Creates the weights and biases, drawn from U(-1/sqrt(nout), 1/sqrt(nout)) as in PyTorch.

        Args:
            nin: number of input features, a positive int.
            nout: size of the hidden state, a positive int.

        Raises:
            ValueError: nin or nout not a positive int.
        """
        self.nin, self.nout, self.w_ih, self.w_hh, self.b_ih, self.b_hh = _gate_variables('GRUCell', nin, nout, 3)

    def initial_state(self, batch: int) -> JaxArray:
        """The zero state h.

        Args:
            batch: the batch size, a positive int.

        Returns:
            Zeros of shape (batch, nout).

        Raises:
            ValueError: batch not a positive int.
        """
        return _zeros('GRUCell', batch, self.nout)

    def __call__(self, x: JaxArray, state: JaxArray) -> JaxArray:
        """The next hidden state.

        Args:
            x: the step's input, (batch, nin).
            state: the hidden state h, (batch, nout).

        Returns:
            The next hidden state h', (batch, nout).

        Raises:
            ValueError: x or state of the wrong shape.
        """
        _check_step('GRUCell', self.nin, self.nout, x, state)
        gi = jn.dot(x, self.w_ih.value) + self.b_ih.value
        gh = jn.dot(state, self.w_hh.value) + self.b_hh.value
        ir, iz, i_n = jn.split(gi, 3, axis=-1)
        hr, hz, hn = jn.split(gh, 3, axis=-1)
        r = jax.nn.sigmoid(ir + hr)
        z = jax.nn.sigmoid(iz + hz)
        n = jn.tanh(i_n + r * hn)
        return (1 - z) * n + z * state

    def __repr__(self):
        return layer_repr(self, nin=self.nin, nout=self.nout)


class LSTMCell(Module):
    """One step of a long short-term memory, PyTorch's LSTMCell: with gates i, f, g, o in this order along the
    columns of gates = x w_ih + b_ih + h w_hh + b_hh,

        c' = sigmoid(f) * c + sigmoid(i) * tanh(g)
        h' = sigmoid(o) * tanh(c')

    Variables, in vars() order: w_ih (nin, 4 nout), w_hh (nout, 4 nout), b_ih (4 nout,), b_hh (4 nout,): PyTorch's
    weight_ih, weight_hh, bias_ih, bias_hh, the weights transposed.
    """

    def __init__(self, nin: int, nout: int):
        """Creates the weights and biases, drawn from U(-1/sqrt(nout), 1/sqrt(nout)) as in PyTorch.

        Args:
            nin: number of input features, a positive int.
            nout: size of the hidden and cell states, a positive int.

        Raises:
            ValueError: nin or nout not a positive int.
        """
        self.nin, self.nout, self.w_ih, self.w_hh, self.b_ih, self.b_hh = _gate_variables('LSTMCell', nin, nout, 4)

    def initial_state(self, batch: int) -> Tuple[JaxArray, JaxArray]:
        """The zero state (h, c).

        Args:
            batch: the batch size, a positive int.

        Returns:
            (h, c), zeros of shape (batch, nout) each.

        Raises:
            ValueError: batch not a positive int.
        """
        zeros = _zeros('LSTMCell', batch, self.nout)
        return zeros, zeros

    def __call__(self, x: JaxArray, state: Tuple[JaxArray, JaxArray]) -> Tuple[JaxArray, JaxArray]:
        """The next hidden and cell states.

        Args:
            x: the step's input, (batch, nin).
            state: the pair (h, c) of hidden and cell states, (batch, nout) each.

        Returns:
            The pair (h', c'), (batch, nout) each.

        Raises:
            ValueError: x or the states of the wrong shape, or state not a pair.
        """
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise ValueError(f'LSTMCell: state must be the pair (h, c), got {type(state).__name__}')
        h, c = state
        _check_step('LSTMCell', self.nin, self.nout, x, h, c)
        gates = jn.dot(x, self.w_ih.value) + self.b_ih.value + jn.dot(h, self.w_hh.value) + self.b_hh.value
        i, f, g, o = jn.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jn.tanh(g)
        return jax.nn.sigmoid(o) * jn.tanh(c), c

    def __repr__(self):
        return layer_repr(self, nin=self.nin, nout=self.nout)
