"""RDP accountant of objax.privacy.dpsgd against independent formulas, numerical integration and published figures."""

import decimal
import math

import numpy as np
import pytest
from scipy import integrate, stats

from objax.privacy import dpsgd

ORDERS = (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
          20)


def binomial_sum_rdp(q, sigma, alpha):
    """RDP of the sampled Gaussian mechanism at integer alpha:
    log(sum_k C(a,k)(1-q)^(a-k) q^k e^((k^2-k)/2s^2))/(a-1)."""
    with decimal.localcontext() as ctx:  # exact binomials, 50-digit arithmetic: no overflow, no cancellation
        ctx.prec = 50
        q, s2 = decimal.Decimal(q), 2 * decimal.Decimal(sigma) ** 2
        total = sum(math.comb(alpha, k) * (1 - q) ** (alpha - k) * q ** k * ((k * k - k) / s2).exp()
                    for k in range(alpha + 1))
        return float(total.ln() / (alpha - 1))


def integrated_rdp(q, sigma, alpha):
    """RDP by integrating E_{mu0}[((1-q) + q mu1/mu0)^alpha] numerically (mu0 = N(0, s^2), mu1 = N(1, s^2))."""
    def integrand(z):
        return stats.norm.pdf(z, 0, sigma) * ((1 - q) + q * np.exp((2 * z - 1) / (2 * sigma ** 2))) ** alpha

    value = integrate.quad(integrand, -30 * sigma, 30 * sigma + alpha, epsabs=0, epsrel=1e-13, limit=1000,
                           points=[0.5, alpha])[0]
    return math.log(value) / (alpha - 1)


def log_central_moment(sigma, k):
    """log E_q[(p/q - 1)^k] for even k, q = N(0, s^2), p = N(1, s^2), by numerical integration (scaled by the
    integrand's value near its peak z = k, where p^k / q^(k-1) peaks, so that nothing overflows)."""
    def log_integrand(z):
        t = (2 * z - 1) / (2 * sigma ** 2)
        return stats.norm.logpdf(z, 0, sigma) + (k * math.log(abs(math.expm1(t))) if t else -math.inf)

    shift = log_integrand(k)
    value = integrate.quad(lambda z: math.exp(log_integrand(z) - shift), -12 * sigma, k + 12 * sigma, epsabs=0,
                           epsrel=1e-12, limit=2000, points=[0.5, k])[0]
    return shift + math.log(value)


def wor_bound(q, sigma, alpha, moments=True):
    """Wang-Balle-Kasiviswanathan (2019) for the Gaussian mechanism (eps(j) = j/2s^2, eps(inf) = inf): Theorem 9,
    each term j >= 3 being min(2 e^((j-1) eps(j)), 4 sqrt(M(2 floor(j/2)) M(2 ceil(j/2)))) (their Theorem 27,
    M(k) = E_q[(p/q - 1)^k]) when `moments` (Objax 1.8 uses it for orders <= 256). Summed in log space."""
    e2 = 1 / sigma ** 2
    logs = [0.0, 2 * math.log(q) + math.log(math.comb(alpha, 2)) + math.log(min(4 * math.expm1(e2), 2 * math.exp(e2)))]
    for j in range(3, alpha + 1):
        term = math.log(2) + (j - 1) * j / (2 * sigma ** 2)
        if moments:
            term = min(term, math.log(4) + 0.5 * (log_central_moment(sigma, 2 * (j // 2))
                                                  + log_central_moment(sigma, 2 * ((j + 1) // 2))))
        logs.append(j * math.log(q) + math.log(math.comb(alpha, j)) + term)
    top = max(logs)
    return (top + math.log(math.fsum(math.exp(v - top) for v in logs))) / (alpha - 1)


@pytest.mark.parametrize('q,sigma', [(0.01, 1.0), (256 / 60000, 1.1), (0.1, 0.8), (0.5, 2.0), (0.03, 0.6)])
def test_integer_orders_match_binomial_sum(q, sigma):
    orders = (2, 3, 5, 8, 13, 20, 32)
    got = dpsgd.analyze_renyi(q, sigma, 1, orders)
    want = [binomial_sum_rdp(q, sigma, a) for a in orders]
    np.testing.assert_allclose(got, want, rtol=1e-9)
    np.testing.assert_allclose(dpsgd.analyze_renyi(q, sigma, 250, orders), 250 * np.array(want), rtol=1e-9)


@pytest.mark.parametrize('q,sigma', [(0.01, 1.0), (256 / 60000, 1.1), (0.1, 0.8), (0.3, 2.0), (0.05, 0.5)])
def test_fractional_orders_match_numerical_integration(q, sigma):
    orders = (1.25, 1.5, 1.75, 2.5, 3.7, 7.5)
    got = dpsgd.analyze_renyi(q, sigma, 1, orders)
    want = [integrated_rdp(q, sigma, a) for a in orders]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_objax_published_epsilons():
    assert round(dpsgd.analyze_dp(q=256 / 60000, noise_multiplier=1.1, steps=14062), 3) == 2.597
    assert round(dpsgd.analyze_dp(q=0.01, noise_multiplier=1.0, steps=1000), 3) == 2.108
    assert round(dpsgd.analyze_dp(0.01, 1.0, 1000, ORDERS, 1e-5), 3) == 2.108


def test_analyze_renyi_shapes_and_edge_cases():
    assert isinstance(dpsgd.analyze_renyi(0.01, 1.0, 10, 2.0), float)
    assert dpsgd.analyze_renyi(0.01, 1.0, 10, ORDERS).shape == (len(ORDERS),)
    np.testing.assert_allclose(dpsgd.analyze_renyi(0.0, 1.0, 10, ORDERS), 0)
    np.testing.assert_allclose(dpsgd.analyze_renyi(1.0, 2.0, 3, ORDERS), 3 * np.array(ORDERS) / 8)
    np.testing.assert_allclose(dpsgd.analyze_renyi(0.01, 1.0, 0, ORDERS), 0)
    assert dpsgd.analyze_renyi(0.01, 0.0, 1, 2.0) == math.inf
    rdp = dpsgd.analyze_renyi(0.02, 1.0, 1, np.linspace(1.1, 30, 40))
    assert np.all(np.diff(rdp) > 0)  # RDP grows with the order


@pytest.mark.parametrize('q,sigma', [(0.01, 1.0), (0.1, 0.7), (0.5, 3.0), (0.02, 2.0), (0.05, 8.0)])
def test_sample_without_replacement_integer_orders(q, sigma):
    orders = (2, 3, 4, 7, 12, 20)
    got = dpsgd.analyze_renyi_sample_without_replacement(q, sigma, 3, orders)
    np.testing.assert_allclose(got, [3 * wor_bound(q, sigma, a) for a in orders], rtol=1e-9)


def test_sample_without_replacement_moment_bound_matters():
    # For large noise the moment bound is the smaller one: the result is below Theorem 9 alone ...
    q, sigma = 0.02, 4.0
    tight = dpsgd.analyze_renyi_sample_without_replacement(q, sigma, 1, 10)
    assert tight == pytest.approx(wor_bound(q, sigma, 10), rel=1e-9)
    assert tight < 0.9 * wor_bound(q, sigma, 10, moments=False)
    # ... for small noise it is not used ...
    assert dpsgd.analyze_renyi_sample_without_replacement(0.1, 0.6, 1, 6) == pytest.approx(
        wor_bound(0.1, 0.6, 6, moments=False), rel=1e-12)
    # ... and above order 256 only Theorem 9's own terms count (as in Objax 1.8).
    assert dpsgd.analyze_renyi_sample_without_replacement(0.001, 20.0, 1, 300) == pytest.approx(
        wor_bound(0.001, 20.0, 300, moments=False), rel=1e-9)
    # Large noise: the moments cancel to ~1e-22 of their terms and still come out to full precision.
    assert dpsgd.analyze_renyi_sample_without_replacement(0.01, 30.0, 1, 22) == pytest.approx(
        wor_bound(0.01, 30.0, 22), rel=1e-9)


def test_sample_without_replacement_fractional_orders_and_edges():
    q, sigma = 0.05, 1.2
    # (alpha - 1) * RDP is interpolated linearly between integer orders (convexity); it is 0 at alpha = 1.
    for alpha in (1.25, 1.5, 2.5, 6.3):
        low, high = math.floor(alpha), math.ceil(alpha)
        at_low = 0 if low == 1 else (low - 1) * wor_bound(q, sigma, low)
        at_high = (high - 1) * wor_bound(q, sigma, high)
        t = alpha - low
        want = ((1 - t) * at_low + t * at_high) / (alpha - 1)
        assert dpsgd.analyze_renyi_sample_without_replacement(q, sigma, 1, alpha) == pytest.approx(want, rel=1e-9)
    np.testing.assert_allclose(dpsgd.analyze_renyi_sample_without_replacement(1.0, 2.0, 2, ORDERS),
                               2 * np.array(ORDERS) / 8)
    np.testing.assert_allclose(dpsgd.analyze_renyi_sample_without_replacement(0.0, 2.0, 2, ORDERS), 0)
    eps = dpsgd.analyze_dp_sample_without_replacement(0.01, 1.0, 1000)
    rdp = dpsgd.analyze_renyi_sample_without_replacement(0.01, 1.0, 1000, ORDERS)
    assert eps == pytest.approx(dpsgd.convert_renyidp_to_dp(ORDERS, rdp, target_delta=1e-5)[0])
    assert eps > dpsgd.analyze_dp(0.01, 1.0, 1000)  # the replace-one bound is looser here


def test_convert_renyidp_to_dp():
    orders = np.array(ORDERS, dtype=float)
    rdp = dpsgd.analyze_renyi(0.01, 1.0, 1000, ORDERS)
    eps, delta, order = dpsgd.convert_renyidp_to_dp(ORDERS, rdp, target_delta=1e-5)
    assert delta == 1e-5
    want = rdp + np.log1p(-1 / orders) - (math.log(1e-5) + np.log(orders)) / (orders - 1)
    assert eps == pytest.approx(want.min(), rel=1e-12)
    assert order == orders[np.argmin(want)]
    assert eps < np.min(rdp - math.log(1e-5) / (orders - 1))  # tighter than the classic conversion
    eps2, delta2, order2 = dpsgd.convert_renyidp_to_dp(ORDERS, rdp, target_eps=eps)
    assert (eps2, order2) == (eps, order)
    assert delta2 == pytest.approx(1e-5, rel=1e-9)
    # Tiny RDP: the KL bound gives eps = 0.
    assert dpsgd.convert_renyidp_to_dp((2.0, 3.0), (1e-12, 2e-12), target_delta=1e-5)[0] == 0
    assert dpsgd.convert_renyidp_to_dp((2.0,), (50.0,), target_eps=0.0)[1] == 1.0


def test_bad_arguments():
    with pytest.raises(ValueError, match='q'):
        dpsgd.analyze_renyi(1.5, 1.0, 10, 2.0)
    with pytest.raises(ValueError, match='noise_multiplier'):
        dpsgd.analyze_dp(0.01, -1.0, 10)
    with pytest.raises(ValueError, match='steps'):
        dpsgd.analyze_dp(0.01, 1.0, 2.5)
    with pytest.raises(ValueError, match='orders'):
        dpsgd.analyze_renyi(0.01, 1.0, 10, (0.5, 2.0))
    with pytest.raises(ValueError, match='exactly one'):
        dpsgd.convert_renyidp_to_dp((2.0,), (1.0,))
    with pytest.raises(ValueError, match='exactly one'):
        dpsgd.convert_renyidp_to_dp((2.0,), (1.0,), target_eps=1.0, target_delta=1e-5)
    with pytest.raises(ValueError, match='same length'):
        dpsgd.convert_renyidp_to_dp((2.0, 3.0), (1.0,), target_delta=1e-5)
    with pytest.raises(ValueError, match='target_delta'):
        dpsgd.convert_renyidp_to_dp((2.0,), (1.0,), target_delta=0)
