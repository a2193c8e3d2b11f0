"""Compares what a program printed with the output a guide shows, numbers within a float32 tolerance.

The guide's random numbers were printed by JAX 0.10, whose CPU `erf_inv` (through `log1p`) rounds differently
from JAX 0.11 and later in the last bit or two of float32: the same random bits give, for instance,
-0.52678305 on JAX 0.10 and -0.52678293 on JAX 0.12. On JAX 0.10 every character must match; on later JAX a
printed number may differ from the guide's by at most `TOLERANCE` times max(1, |number|) (a few float32 ulps
of the sampled values, also after a sum such as w + 1), and everything else must match exactly (spaces
aside: numpy pads its columns to the longest number). This file is self-contained (numpy and the standard
library only) so that the documentation driver can run its source in a fresh interpreter.
"""

import re

import numpy as np

__all__ = ['TOLERANCE', 'tolerance_for', 'lines_match']

TOLERANCE = 1e-6
_NUMBER = re.compile(r'[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?')


def tolerance_for(jax_version: str) -> float:
    """The tolerance for numbers printed under JAX `jax_version`: 0 for 0.10.x, else `TOLERANCE`."""
    major, minor = (int(p) for p in jax_version.split('.')[:2])
    return 0.0 if (major, minor) <= (0, 10) else TOLERANCE


def _numbers_close(got: str, want: str, tolerance: float) -> bool:
    g, w = float(got), float(want)
    if got == want or g == w:
        return True
    if tolerance == 0 or not (np.isfinite(g) and np.isfinite(w)) or np.sign(g) != np.sign(w):
        return False
    return abs(g - w) <= tolerance * max(1.0, abs(g), abs(w))


def _skeleton(line: str) -> str:
    return ''.join(_NUMBER.sub('#', line).split())


def lines_match(got: str, want: str, tolerance: float) -> bool:
    """Whether one printed line equals the expected one, numbers compared within `tolerance`.

    Args:
        got: the printed line (runs of spaces already collapsed).
        want: the expected line, likewise.
        tolerance: how far each number may be from the expected one, times max(1, |number|); 0 asks for the
            same characters.

    Returns:
        True when the text between numbers is identical (spaces aside, when a tolerance is given) and each
        number pair is within the tolerance.
    """
    if got == want:
        return True
    if tolerance == 0:
        return False
    got_numbers, want_numbers = _NUMBER.findall(got), _NUMBER.findall(want)
    # numpy pads columns to the longest number, so a shorter or longer number moves the spaces around it
    if _skeleton(got) != _skeleton(want) or len(got_numbers) != len(want_numbers):
        return False
    return all(_numbers_close(g, w, tolerance) for g, w in zip(got_numbers, want_numbers))
