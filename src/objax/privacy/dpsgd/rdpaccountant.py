"""Rényi-DP accounting of DP-SGD: the sampled Gaussian mechanism and its conversion to (epsilon, delta)-DP.

Sampling with replacement (Poisson sampling) follows Mironov, Talwar and Zhang (2019), "Rényi Differential
Privacy of the Sampled Gaussian Mechanism"; sampling without replacement follows the upper bound of Wang,
Balle and Kasiviswanathan (2019), "Subsampled Rényi Differential Privacy and Analytical Moments Accountant".
"""

import decimal
import functools
import math
from typing import Optional, Tuple, Union

import numpy as np
from scipy import special

__all__ = ['analyze_dp', 'analyze_dp_sample_without_replacement', 'analyze_renyi',
           'analyze_renyi_sample_without_replacement', 'convert_renyidp_to_dp']

DEFAULT_ORDERS = (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                  17, 18, 19, 20)

# The two series for fractional orders stop once both new terms fall below exp(_LOG_TOLERANCE) (the sum is >= 1).
_LOG_TOLERANCE = -40.0
_MAX_TERMS = 100_000
# Without replacement, orders up to this one also use the central-moment bound (as Objax 1.8).
_WOR_MOMENT_MAX_ORDER = 256


def _check(name: str, q: float, noise_multiplier: float, steps: int, orders) -> Tuple[np.ndarray, bool]:
    if not 0 <= q <= 1:
        raise ValueError(f'{name}: q (the sampling ratio) must be in [0, 1], got {q}')
    if not noise_multiplier >= 0:
        raise ValueError(f'{name}: noise_multiplier must be >= 0, got {noise_multiplier}')
    if isinstance(steps, bool) or not float(steps).is_integer() or steps < 0:
        raise ValueError(f'{name}: steps must be a non-negative integer, got {steps}')
    scalar = np.ndim(orders) == 0
    orders = np.atleast_1d(np.asarray(orders, dtype=float))
    if orders.ndim != 1 or not np.all(orders > 1):
        raise ValueError(f'{name}: orders must be a number or a sequence of numbers > 1, got {orders.tolist()}')
    return orders, scalar


def _log_binom(n: float, k: np.ndarray) -> np.ndarray:
    """log |C(n, k)| for real n > 0 and integer k >= 0 (generalized binomial coefficient)."""
    return special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)


def _log_moment_integer(q: float, sigma: float, alpha: int) -> float:
    """log E_{mu0}[(mu/mu0)^alpha] for integer alpha: log sum_k C(alpha,k) (1-q)^(alpha-k) q^k e^((k^2-k)/2s^2)."""
    k = np.arange(alpha + 1, dtype=float)
    log_terms = (_log_binom(alpha, k) + k * math.log(q) + (alpha - k) * math.log1p(-q)
                 + (k * k - k) / (2 * sigma ** 2))
    return float(special.logsumexp(log_terms))


def _log_moment_fractional(q: float, sigma: float, alpha: float) -> float:
    """log E_{mu0}[(mu/mu0)^alpha] for fractional alpha, as the sum of the two series split at the point z0
    where q * mu1 = (1 - q) * mu0 (each expansion converges on its side of z0)."""
    z0 = sigma ** 2 * math.log(1 / q - 1) + 0.5
    log_terms, signs = [], []
    for i in range(_MAX_TERMS):
        j = alpha - i
        log_coef = float(_log_binom(alpha, np.float64(i)))
        # Below z0: expand in powers of q*mu1/((1-q)*mu0);
        # E_{mu0}[(mu1/mu0)^i; z <= z0] = e^((i^2-i)/2s^2) P(N(i,s^2) <= z0).
        below = (log_coef + i * math.log(q) + j * math.log1p(-q) + (i * i - i) / (2 * sigma ** 2)
                 + special.log_ndtr((z0 - i) / sigma))
        # Above z0: expand in powers of (1-q)*mu0/(q*mu1); the moment of order j = alpha - i over z > z0.
        above = (log_coef + j * math.log(q) + i * math.log1p(-q) + (j * j - j) / (2 * sigma ** 2)
                 + special.log_ndtr((j - z0) / sigma))
        # C(alpha, i) has the factors alpha, alpha-1, ..., alpha-i+1: i - ceil(alpha) of them are negative.
        sign = 1.0 if i <= math.ceil(alpha) or (i - math.ceil(alpha)) % 2 == 0 else -1.0
        log_terms += [below, above]
        signs += [sign, sign]
        if max(below, above) < _LOG_TOLERANCE and i > alpha:
            break
    else:
        raise ArithmeticError(f'RDP series for order {alpha} did not converge (q={q}, noise_multiplier={sigma})')
    value, sign = special.logsumexp(log_terms, b=signs, return_sign=True)
    if sign <= 0:
        raise ArithmeticError(f'RDP series for order {alpha} lost precision (q={q}, noise_multiplier={sigma})')
    return float(value)


def _edge_case_rdp(q: float, sigma: float, alpha: float) -> Optional[float]:
    """RDP when sampling or noise is degenerate (nothing sampled, no noise, or every record used), else None."""
    if q == 0:
        return 0.0
    if sigma == 0:
        return math.inf
    if q == 1:
        return alpha / (2 * sigma ** 2)
    return None


def _rdp_sampled_gaussian(q: float, sigma: float, alpha: float) -> float:
    """RDP of one step of the sampled Gaussian mechanism (Poisson sampling with rate q) at order alpha."""
    edge = _edge_case_rdp(q, sigma, alpha)
    if edge is not None:
        return edge
    if float(alpha).is_integer():
        log_moment = _log_moment_integer(q, sigma, int(alpha))
    else:
        log_moment = _log_moment_fractional(q, sigma, alpha)
    return max(log_moment, 0.0) / (alpha - 1)


@functools.lru_cache(maxsize=4096)
def _log_central_moment(sigma: float, k: int) -> float:
    """log E_q[(p/q - 1)^k] for even k >= 2, q = N(0, s^2), p = N(1, s^2): the k-th forward difference at 0 of
    m -> E_q[(p/q)^m] = exp(m (m - 1) / 2s^2). The alternating sum cancels heavily when s is large, so it is
    summed in decimal arithmetic with as many digits as the cancellation needs."""
    digits = 60 + k
    while digits <= 50_000:
        with decimal.localcontext() as ctx:
            ctx.prec, ctx.Emax, ctx.Emin = digits, decimal.MAX_EMAX, decimal.MIN_EMIN
            c = 1 / (2 * decimal.Decimal(sigma) ** 2)
            terms = [math.comb(k, m) * (m * (m - 1) * c).exp() for m in range(k + 1)]
            total = sum(t if (k - m) % 2 == 0 else -t for m, t in enumerate(terms))
            if total > 0 and (max(terms) / total).log10() < digits - 30:  # >= 30 digits survive cancellation
                return float(total.ln())
        digits *= 2
    raise ArithmeticError(f'RDP without replacement: moment {k} of noise_multiplier={sigma} lost all precision')


def _log_moment_wor_integer(q: float, sigma: float, alpha: int) -> float:
    """(alpha - 1) * RDP bound at integer alpha >= 2 for sampling without replacement (Wang et al., Thm. 9 with the
    Gaussian mechanism's eps(j) = j / (2 sigma^2), eps(infinity) = infinity). For alpha <= 256 each term j >= 3
    also takes the bound 4 sqrt(M(2 floor(j/2)) M(2 ceil(j/2))) of their Thm. 27, M(k) = E_q[(p/q - 1)^k], when
    it is smaller (as Objax 1.8 does)."""
    eps2 = 1 / sigma ** 2
    log_e2_minus_1 = eps2 + math.log(-math.expm1(-eps2))  # log(e^eps(2) - 1), stable for small eps(2)
    log_terms = [0.0, 2 * math.log(q) + float(_log_binom(alpha, np.float64(2)))
                 + min(math.log(4) + log_e2_minus_1, eps2 + math.log(2))]
    for j in range(3, alpha + 1):
        bound = (j - 1) * j / (2 * sigma ** 2) + math.log(2)
        if alpha <= _WOR_MOMENT_MAX_ORDER:
            bound = min(bound, math.log(4) + 0.5 * (_log_central_moment(sigma, 2 * (j // 2))
                                                     + _log_central_moment(sigma, 2 * ((j + 1) // 2))))
        log_terms.append(j * math.log(q) + float(_log_binom(alpha, np.float64(j))) + bound)
    return float(special.logsumexp(log_terms))


def _rdp_sampled_gaussian_wor(q: float, sigma: float, alpha: float) -> float:
    """RDP bound of one step of the Gaussian mechanism on a subsample drawn without replacement (ratio q)."""
    edge = _edge_case_rdp(q, sigma, alpha)
    if edge is not None:
        return edge
    if float(alpha).is_integer():
        return _log_moment_wor_integer(q, sigma, int(alpha)) / (alpha - 1)
    # (alpha - 1) * RDP(alpha) is convex in alpha: interpolate it linearly between the neighbouring integers
    # (at alpha = 1 it is 0).
    low, high = math.floor(alpha), math.ceil(alpha)
    at_low = 0.0 if low == 1 else _log_moment_wor_integer(q, sigma, low)
    at_high = _log_moment_wor_integer(q, sigma, high)
    t = alpha - low
    return ((1 - t) * at_low + t * at_high) / (alpha - 1)


def _analyze(name: str, rdp_fn, q: float, noise_multiplier: float, steps: int, orders):
    order_array, scalar = _check(name, q, noise_multiplier, steps, orders)
    rdp = np.array([rdp_fn(float(q), float(noise_multiplier), a) for a in order_array]) * steps
    return float(rdp[0]) if scalar else rdp


def analyze_renyi(q: float, noise_multiplier: float, steps: int, orders: Union[float, Tuple[float, ...]]):
    """RDP of `steps` steps of the sampled Gaussian mechanism (sampling ratio q, noise std noise_multiplier times
    the sensitivity) at each order: a float for one order, else an array of shape (len(orders),).

    Args:
        q: the sampling ratio (batch size / data set size), in [0, 1].
        noise_multiplier: the noise standard deviation relative to the l2 sensitivity (the clipping norm), >= 0.
        steps: the number of steps (a non-negative integer).
        orders: one Renyi order (> 1) or a tuple of them.

    Raises:
        ValueError: q outside [0, 1], negative noise_multiplier or steps not a non-negative integer.
    """
    return _analyze('analyze_renyi', _rdp_sampled_gaussian, q, noise_multiplier, steps, orders)


def analyze_renyi_sample_without_replacement(q: float, noise_multiplier: float, steps: int,
                                             orders: Union[float, Tuple[float, ...]]) -> float:
    """Like analyze_renyi, for batches sampled without replacement (the Wang, Balle, Kasiviswanathan bound).

    Args:
        q: the sampling ratio (batch size / data set size), in [0, 1].
        noise_multiplier: the noise standard deviation relative to the l2 sensitivity (the clipping norm), >= 0.
        steps: the number of steps (a non-negative integer).
        orders: one Renyi order (> 1) or a tuple of them.

    Returns:
        A float for one order, else an array of shape (len(orders),).
    """
    return _analyze('analyze_renyi_sample_without_replacement', _rdp_sampled_gaussian_wor, q, noise_multiplier,
                    steps, orders)


def _eps_from_rdp(order: float, rdp: float, delta: float) -> float:
    if rdp == 0:
        return 0.0
    if delta ** 2 >= -math.expm1(-rdp):  # KL bound: delta <= sqrt(1 - exp(-rdp)) already gives eps = 0
        return 0.0
    if order <= 1.01:  # the bound below is unstable as order -> 1 and useless there
        return math.inf
    return rdp + math.log1p(-1 / order) - (math.log(delta) + math.log(order)) / (order - 1)


def _log_delta_from_rdp(order: float, rdp: float, eps: float) -> float:
    log_delta = 0.5 * math.log(-math.expm1(-rdp)) if rdp > 0 else -math.inf
    if order > 1.01:
        log_delta = min(log_delta, (order - 1) * (rdp - eps + math.log1p(-1 / order)) - math.log(order))
    return log_delta


def convert_renyidp_to_dp(orders: Tuple[float, ...], rdp: Tuple[float, ...], target_eps: float = None,
                          target_delta: float = None) -> Tuple[float, float, float]:
    """Best (eps, delta)-DP guarantee from RDP values (one per order), given target_eps or target_delta.
    Returns (eps, delta, optimal order). Uses eps = rdp + log(1 - 1/a) - (log(delta) + log(a)) / (a - 1)
    (Canonne, Kamath, Steinke 2020, Prop. 12; Balle et al. 2020), or eps = 0 by the KL bound when it applies.

    Args:
        orders: the Renyi orders (each >= 1).
        rdp: the RDP value at each order (>= 0), as analyze_renyi returns them.
        target_eps: the epsilon to reach (give this or target_delta).
        target_delta: the delta to reach, in (0, 1) (give this or target_eps).

    Returns:
        (eps, delta, order): the guarantee and the order giving it.

    Raises:
        ValueError: orders and rdp of different lengths, an order < 1, a negative rdp, or not exactly one of
            target_eps and target_delta.
    """
    orders_array = np.atleast_1d(np.asarray(orders, dtype=float))
    rdp_array = np.atleast_1d(np.asarray(rdp, dtype=float))
    if orders_array.shape != rdp_array.shape or orders_array.ndim != 1:
        raise ValueError(f'convert_renyidp_to_dp: orders and rdp must be sequences of the same length, got '
                         f'{orders_array.size} orders and {rdp_array.size} rdp values')
    if not np.all(orders_array >= 1):
        raise ValueError(f'convert_renyidp_to_dp: orders must be >= 1, got {orders_array.tolist()}')
    if np.any(rdp_array < 0):
        raise ValueError(f'convert_renyidp_to_dp: rdp values must be >= 0, got {rdp_array.tolist()}')
    if (target_eps is None) == (target_delta is None):
        raise ValueError('convert_renyidp_to_dp: give exactly one of target_eps and target_delta')
    if target_delta is not None:
        if not 0 < target_delta < 1:
            raise ValueError(f'convert_renyidp_to_dp: target_delta must be in (0, 1), got {target_delta}')
        eps = np.array([_eps_from_rdp(a, r, target_delta) for a, r in zip(orders_array, rdp_array)])
        best = int(np.argmin(eps))
        return max(0.0, float(eps[best])), float(target_delta), float(orders_array[best])
    if not target_eps >= 0:
        raise ValueError(f'convert_renyidp_to_dp: target_eps must be >= 0, got {target_eps}')
    log_delta = np.array([_log_delta_from_rdp(a, r, target_eps) for a, r in zip(orders_array, rdp_array)])
    best = int(np.argmin(log_delta))
    return float(target_eps), min(1.0, math.exp(log_delta[best])), float(orders_array[best])


def analyze_dp(q: float, noise_multiplier: float, steps: int, orders: Tuple[float, ...] = DEFAULT_ORDERS,
               delta: float = 1e-05) -> float:
    """Epsilon spent by `steps` steps of DP-SGD with sampling ratio q (with replacement), at the given delta.

    Args:
        q: the sampling ratio (batch size / data set size), in [0, 1].
        noise_multiplier: the noise standard deviation relative to the l2 sensitivity (the clipping norm), >= 0.
        steps: the number of steps (a non-negative integer).
        orders: the Renyi orders over which the best epsilon is sought.
        delta: the delta of the (epsilon, delta) guarantee, in (0, 1).

    Returns:
        epsilon, a float (inf without noise).
    """
    rdp = analyze_renyi(q, noise_multiplier, steps, tuple(np.atleast_1d(orders)))
    return convert_renyidp_to_dp(np.atleast_1d(orders), rdp, target_delta=delta)[0]


def analyze_dp_sample_without_replacement(q: float, noise_multiplier: float, steps: int,
                                          orders: Tuple[float, ...] = DEFAULT_ORDERS,
                                          delta: float = 1e-05) -> float:
    """Epsilon spent by `steps` steps of DP-SGD on batches sampled without replacement, at the given delta.

    Args:
        q: the sampling ratio (batch size / data set size), in [0, 1].
        noise_multiplier: the noise standard deviation relative to the l2 sensitivity (the clipping norm), >= 0.
        steps: the number of steps (a non-negative integer).
        orders: the Renyi orders over which the best epsilon is sought.
        delta: the delta of the (epsilon, delta) guarantee, in (0, 1).

    Returns:
        epsilon, a float (inf without noise).
    """
    rdp = analyze_renyi_sample_without_replacement(q, noise_multiplier, steps, tuple(np.atleast_1d(orders)))
    return convert_renyidp_to_dp(np.atleast_1d(orders), rdp, target_delta=delta)[0]
