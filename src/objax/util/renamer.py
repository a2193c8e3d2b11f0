"""Renamer: rewrites variable names (for VarCollection.rename and loading checkpoints)."""

import re
from typing import Callable, Dict, Optional, Pattern, Sequence, Tuple, Union

__all__ = ['Renamer']


class Renamer:
    """Renames strings with a dict of substring replacements, a list of (regex, replacement) pairs applied
    in order, or a function. `chain` is another Renamer applied first."""

    def __init__(self, rules: Union[Dict[str, str], Sequence[Tuple[Pattern[str], str]], Callable[[str], str]],
                 chain: Optional['Renamer'] = None):
        if isinstance(rules, dict):
            items = list(rules.items())
            self._fn = lambda s: _replace_all(s, items)
        elif callable(rules):
            self._fn = rules
        else:
            try:
                pairs = [(re.compile(p) if isinstance(p, str) else p, r) for p, r in rules]
            except (TypeError, ValueError):
                raise TypeError('Renamer(rules): rules must be a dict, a sequence of (pattern, replacement) '
                                'pairs or a function') from None
            self._fn = lambda s: _substitute_all(s, pairs)
        if chain is not None and not callable(chain):
            raise TypeError(f'Renamer(chain): chain must be a Renamer, got {type(chain).__name__}')
        self.chain = chain

    def __call__(self, s: str) -> str:
        if self.chain is not None:
            s = self.chain(s)
        return self._fn(s)


def _replace_all(s: str, items) -> str:
    for old, new in items:
        s = s.replace(old, new)
    return s


def _substitute_all(s: str, pairs) -> str:
    for pattern, new in pairs:
        s = pattern.sub(new, s)
    return s
