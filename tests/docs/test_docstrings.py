"""Every public function and class of the documented packages has a docstring whose `Args:` section names each
of its parameters (Google style, as the API reference renders it).

Walked: the names in `__all__` of the modules below that objax defines itself (re-exported JAX functions keep
JAX's documentation). Checked:
- functions: every parameter except *args / **kwargs;
- classes: the parameters of `__init__` (documented in the class docstring or in `__init__`'s), then every public
  method and `__call__` defined in the class itself (self / cls excluded). Exceptions, warnings and enums are
  exempt (they take no arguments of their own).
`python tests/docs/test_docstrings.py` prints the offenders, one per line.
"""

import enum
import importlib
import inspect
import re
import sys

MODULES = ['objax', 'objax.nn', 'objax.nn.init', 'objax.functional', 'objax.functional.loss',
           'objax.functional.divergence', 'objax.functional.parallel', 'objax.optimizer', 'objax.optimizer.scheduler',
           'objax.io', 'objax.privacy.dpsgd', 'objax.zoo.convnet', 'objax.zoo.dnnet', 'objax.zoo.resnet_v2',
           'objax.zoo.wide_resnet', 'objax.zoo.rnn', 'objax.zoo.vgg', 'objax.zoo.gpt2', 'objax.zoo.vit',
           'objax.zoo.llama', 'objax.zoo._llama_config', 'objax.zoo._llama_layers', 'objax.zoo._llama_generate',
           'objax.zoo._llama_hub', 'objax.io.pretrained', 'objax.jaxboard', 'objax.util', 'objax.util.image',
           'objax.util.check', 'objax.export', 'objax.export.container']

_ENTRY = re.compile(r'^(\s+)\*{0,2}(\w+)\s*(\([^)]*\))?\s*:')


def documented_args(doc: str) -> set:
    """Parameter names listed in the `Args:` (or `Arguments:`) section of a Google-style docstring."""
    names = set()
    lines = inspect.cleandoc(doc or '').splitlines()
    for i, line in enumerate(lines):
        if line.strip() in ('Args:', 'Arguments:'):
            indent = len(line) - len(line.lstrip())
            entry_indent = None
            for body in lines[i + 1:]:
                if body.strip() and len(body) - len(body.lstrip()) <= indent:
                    break  # the section ended
                m = _ENTRY.match(body)
                if m and (entry_indent is None or len(m.group(1)) == entry_indent):
                    entry_indent = len(m.group(1))
                    names.add(m.group(2))
    return names


def _params(fn, skip_first: bool) -> list:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if skip_first and params and params[0].name in ('self', 'cls'):
        params = params[1:]
    return [p.name for p in params]


def _check(label: str, fn, docs: list, skip_first: bool, problems: list):
    params = _params(fn, skip_first)
    if not any(d and d.strip() for d in docs):
        problems.append(f'{label}: no docstring')
        return
    missing = [p for p in params if not any(p in documented_args(d) for d in docs)]
    if missing:
        problems.append(f'{label}: Args: lacks {", ".join(missing)}')


def _own(obj) -> bool:
    return (getattr(obj, '__module__', None) or '').startswith('objax')


def offenders() -> list:
    problems, seen = [], set()
    for modname in MODULES:
        module = importlib.import_module(modname)
        for name in module.__all__:
            obj = getattr(module, name)
            if id(obj) in seen or inspect.ismodule(obj) or not _own(obj):
                continue
            seen.add(id(obj))
            label = f'{obj.__module__}.{obj.__qualname__}' if hasattr(obj, '__qualname__') else f'{modname}.{name}'
            if inspect.isclass(obj):
                if issubclass(obj, (BaseException, enum.Enum)):
                    continue
                init = obj.__dict__.get('__init__') or next(
                    (c.__dict__['__init__'] for c in obj.__mro__ if '__init__' in c.__dict__), None)
                init_doc = init.__doc__ if init is not None and init is not object.__init__ else None
                if init is not None and init is not object.__init__:
                    _check(label, init, [obj.__doc__, init_doc], True, problems)
                elif not (obj.__doc__ or '').strip():
                    problems.append(f'{label}: no docstring')
                for mname, member in vars(obj).items():
                    if (mname.startswith('_') and mname != '__call__') or not inspect.isfunction(
                            inspect.unwrap(member) if not isinstance(member, (staticmethod, classmethod))
                            else member.__func__):
                        continue
                    fn = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                    _check(f'{label}.{mname}', fn, [fn.__doc__], not isinstance(member, staticmethod), problems)
            elif callable(obj) and (inspect.isfunction(obj) or inspect.isfunction(inspect.unwrap(obj))):
                _check(label, obj, [obj.__doc__], False, problems)
    return problems


def test_documented_args_parser():
    doc = """What.

    Args:
        x: the input.
        training (bool): mode,
            continued on a second line: not an entry.
        *args: extra.

    Returns:
        y: not an argument.
    """
    assert documented_args(doc) == {'x', 'training', 'args'}


def test_offender_detection():
    def good(a, b=1, *args, **kwargs):
        """Good.

        Args:
            a: one.
            b: two.
        """

    def bad(a, b):
        """Bad.

        Args:
            a: one.
        """
    problems = []
    _check('good', good, [good.__doc__], False, problems)
    _check('bad', bad, [bad.__doc__], False, problems)
    _check('none', lambda q: q, [None], False, problems)
    assert problems == ['bad: Args: lacks b', 'none: no docstring']


def test_public_api_documents_its_arguments():
    problems = offenders()
    assert not problems, f'{len(problems)} public functions/classes do not document their arguments:\n' + '\n'.join(
        problems)


if __name__ == '__main__':
    sys.stdout.write(''.join(line + '\n' for line in offenders()))
