"""GRUCell and LSTMCell against numpy formulas and against PyTorch's GRUCell / LSTMCell."""

import jax
import jax.numpy as jn
import numpy as np
import pytest
from _references import gru_cell, lstm_cell, torch_layers

import objax
from objax.nn import GRUCell, LSTMCell

RNG = np.random.default_rng(7)


def _params(cell):
    return [np.asarray(v.value, np.float64) for v in cell.vars().values()]


@pytest.mark.parametrize('cls,gates', [(GRUCell, 3), (LSTMCell, 4)])
def test_variables_and_initialization(cls, gates):
    cell = cls(5, 16)
    name = cls.__name__
    assert list(cell.vars().keys()) == [f'({name}).w_ih', f'({name}).w_hh', f'({name}).b_ih', f'({name}).b_hh']
    assert [v.value.shape for v in cell.vars().values()] == [(5, gates * 16), (16, gates * 16), (gates * 16,),
                                                             (gates * 16,)]
    values = np.concatenate([np.ravel(v) for v in _params(cell)])
    assert np.abs(values).max() <= 0.25 and np.abs(values).max() > 0.24  # U(-1/sqrt(16), 1/sqrt(16))
    assert repr(cell) == f'objax.nn.{name}(nin=5, nout=16)'


def test_gru_matches_numpy_and_jit():
    cell = GRUCell(4, 6)
    x, h = RNG.normal(size=(3, 4)).astype(np.float32), RNG.normal(size=(3, 6)).astype(np.float32)
    want = gru_cell(x, h, *_params(cell))
    np.testing.assert_allclose(cell(jn.asarray(x), jn.asarray(h)), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(objax.Jit(cell)(x, h), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cell.initial_state(3), np.zeros((3, 6)))
    np.testing.assert_allclose(cell(jn.asarray(x), cell.initial_state(3)), gru_cell(x, 0 * h, *_params(cell)),
                               rtol=1e-5, atol=1e-6)


def test_lstm_matches_numpy_and_jit():
    cell = LSTMCell(4, 6)
    x = RNG.normal(size=(3, 4)).astype(np.float32)
    h, c = RNG.normal(size=(3, 6)).astype(np.float32), RNG.normal(size=(3, 6)).astype(np.float32)
    want_h, want_c = lstm_cell(x, h, c, *_params(cell))
    for got_h, got_c in (cell(jn.asarray(x), (jn.asarray(h), jn.asarray(c))), objax.Jit(cell)(x, (h, c))):
        np.testing.assert_allclose(got_h, want_h, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got_c, want_c, rtol=1e-5, atol=1e-6)
    h0, c0 = cell.initial_state(2)
    assert h0.shape == c0.shape == (2, 6) and not np.any(h0) and not np.any(c0)


def test_gradients_through_a_scanned_sequence():
    cell = GRUCell(3, 5)
    xs = jn.asarray(RNG.normal(size=(6, 2, 3)).astype(np.float32))

    def loss():
        h, _ = jax.lax.scan(lambda h, x: (cell(x, h), None), cell.initial_state(2), xs)
        return (h ** 2).sum()

    def formula(w_ih, w_hh, b_ih, b_hh):
        def step(h, x):
            gi, gh = x @ w_ih + b_ih, h @ w_hh + b_hh
            r = jax.nn.sigmoid(gi[:, :5] + gh[:, :5])
            z = jax.nn.sigmoid(gi[:, 5:10] + gh[:, 5:10])
            n = jn.tanh(gi[:, 10:] + r * gh[:, 10:])
            return (1 - z) * n + z * h, None
        h, _ = jax.lax.scan(step, jn.zeros((2, 5)), xs)
        return (h ** 2).sum()

    grads, _ = objax.GradValues(loss, cell.vars())()
    want = jax.grad(formula, (0, 1, 2, 3))(*cell.vars().tensors())
    for got, expected in zip(grads, want):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
        assert np.abs(expected).max() > 1e-3


def _load_torch(cell, prefix, data):
    """PyTorch's weight_ih (k nout, nin) / weight_hh / bias_ih / bias_hh into the cell: weights transposed."""
    cell.w_ih.assign(jn.asarray(data[f'{prefix}_weight_ih'].T))
    cell.w_hh.assign(jn.asarray(data[f'{prefix}_weight_hh'].T))
    cell.b_ih.assign(jn.asarray(data[f'{prefix}_bias_ih']))
    cell.b_hh.assign(jn.asarray(data[f'{prefix}_bias_hh']))


def test_gru_matches_pytorch():
    data = torch_layers()
    cell = GRUCell(8, 12)
    _load_torch(cell, 'gru', data)
    np.testing.assert_allclose(cell(data['rnn_x'], data['gru_h0']), data['gru_h1'], rtol=1e-5, atol=1e-6)
    h = data['gru_h0']
    for t, x in enumerate(data['rnn_x_seq']):
        h = cell(x, h)
        np.testing.assert_allclose(h, data['gru_h_seq'][t], rtol=1e-5, atol=1e-5)


def test_lstm_matches_pytorch():
    data = torch_layers()
    cell = LSTMCell(8, 12)
    _load_torch(cell, 'lstm', data)
    h, c = cell(data['rnn_x'], (data['lstm_h0'], data['lstm_c0']))
    np.testing.assert_allclose(h, data['lstm_h1'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, data['lstm_c1'], rtol=1e-5, atol=1e-6)
    state = (data['lstm_h0'], data['lstm_c0'])
    for t, x in enumerate(data['rnn_x_seq']):
        state = cell(x, state)
        np.testing.assert_allclose(state[0], data['lstm_h_seq'][t], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(state[1], data['lstm_c_seq'][t], rtol=1e-5, atol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match='nout must be a positive int'):
        GRUCell(3, 0)
    with pytest.raises(ValueError, match='nin must be a positive int'):
        LSTMCell(-1, 2)
    gru, lstm = GRUCell(3, 4), LSTMCell(3, 4)
    with pytest.raises(ValueError, match=r'x must have shape \(batch, nin=3\), got \(2, 5\)'):
        gru(jn.ones((2, 5)), jn.ones((2, 4)))
    with pytest.raises(ValueError, match=r'state h must have shape \(batch, nout\) = \(2, 4\), got \(2, 3\)'):
        gru(jn.ones((2, 3)), jn.ones((2, 3)))
    with pytest.raises(ValueError, match=r'state c must have shape'):
        lstm(jn.ones((2, 3)), (jn.ones((2, 4)), jn.ones((1, 4))))
    with pytest.raises(ValueError, match=r'state must be the pair \(h, c\)'):
        lstm(jn.ones((2, 3)), jn.ones((2, 4)))
    with pytest.raises(ValueError, match='batch must be a positive int'):
        gru.initial_state(0)
