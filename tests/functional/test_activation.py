"""gelu (exact and tanh forms) and silu against their formulas."""

import jax
import jax.numpy as jn
import numpy as np
import scipy.special
from _references import torch_layers

from objax import functional

X = np.linspace(-5, 5, 41)


def test_gelu_exact_and_tanh_forms():
    x = jn.asarray(X, jn.float32)
    exact = X / 2 * (1 + scipy.special.erf(X / np.sqrt(2)))
    tanh = X / 2 * (1 + np.tanh(np.sqrt(2 / np.pi) * (X + 0.044715 * X ** 3)))
    assert np.abs(exact - tanh).max() > 1e-4  # the two forms differ enough to tell apart
    np.testing.assert_allclose(functional.gelu(x), exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(functional.gelu(x, approximate=False), exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(functional.gelu(x, approximate=True), tanh, rtol=1e-5, atol=1e-6)
    assert functional.gelu(jn.asarray(X, jn.bfloat16)).dtype == jn.bfloat16


def test_gelu_gradient_is_phi_plus_x_pdf():
    grad = jax.vmap(jax.grad(functional.gelu))(jn.asarray(X, jn.float32))
    want = scipy.special.ndtr(X) + X * np.exp(-X ** 2 / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-6)


def test_silu_is_swish():
    assert functional.silu is functional.swish
    np.testing.assert_allclose(functional.silu(jn.asarray(X, jn.float32)), X * scipy.special.expit(X), rtol=1e-5,
                               atol=1e-6)


def test_match_pytorch():
    data = torch_layers()
    x = jn.asarray(data['act_x'])
    np.testing.assert_allclose(functional.gelu(x), data['gelu_y'], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(functional.gelu(x, approximate=True), data['gelu_tanh_y'], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(functional.silu(x), data['silu_y'], rtol=1e-6, atol=1e-6)
