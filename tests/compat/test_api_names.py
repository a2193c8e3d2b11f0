"""Walks shared/spec/objax_api.md: every public name of Objax 1.8 exists here with its signature.

For each listed function, class and method the parameter names must match in order (extra trailing
parameters with defaults are allowed), every listed default must be present, and literal defaults
(numbers, strings, tuples, None, booleans) must be equal.
"""

import ast
import enum
import importlib
import inspect
import pathlib
import re

import pytest

# The project's spec lies in ../shared beside the checkout; tests/data keeps a copy for checkouts without it.
_SHARED_SPEC = pathlib.Path(__file__).resolve().parents[2].parent / 'shared' / 'spec' / 'objax_api.md'
SPEC = _SHARED_SPEC if _SHARED_SPEC.exists() else pathlib.Path(__file__).resolve().parents[1] / 'data' / 'objax_api.md'


def _split_params(text: str):
    parts, depth, current = [], 0, ''
    for ch in text:
        if ch in '([{<':
            depth += 1
        elif ch in ')]}>':
            depth -= 1
        if ch == ',' and depth == 0:
            parts.append(current.strip())
            current = ''
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def _parse_param(p: str):
    """-> (name, has_default, literal_default or _NO_LITERAL)"""
    name_part, _, default = p.partition('=')
    name = name_part.split(':')[0].strip()
    if not _:
        return name, False, None
    default = default.strip()
    try:
        return name, True, ('literal', ast.literal_eval(default))
    except (ValueError, SyntaxError):
        return name, True, None


def _entries():
    if not SPEC.exists():
        return []
    entries, module, cls = [], None, None
    for line in SPEC.read_text().splitlines():
        if line.startswith('## '):
            module, cls = line[3:].strip(), None
            continue
        if module is None:
            continue
        m = re.match(r'^- class `(\w+)\((.*)\)` \(bases: (.*)\)$', line)
        if m:
            cls = m.group(1)
            entries.append((module, cls, None, 'class', m.group(2)))
            continue
        m = re.match(r'^- `(\w+)\((.*)\)(?: -> [^`]*)?`$', line)
        if m:
            cls = None
            entries.append((module, m.group(1), None, 'function', m.group(2)))
            continue
        m = re.match(r'^- `(\w+)`(?: = re-export of `(.*)`|:.*)$', line)
        if m:
            cls = None
            entries.append((module, m.group(1), None, 'name', m.group(2)))
            continue
        m = re.match(r'^ - `(\w+)\((.*)\)(?: -> [^`]*)?`$', line)
        if m and cls:
            entries.append((module, cls, m.group(1), 'method', m.group(2)))
            continue
        m = re.match(r'^ - property `(\w+)`', line)
        if m and cls:
            entries.append((module, cls, m.group(1), 'property', None))
            continue
        m = re.match(r'^ - members: (.*)$', line)
        if m and cls:
            members = [re.split(r'[=\s(;]', x.strip())[0] for x in m.group(1).split(';')[0].split(', ')]
            entries.append((module, cls, None, 'members', members))
    return entries


ENTRIES = _entries()


def _id(e):
    module, name, member, kind, _ = e
    return f'{module}.{name}' + (f'.{member}' if member else '') + f'[{kind}]'


def _check_signature(obj, spec_params: str, label: str, drop_self: bool = False):
    params = _split_params(spec_params)
    if params == ['/', '*args', '**kwargs'] or params == ['*args', '**kwds']:
        return  # dict/list/Enum-like constructors: nothing specific to check
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        pytest.fail(f'{label}: no inspectable signature')
    ours = list(sig.parameters.values())
    if drop_self and ours and ours[0].name in ('self', 'cls'):
        ours = ours[1:]
    wanted = [_parse_param(p) for p in params if p not in ('/', '*')]
    names = [p.name if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) else
             ('*' if p.kind == p.VAR_POSITIONAL else '**') + p.name for p in ours]
    assert names[:len(wanted)] == [w[0] for w in wanted], f'{label}: parameters {names}, spec {[w[0] for w in wanted]}'
    for p in ours[len(wanted):]:
        assert p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD), \
            f'{label}: extra parameter {p.name} must have a default'
    for p, (name, has_default, literal) in zip(ours, wanted):
        if has_default:
            assert p.default is not p.empty, f'{label}: parameter {name} should have a default'
            if literal is not None:
                got = p.default
                if isinstance(got, enum.Enum):
                    got = got.value
                assert got == literal[1], f'{label}: default of {name} is {p.default!r}, spec {literal[1]!r}'


@pytest.mark.parametrize('entry', ENTRIES, ids=[_id(e) for e in ENTRIES])
def test_spec_name(entry):
    module_name, name, member, kind, detail = entry
    module = importlib.import_module(module_name)
    assert hasattr(module, name), f'{module_name} has no {name}'
    obj = getattr(module, name)
    label = f'{module_name}.{name}' + (f'.{member}' if member else '')
    if kind == 'class':
        assert inspect.isclass(obj), f'{label} should be a class'
        _check_signature(obj, detail, label)
    elif kind == 'function':
        assert callable(obj), f'{label} should be callable'
        _check_signature(obj, detail, label)
    elif kind == 'method':
        assert hasattr(obj, member), f'{label} missing'
        attr = inspect.getattr_static(obj, member)
        if isinstance(attr, (staticmethod, classmethod)):
            _check_signature(getattr(obj, member), detail, label)
        elif inspect.isclass(attr):
            pass  # e.g. ForceArgs.ANY, a marker class
        else:
            _check_signature(attr, detail, label, drop_self=True)
    elif kind == 'property':
        assert hasattr(obj, member), f'{label} missing'
    elif kind == 'members':
        for m in detail:
            assert hasattr(obj, m), f'{label} lacks member {m}'


def test_spec_was_parsed():
    assert SPEC.exists(), f'spec not found at {SPEC}'
    kinds = {e[3] for e in ENTRIES}
    assert kinds == {'class', 'function', 'method', 'property', 'members', 'name'}
    assert len(ENTRIES) > 200
