"""Reference formulas in plain numpy (float64, explicit loops where it keeps them obvious) for the layer tests."""

import pathlib

import numpy as np


def softmax(z, axis=-1):
    z = z - z.max(axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis, keepdims=True)


def attention(q, k, v, mask=None, scale=None, bias=None):
    """q (B, T, H, D), k/v (B, S, K, D) with K dividing H; mask broadcastable to (B, H, T, S), True = attend.

    Loops over batch and heads; masked logits are dropped from the softmax (never a fully masked row here).
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, t, h, d = q.shape
    s, kh = k.shape[1], k.shape[2]
    scale = 1 / np.sqrt(d) if scale is None else scale
    mask = np.ones((b, h, t, s), bool) if mask is None else np.broadcast_to(np.asarray(mask), (b, h, t, s))
    bias = np.zeros((b, h, t, s)) if bias is None else np.broadcast_to(np.asarray(bias, np.float64), (b, h, t, s))
    out = np.zeros((b, t, h, d))
    for n in range(b):
        for head in range(h):
            g = head // (h // kh)
            logits = q[n, :, head] @ k[n, :, g].T * scale + bias[n, head]
            logits = np.where(mask[n, head], logits, -np.inf)
            out[n, :, head] = softmax(logits) @ v[n, :, g]
    return out


def layer_norm(x, gamma, beta, eps):
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def gru_cell(x, h, w_ih, w_hh, b_ih, b_hh):
    """PyTorch's GRUCell with weights in objax layout: w_ih (nin, 3 nout), w_hh (nout, 3 nout), gates r, z, n."""
    gi = x @ w_ih + b_ih
    gh = h @ w_hh + b_hh
    n = h.shape[-1]
    r = sigmoid(gi[:, :n] + gh[:, :n])
    z = sigmoid(gi[:, n:2 * n] + gh[:, n:2 * n])
    cand = np.tanh(gi[:, 2 * n:] + r * gh[:, 2 * n:])
    return (1 - z) * cand + z * h


def lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """PyTorch's LSTMCell with weights in objax layout: w_ih (nin, 4 nout), w_hh (nout, 4 nout), gates i, f, g, o."""
    gates = x @ w_ih + b_ih + h @ w_hh + b_hh
    n = h.shape[-1]
    i, f, g, o = (gates[:, j * n:(j + 1) * n] for j in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c), c


def torch_layers():
    """The PyTorch layer fixtures: inputs, parameters (PyTorch's layout) and outputs, as described in
    tests/data/pretrained/README.md."""
    path = pathlib.Path(__file__).resolve().parent / 'data' / 'pretrained' / 'torch_layers.npz'
    with np.load(path) as data:
        return dict(data)
