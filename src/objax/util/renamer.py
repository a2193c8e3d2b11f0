"""Renamer: rewrites variable names (for VarCollection.rename and loading checkpoints)."""

import re
from typing import Callable, Dict, Optional, Pattern, Sequence, Tuple, Union

__all__ = ['Renamer']


class Renamer:
    """Renames strings by substring replacements, regex substitutions or a function, then by `chain` if given.

    - a dict `{old: new}`: one left-to-right pass over the string; at each position the first key (in dict order)
      found there is replaced and the scan resumes after it, so replaced text is never renamed again
      (`Renamer({'a': 'b', 'b': 'c'})('ab') == 'bc'`). Keys are literal strings.
    - a sequence of `(regex, replacement)` pairs (compiled patterns or pattern strings): `re.sub` of each pair,
      one after the other.
    - a function `str -> str`: called.

    Args:
        rules: the dict, the sequence of pairs or the function.
        chain: an optional Renamer (any `str -> str` callable) applied to the result of these rules.

    Raises:
        TypeError: rules is none of the three forms (or a dict with non-str keys or values), or chain is not
            callable.
        re.error: a pattern string is not a valid regular expression.
    """

    def __init__(self, rules: Union[Dict[str, str], Sequence[Tuple[Pattern[str], str]], Callable[[str], str]],
                 chain: Optional['Renamer'] = None):
        if isinstance(rules, dict):
            self._fn = _dict_renamer(rules)
        elif callable(rules):
            self._fn = rules
        else:
            try:
                pairs = [(re.compile(p) if isinstance(p, str) else p, r) for p, r in rules]
            except (TypeError, ValueError):
                raise TypeError('Renamer(rules): rules must be a dict, a sequence of (pattern, replacement) '
                                'pairs or a function') from None
            if not all(isinstance(p, re.Pattern) for p, _ in pairs):
                raise TypeError('Renamer(rules): each pair must be (compiled regex or pattern string, replacement)')
            self._fn = lambda s: _substitute_all(s, pairs)
        if chain is not None and not callable(chain):
            raise TypeError(f'Renamer(chain): chain must be a Renamer, got {type(chain).__name__}')
        self.chain = chain

    def __call__(self, s: str) -> str:
        """Returns the renamed string: these rules first, then `chain`.

        Args:
            s: the string to rename, e.g. a variable name such as '(Linear).w'.

        Returns:
            The renamed string.
        """
        s = self._fn(s)
        if self.chain is not None:
            s = self.chain(s)
        return s


def _dict_renamer(rules: Dict[str, str]) -> Callable[[str], str]:
    """One left-to-right pass replacing, at each position, the first key of `rules` found there."""
    for k, v in rules.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(f'Renamer(rules): dict keys and values must be str, got {k!r}: {v!r}')
    if not rules:
        return lambda s: s
    # A regex alternation tries its alternatives in order at each position: exactly "first key in dict order".
    pattern = re.compile('|'.join(re.escape(k) for k in rules))
    table = dict(rules)
    return lambda s: pattern.sub(lambda m: table[m.group(0)], s)


def _substitute_all(s: str, pairs) -> str:
    for pattern, new in pairs:
        s = pattern.sub(new, s)
    return s
