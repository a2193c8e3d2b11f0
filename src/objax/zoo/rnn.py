"""A simple (Elman) recurrent network with a Linear read-out."""

from typing import Callable

import jax
import jax.numpy as jn

from objax.module import Module
from objax.nn import Linear
from objax.nn.init import kaiming_normal
from objax.typing import JaxArray
from objax.variable import StateVar, TrainVar

__all__ = ['RNN']


class RNN(Module):
    """h_t = activation(x_t . w_xh + h_{t-1} . w_hh + b_h), y_t = output_layer(h_t).

    The hidden state (batch, nstate) lives in the StateVar `state`, which `init_state(batch_size)` creates
    (as in Objax 1.8 there is none before, so `vars()` lists only the weights); it carries over between calls.
    A state of batch 1 is broadcast to the batch of the inputs.

    Args:
        nstate: size of the hidden state.
        nin: number of input features per step.
        nout: number of output features per step (the width of the Linear read-out).
        activation: the nonlinearity of the state update (default tanh).
        w_init: initializer called with a shape, e.g. (nin, nstate), for `w_xh` and `w_hh` (default kaiming_normal).

    Raises:
        ValueError: `nstate`, `nin` or `nout` is not a positive integer.
    """

    def __init__(self, nstate: int, nin: int, nout: int, activation: Callable = jn.tanh,
                 w_init: Callable = kaiming_normal):
        for name, value in (('nstate', nstate), ('nin', nin), ('nout', nout)):
            if int(value) != value or value < 1:
                raise ValueError(f'RNN: {name} must be a positive integer, got {value!r}')
        self.nstate, self.num_inputs, self.num_outputs = nstate, nin, nout
        self.activation = activation
        self.w_xh = TrainVar(w_init((nin, nstate)))
        self.w_hh = TrainVar(w_init((nstate, nstate)))
        self.b_h = TrainVar(jn.zeros(nstate))
        self.output_layer = Linear(nstate, nout)

    def init_state(self, batch_size: int):
        """Creates a new StateVar `state` holding zeros of shape (batch_size, nstate).

        Modules (transforms, optimizers) built before keep the previous state variable, as in Objax 1.8.

        Args:
            batch_size: the batch of the inputs the state will be used with (1 broadcasts to any batch).

        Raises:
            ValueError: `batch_size` is not a positive integer.
        """
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f'RNN.init_state: batch_size must be a positive integer, got {batch_size!r}')
        self.state = StateVar(jn.zeros((int(batch_size), self.nstate)))

    def __call__(self, inputs: JaxArray, only_return_final: bool = False) -> JaxArray:
        """Runs the network over a sequence, starting from `state` and leaving the last hidden state in it.

        Args:
            inputs: the sequence, shape (steps, batch, nin).
            only_return_final: return only the output of the last step.

        Returns:
            The outputs of every step stacked step after step, shape (steps * batch, nout), or with
            `only_return_final` the last step's, shape (batch, nout).

        Raises:
            ValueError: `inputs` is not (steps, batch, nin), `init_state` was never called, or the state's batch is
                neither 1 nor the inputs' batch.
        """
        if inputs.ndim != 3 or inputs.shape[2] != self.num_inputs:
            raise ValueError(f'RNN expects inputs of shape (steps, batch, {self.num_inputs}), '
                             f'got {tuple(inputs.shape)}')
        if 'state' not in self.__dict__:
            raise ValueError(f'RNN has no state yet: call init_state({inputs.shape[1]}) first')
        state = self.state.value
        if state.shape[0] == 1 and inputs.shape[1] != 1:
            state = jn.broadcast_to(state, (inputs.shape[1], self.nstate))
        elif state.shape[0] != inputs.shape[1]:
            raise ValueError(f'RNN state holds a batch of {state.shape[0]} but inputs have a batch of '
                             f'{inputs.shape[1]}: call init_state({inputs.shape[1]}) first')
        w_xh, w_hh, b_h = self.w_xh.value, self.w_hh.value, self.b_h.value

        def step(h, x):
            h = self.activation(jn.dot(x, w_xh) + jn.dot(h, w_hh) + b_h)
            return h, h

        final, states = jax.lax.scan(step, state, inputs)
        self.state.assign(final, check=False)  # a batch-1 state may have been broadcast
        if only_return_final:
            return self.output_layer(final)
        return self.output_layer(states.reshape((-1, self.nstate)))
