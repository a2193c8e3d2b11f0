"""Invariants of the source layout of src/objax, read from the syntax trees only (nothing is imported).

1. The files of the private package objax/_core are in a fixed order (CORE_ORDER below, lowest first): each may
   import only files before it; and no import circle exists anywhere in src/objax, counting the imports made
   inside functions.
2. No objax import inside a function, except the package's lazy subpackage loader (`objax.__getattr__`, which
   loads objax.nn, objax.optimizer... on first use so that `import objax` stays quick and the core never
   imports the subpackages).
3. No file uses another file's underscore names: no `from objax.x import _y` and no `<objax module>._y`
   (private modules such as objax._core or objax._threefry may be imported; the names they offer are public).
4. No `obj.__dict__[...] = ...` (nor `del`, `pop`, `update`... on a `__dict__`) on another object: attributes
   are set through their class (a class may write its own `self.__dict__`, e.g. to bypass its own __setattr__).
5. The Objax 1.8 module paths kept for compatibility hold only imports and `__all__` (and a docstring).
6. One definition each of reduce_first, the PNG encoder, the forced-argument merge and AssignmentError.
7. No class longer than 200 lines.
8. `__all__` lists only names its module defines or imports.

Each checker takes the root folder of a package named objax, so the tests at the end plant a small package in
tmp_path to show that each check finds what it looks for.
"""

import ast
import pathlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

SRC = pathlib.Path(__file__).resolve().parents[1] / 'src' / 'objax'

# The files of objax/_core, lowest first: each imports only files listed before it (objax.typing, a module of
# type aliases outside the core, is the lowest of all).
CORE_ORDER = [
    'objax.typing',
    'objax._core.reprs',
    'objax._core.display',
    'objax._core.structure',
    'objax._core.array_ops',
    'objax._core.invariant',
    'objax._core.refs',
    'objax._core.frames',
    'objax._core.variables',
    'objax._core.layout',
    'objax._core.aliases',
    'objax._core.lending',
    'objax._core.pure',
    'objax._core.replicate',
    'objax._core.collection',
    'objax._core.modules',
    'objax._core.introspect',
    'objax._core.functions',
    'objax._core.transform',
    'objax._core.jit',
    'objax._core.gradient',
    'objax._core.vectorize',
    'objax._core.remat',
    'objax._core.control_flow',
    'objax._core.parallel_program',
    'objax._core.parallel',
]

# The one function allowed to import objax modules when called: (module, function).
LAZY_LOADER = ('objax', '__getattr__')

# Files that only keep an Objax 1.8 module path (or an earlier objax path) importable.
COMPAT_PATHS = ['variable.py', 'varcollection.py', 'module.py', 'gradient.py', 'jit.py', 'vectorize.py', 'parallel.py',
                'nn/layers.py', 'util/tracing.py', 'functional/core/__init__.py', 'functional/core/activation.py',
                'functional/core/ops.py', 'functional/core/pooling.py', 'privacy/dpsgd/privacyaccountant.py']

MAX_CLASS_LINES = 200


# ---------------------------------------------------------------------------------------------------------------
# Reading the package


class Source:
    """One file of the package: its dotted module name, path and syntax tree."""

    def __init__(self, name: str, path: pathlib.Path):
        self.name, self.path = name, path
        self.tree = ast.parse(path.read_text(), str(path))
        self.is_package = path.name == '__init__.py'

    def where(self, node: ast.AST) -> str:
        return f'{self.path.name if self.path.name != "__init__.py" else self.name + "/__init__.py"}' \
               f':{getattr(node, "lineno", 0)} ({self.name})'


def read_package(root: pathlib.Path) -> Dict[str, Source]:
    """{dotted name: Source} of every .py file under `root`, the folder of the package `root.name`."""
    out = {}
    for path in sorted(root.rglob('*.py')):
        parts = (root.name,) + path.relative_to(root).with_suffix('').parts
        if parts[-1] == '__init__':
            parts = parts[:-1]
        out['.'.join(parts)] = Source('.'.join(parts), path)
    return out


def _with_parents(tree: ast.AST) -> Iterator[Tuple[ast.AST, List[ast.AST]]]:
    """Every node with the list of its ancestors (outermost first)."""
    stack = [(tree, [])]
    while stack:
        node, parents = stack.pop()
        yield node, parents
        for child in ast.iter_child_nodes(node):
            stack.append((child, parents + [node]))


def _function_of(parents: List[ast.AST]) -> Optional[str]:
    names = [p.name if not isinstance(p, ast.Lambda) else '<lambda>' for p in parents
             if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))]
    return '.'.join(names) if names else None


class Import:
    """An import of an objax module: where it is, what it loads, the names taken from it."""

    def __init__(self, source: Source, node: ast.AST, target: str, names: Sequence[str], function: Optional[str]):
        self.source, self.node, self.target, self.names, self.function = source, node, target, list(names), function

    def __repr__(self):
        inside = f' in {self.function}()' if self.function else ''
        return f'{self.source.where(self.node)}{inside} imports {self.target}'


def _absolute(source: Source, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    base = source.name.split('.')
    base = base if source.is_package else base[:-1]
    base = base[:len(base) - node.level + 1]
    return '.'.join(base + ([node.module] if node.module else []))


def _dynamic_target(node: ast.Call, package: str) -> Optional[str]:
    """The module named by `importlib.import_module(...)` / `__import__(...)` if it is one of the package's
    (an f-string counts by its literal beginning)."""
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ''
    if name not in ('import_module', '__import__') or not node.args:
        return None
    arg = node.args[0]
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        text = arg.value
    elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
        text = str(arg.values[0].value) + '*'
    else:
        return None
    return text if text == package or text.startswith(package + '.') else None


def imports(sources: Dict[str, Source], package: str) -> List[Import]:
    """Every import of a module of `package` (static or importlib), with the module it targets: `from a import b`
    targets a.b when that is a module, else a."""
    out = []
    for source in sources.values():
        for node, parents in _with_parents(source.tree):
            function = _function_of(parents)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + '.'):
                        out.append(Import(source, node, alias.name, [], function))
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(source, node)
                if module != package and not module.startswith(package + '.'):
                    continue
                plain = [a.name for a in node.names if f'{module}.{a.name}' not in sources]
                for alias in node.names:
                    if f'{module}.{alias.name}' in sources:
                        out.append(Import(source, node, f'{module}.{alias.name}', [], function))
                if plain:
                    out.append(Import(source, node, module, plain, function))
            elif isinstance(node, ast.Call):
                target = _dynamic_target(node, package)
                if target is not None:
                    out.append(Import(source, node, target, [], function))
    return out


# ---------------------------------------------------------------------------------------------------------------
# The checkers: each returns its findings, one line each (empty: the invariant holds)


def layer_problems(root: pathlib.Path, order: Sequence[str], core: str) -> List[str]:
    """Imports inside the package `core` that do not target a module listed before the importing one."""
    sources = read_package(root)
    rank = {name: i for i, name in enumerate(order)}
    problems = [f'{name} is in {core} but not in the layer order' for name in sources
                if name.startswith(core + '.') and name not in rank]
    for imp in imports(sources, root.name):
        if imp.source.name == core and imp.target != core:
            problems.append(f'{imp}: the package file of {core} imports nothing')
        elif imp.source.name in rank and imp.source.name.startswith(core + '.'):
            if imp.target not in rank or rank[imp.target] >= rank[imp.source.name]:
                problems.append(f'{imp}: not a lower layer')
    return problems


def import_cycles(root: pathlib.Path) -> List[List[str]]:
    """The import circles of the package (strongly connected groups of modules), function-level imports
    included; importlib targets ending in `*` (the lazy loader's f-string) are left out."""
    sources = read_package(root)
    graph = {name: set() for name in sources}
    for imp in imports(sources, root.name):
        if imp.target in graph and imp.target != imp.source.name:
            graph[imp.source.name].add(imp.target)
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def function_level_imports(root: pathlib.Path, allowed: Tuple[str, str] = LAZY_LOADER) -> List[str]:
    """Imports of the package's modules made inside functions, except in the one allowed loader."""
    sources = read_package(root)
    return [repr(imp) for imp in imports(sources, root.name)
            if imp.function is not None and (imp.source.name, imp.function) != allowed]


def _private(name: str) -> bool:
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def _dotted(node: ast.AST) -> Optional[str]:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f'{inner}.{node.attr}' if inner else None
    return None


def private_names_across_files(root: pathlib.Path) -> List[str]:
    """`from <pkg module> import _name` and `<pkg module>._name` where _name is not itself a module."""
    sources = read_package(root)
    package, problems = root.name, []
    for imp in imports(sources, package):
        for name in imp.names:
            if _private(name):
                problems.append(f'{imp.source.where(imp.node)}: from {imp.target} import {name}')
    for source in sources.values():
        bound = {}  # local name -> module of the package it is bound to
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == package or alias.name.startswith(package + '.'):
                        if alias.asname:
                            bound[alias.asname] = alias.name
                        else:
                            bound[alias.name.split('.')[0]] = alias.name.split('.')[0]
            elif isinstance(node, ast.ImportFrom):
                module = _absolute(source, node)
                for alias in node.names:
                    if f'{module}.{alias.name}' in sources:
                        bound[alias.asname or alias.name] = f'{module}.{alias.name}'
        for node in ast.walk(source.tree):
            if not isinstance(node, ast.Attribute) or not _private(node.attr):
                continue
            dotted = _dotted(node.value)
            if not dotted or dotted.split('.')[0] not in bound:
                continue
            module = '.'.join([bound[dotted.split('.')[0]]] + dotted.split('.')[1:])
            if module in sources and f'{module}.{node.attr}' not in sources:
                problems.append(f'{source.where(node)}: {dotted}.{node.attr} (a private name of {module})')
    return problems


_DICT_MUTATORS = {'pop', 'popitem', 'update', 'setdefault', 'clear', '__setitem__', '__delitem__'}


def _is_dict_of_object(node: ast.AST) -> bool:
    """`x.__dict__` or `vars(x)`, x being another object than `self`."""
    if isinstance(node, ast.Attribute) and node.attr == '__dict__':
        owner = node.value
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'vars' and node.args:
        owner = node.args[0]
    else:
        return False
    return not (isinstance(owner, ast.Name) and owner.id == 'self')


def dict_writes(root: pathlib.Path) -> List[str]:
    """Writes into another object's `__dict__`: `x.__dict__[k] = v`, `del x.__dict__[k]`, `x.__dict__.pop(k)`..."""
    problems = []
    for source in read_package(root).values():
        for node in ast.walk(source.tree):
            targets = []
            if isinstance(node, (ast.Assign, ast.Delete)):
                targets = node.targets
            elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
                targets = [node.target]
            for target in targets:
                if isinstance(target, ast.Subscript) and _is_dict_of_object(target.value):
                    problems.append(f'{source.where(node)}: writes {ast.unparse(target)}')
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in _DICT_MUTATORS and _is_dict_of_object(node.func.value)):
                problems.append(f'{source.where(node)}: {ast.unparse(node.func)}(...)')
    return problems


def impure_compat_files(root: pathlib.Path, paths: Sequence[str]) -> List[str]:
    """Statements other than a docstring, imports and `__all__` assignments in the compatibility files."""
    problems = []
    for rel in paths:
        path = root / rel
        if not path.exists():
            problems.append(f'{rel}: missing')
            continue
        tree = ast.parse(path.read_text())
        for i, node in enumerate(tree.body):
            if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # the docstring
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
                node, ast.AugAssign) else []
            if targets and all(isinstance(t, ast.Name) and t.id == '__all__' for t in targets):
                continue
            problems.append(f'{rel}:{node.lineno}: {type(node).__name__} (only imports and __all__ belong here)')
    return problems


def _is_delegation(node: ast.FunctionDef) -> bool:
    """A function whose body (after its docstring) is one `return <call>`: it hands its work to another."""
    body = node.body[1:] if node.body and isinstance(node.body[0], ast.Expr) and isinstance(
        node.body[0].value, ast.Constant) else node.body
    return len(body) == 1 and isinstance(body[0], ast.Return) and isinstance(body[0].value, ast.Call)


def _saves_png(node: ast.AST) -> bool:
    """A call `<x>.save(..., format='png')` (PIL's encoder), any letter case."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == 'save'
            and any(k.arg == 'format' and isinstance(k.value, ast.Constant) and str(k.value.value).lower() == 'png'
                    for k in node.keywords))


# What must be written once: (description, names of its definitions, or None for the PNG encoder).
SINGLE_DEFINITIONS = [
    ('reduce_first', {'reduce_first', '_reduce_first'}),
    ('the PNG encoder (a function calling .save(..., format="png"))', None),
    ('the merge of forced arguments', {'force_positional', '_force_positional', 'override_args_kwargs'}),
    ('AssignmentError', {'AssignmentError', 'AssignmentCheckError'}),
]


def repeated_definitions(root: pathlib.Path) -> List[str]:
    """Each entry of SINGLE_DEFINITIONS defined more than once (a function that only returns a call of another
    does not count, nor does a name bound to the same object)."""
    found = {what: [] for what, _ in SINGLE_DEFINITIONS}
    for source in read_package(root).values():
        for node in ast.walk(source.tree):
            for what, names in SINGLE_DEFINITIONS:
                if names is None:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(
                            _saves_png(n) for n in ast.walk(node)):
                        found[what].append(source.where(node))
                elif isinstance(node, ast.ClassDef) and node.name in names:
                    found[what].append(source.where(node))
                elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
                    if not _is_delegation(node):
                        found[what].append(source.where(node))
                elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda) and any(
                        isinstance(t, ast.Name) and t.id in names for t in node.targets):
                    found[what].append(source.where(node))
    return [f'{what} is defined {len(places)} times: {", ".join(places)}' for what, places in found.items()
            if len(places) > 1]


def long_classes(root: pathlib.Path, limit: int = MAX_CLASS_LINES) -> List[str]:
    """Classes longer than `limit` lines (decorators and docstring included)."""
    problems = []
    for source in read_package(root).values():
        for node in ast.walk(source.tree):
            if isinstance(node, ast.ClassDef):
                first = min([node.lineno] + [d.lineno for d in node.decorator_list])
                lines = node.end_lineno - first + 1
                if lines > limit:
                    problems.append(f'{source.where(node)}: class {node.name} has {lines} lines')
    return problems


def _bound_names(tree: ast.Module) -> Optional[set]:
    """Names bound at module level, or None when a star import makes them unknowable."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any(a.name == '*' for a in node.names):
            return None
    for node in tree.body:
        for sub in ast.walk(node) if isinstance(node, (ast.If, ast.Try, ast.With)) else [node]:
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(sub.name)
            elif isinstance(sub, (ast.Import, ast.ImportFrom)):
                names.update((a.asname or a.name).split('.')[0] for a in sub.names)
            elif isinstance(sub, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in sub.targets if isinstance(sub, ast.Assign) else [sub.target]:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def unbound_all_names(root: pathlib.Path) -> List[str]:
    """Names listed in a literal `__all__` that the module neither defines nor imports (a module `__getattr__`
    that would provide them does not count)."""
    problems = []
    for source in read_package(root).values():
        names = _bound_names(source.tree)
        if names is None:
            continue
        for node in source.tree.body:
            if isinstance(node, (ast.Assign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == '__all__' for t in targets):
                    for item in ast.walk(node.value):
                        if isinstance(item, ast.Constant) and isinstance(item.value, str) and item.value not in names:
                            problems.append(f'{source.where(node)}: __all__ lists {item.value!r}, which the module '
                                            f'does not have')
    return problems


# ---------------------------------------------------------------------------------------------------------------
# The invariants of src/objax


def _none(problems: list):
    assert not problems, f'{len(problems)} found:\n' + '\n'.join(map(str, problems))


def test_core_files_import_only_lower_layers():
    assert (SRC / '_core').is_dir()
    _none(layer_problems(SRC, CORE_ORDER, 'objax._core'))


def test_no_import_circle_anywhere():
    _none(import_cycles(SRC))


def test_no_function_level_objax_import_but_the_lazy_loader():
    _none(function_level_imports(SRC))
    loader = [imp for imp in imports(read_package(SRC), 'objax') if imp.function is not None]
    assert {(imp.source.name, imp.function) for imp in loader} <= {LAZY_LOADER}


def test_no_private_name_crosses_files():
    _none(private_names_across_files(SRC))


def test_no_writes_into_an_objects_dict():
    _none(dict_writes(SRC))


def test_compat_paths_are_pure_reexports():
    _none(impure_compat_files(SRC, COMPAT_PATHS))


def test_one_definition_each():
    _none(repeated_definitions(SRC))


def test_no_class_over_200_lines():
    _none(long_classes(SRC))


def test_all_lists_only_names_the_module_has():
    _none(unbound_all_names(SRC))


# ---------------------------------------------------------------------------------------------------------------
# Each checker finds what it looks for: a small planted package


def _plant(tmp_path: pathlib.Path, files: Dict[str, str]) -> pathlib.Path:
    root = tmp_path / 'objax'
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for folder in [root] + [p for p in root.rglob('*') if p.is_dir()]:
        (folder / '__init__.py').touch()
    return root


def test_layer_checker_finds_an_upward_import_and_an_unlisted_file(tmp_path):
    root = _plant(tmp_path, {'_core/low.py': 'from objax._core import high\n',
                             '_core/high.py': 'from objax._core.low import x\n',
                             '_core/stray.py': ''})
    problems = layer_problems(root, ['objax._core.low', 'objax._core.high'], 'objax._core')
    assert any('low' in p and 'imports objax._core.high' in p for p in problems), problems
    assert any('stray' in p for p in problems), problems
    assert not any('high.py' in p for p in problems), problems
    good = _plant(tmp_path / 'good', {'_core/low.py': '', '_core/high.py': 'from objax._core.low import x\n'})
    assert layer_problems(good, ['objax._core.low', 'objax._core.high'], 'objax._core') == []


def test_cycle_checker_counts_function_level_imports(tmp_path):
    root = _plant(tmp_path, {'a.py': 'import objax.b\n',
                             'b.py': 'def f():\n    from objax import a\n    return a\n',
                             'c.py': 'from objax.b import f\n'})
    assert import_cycles(root) == [['objax.a', 'objax.b']]


def test_function_level_checker_allows_only_the_loader(tmp_path):
    root = _plant(tmp_path, {'__init__.py': "def __getattr__(name):\n    import importlib\n"
                                            "    return importlib.import_module(f'objax.{name}')\n",
                             'a.py': "def f():\n    from objax.b import g\n    return g\n",
                             'b.py': "def g():\n    import importlib\n    return importlib.import_module('objax.a')\n"})
    problems = function_level_imports(root)
    assert len(problems) == 2 and any('a.py' in p for p in problems) and any('b.py' in p for p in problems)


def test_private_name_checker(tmp_path):
    root = _plant(tmp_path, {'a.py': '_hidden = 1\nopen_ = 2\n',
                             'b.py': 'from objax.a import _hidden\n',
                             'c.py': 'from objax import a\nx = a._hidden\n',
                             'd.py': 'import objax.a as m\nx = m._hidden\n',
                             'e.py': 'from objax import _core\nfrom objax.a import open_\nx = _core.y\n',
                             '_core/y.py': ''})
    problems = private_names_across_files(root)
    assert len(problems) == 3, problems
    assert {p.split(':')[0] for p in problems} == {'b.py', 'c.py', 'd.py'}


def test_dict_write_checker(tmp_path):
    root = _plant(tmp_path, {'a.py': "def f(v):\n    v.__dict__['x'] = 1\n    del v.__dict__['y']\n"
                                     "    v.__dict__.pop('z', None)\n    vars(v)['w'] = 2\n"
                                     "    return v.__dict__.get('x')\n",
                             'b.py': "class B:\n    def f(self):\n        self.__dict__['x'] = 1\n"})
    assert len(dict_writes(root)) == 4 and all('a.py' in p for p in dict_writes(root))


def test_compat_checker(tmp_path):
    root = _plant(tmp_path, {'old.py': '"""Doc."""\nfrom objax.new import A\n__all__ = ["A"]\n__all__ += []\n',
                             'bad.py': 'from objax.new import A\n\ndef helper():\n    pass\n__all__ = ["A"]\n',
                             'new.py': 'A = 1\n'})
    assert impure_compat_files(root, ['old.py']) == []
    problems = impure_compat_files(root, ['bad.py', 'gone.py'])
    assert len(problems) == 2 and 'FunctionDef' in problems[0] and 'missing' in problems[1]


def test_single_definition_checker(tmp_path):
    root = _plant(tmp_path, {
        'a.py': 'def reduce_first(x):\n    return x[0]\n\n'
                'def encode(p):\n    p.save(b, format="png")\n\n'
                'def force_positional(f, a, k, n):\n    a = list(a)\n    return a, k\n\n'
                'class AssignmentError(ValueError):\n    pass\n',
        'b.py': '_reduce_first = lambda x: x[0]\n\n'
                'def to_png(p):\n    p.save(out, format="PNG")\n\n'
                'def override_args_kwargs(f, a, k, n):\n    """Doc."""\n    return force_positional(f, a, k, n)\n\n'
                'class AssignmentCheckError(ValueError, AssertionError):\n    pass\n'})
    problems = repeated_definitions(root)
    assert len(problems) == 3, problems
    assert not any('forced' in p for p in problems)  # override_args_kwargs only delegates


def test_long_class_checker(tmp_path):
    body = ''.join(f'    x{i} = {i}\n' for i in range(200))
    root = _plant(tmp_path, {'a.py': f'class Long:\n{body}\n\nclass Short:\n    pass\n'})
    assert [p.split(': ')[1] for p in long_classes(root)] == ['class Long has 201 lines']


def test_all_checker(tmp_path):
    root = _plant(tmp_path, {'a.py': "from objax.b import B\n\ndef f():\n    pass\n\n"
                                     "__all__ = ['B', 'f', 'Missing']\n\n"
                                     "def __getattr__(name):\n    return 1\n"})
    problems = unbound_all_names(root)
    assert len(problems) == 1 and "'Missing'" in problems[0]


def test_tests_mirror_the_source_layout():
    """Every subpackage of objax (and the private core) has a test folder of the same name, and every top-level
    test file is named after a module of objax or a whole-package concern."""
    tests = pathlib.Path(__file__).resolve().parent
    packages = sorted(p.name for p in SRC.iterdir() if p.is_dir() and (p / '__init__.py').exists())
    expected = {'core' if name == '_core' else name for name in packages}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and any(p.glob('test_*.py'))}
    assert expected <= folders, f'packages without a test folder: {sorted(expected - folders)}'
    modules = {p.stem for p in SRC.glob('*.py')} | {'source', 'deprecations'}
    top = {p.stem[len('test_'):] for p in tests.glob('test_*.py')}
    # test_<module>.py or test_<module>_<aspect>.py (test_sharding_slots.py tests objax/sharding.py)
    unnamed = sorted(name for name in top if name not in modules and name.split('_')[0] not in modules)
    assert not unnamed, f'top-level test files named after no module of objax: {unnamed}'
