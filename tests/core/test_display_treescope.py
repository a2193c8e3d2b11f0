"""Rich display with treescope (the optional extra objax[display]): modules, variables and VarCollections
render as trees naming each variable with its kind, shape, dtype, sharding and a value summary."""

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.zoo.wide_resnet import WideResNet

treescope = pytest.importorskip('treescope', reason='treescope is not installed: pip install -e ".[display]"')

SRC = Path(__file__).resolve().parents[2] / 'src'
# treescope 0.1.10 looks through numpy's attributes for its canonical names, touching the deprecated np.chararray.
pytestmark = pytest.mark.filterwarnings('ignore:The chararray class is deprecated:DeprecationWarning')


@pytest.fixture(scope='module')
def wrn():
    return WideResNet(nin=3, nclass=10, depth=28, width=2)


def copy_paths(page: str) -> set:
    """The paths of the tree's nodes, as the page's copy buttons give them."""
    return {html.unescape(p) for p in re.findall(r'data-copy="(.*?)"', page)}


def test_notebook_rendering_of_a_wide_resnet_names_every_variable(wrn):
    page = treescope.render_to_html(wrn, compressed=False)
    vc = wrn.vars()
    paths = copy_paths(page)
    for name in vc.keys():  # '(WideResNet)[1](WRNBlock).norm_1(BatchNorm2D).gamma' is at [1].norm_1.gamma
        path = re.sub(r'\([A-Za-z_]\w*\)', '', name)
        assert path in paths and f'{path}.value' in paths, name
    text = html.unescape(page)
    assert text.count('objax.TrainVar(') == sum(isinstance(v, objax.TrainVar) for v in vc)
    assert text.count('objax.StateVar(') == sum(type(v) is objax.StateVar for v in vc)
    assert 'objax.zoo.wide_resnet.WideResNet([' in text and 'objax.zoo.wide_resnet.WRNBlock(' in text
    assert '1,467,610 parameters' in text and 'in 130 variables' in text
    assert 'norm_1=' in text and 'conv_1=' in text and 'sharding=' in text


def test_collection_rendering_names_every_variable(wrn):
    text = html.unescape(treescope.render_to_html(wrn.vars(), compressed=False))
    assert all(repr(name) in text for name in wrn.vars().keys())
    assert text.startswith('<') and 'objax.VarCollection({' in text


def test_text_rendering_shows_kind_shape_dtype_sharding_and_summary():
    model = objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4)])
    model[0].w.assign(jn.arange(12, dtype=jn.float32).reshape(3, 4))
    text = treescope.render_to_text(model)
    assert text.splitlines()[0] == 'objax.nn.Sequential([  # 24 parameters, 8 state elements, 128 B in 6 variables'
    line = next(s for s in text.splitlines() if s.strip().startswith('w='))
    assert line.strip().startswith('w=objax.TrainVar(value=<jax.Array float32(3, 4) ≈5.5 ±3.5 [≥0.0, ≤')
    assert line.strip().endswith('nonzero:11>, sharding=cpu:0),')
    assert 'running_var=objax.StateVar(value=<jax.Array([[1., 1., 1., 1.]], dtype=float32)>' in text
    expanded = treescope.render_to_text(model[0].w)
    assert expanded.splitlines()[0] == 'objax.TrainVar(  # float32(3, 4), 12 elements'


def test_modules_with_their_own_vars_show_what_vars_gives():
    stack = objax.nn.Stack(lambda: objax.nn.Linear(4, 4), 3)  # vars(): the (3, ...) stacked variables
    model = objax.nn.MixedPrecision(objax.nn.Sequential([stack, objax.nn.Linear(4, 2)]))
    text = treescope.render_to_text(model)
    assert '__wrapped__=objax.nn.Sequential([' in text and '_template' not in text and '_layer' not in text
    assert "vars()=objax.VarCollection({'(Stack).layer(Linear).b': objax.TrainVar(" in text
    assert 'float32(3, 4, 4)' in text and text.count('objax.TrainVar(') == len(model.vars())
    page = treescope.render_to_html(model, compressed=False)
    assert ".__wrapped__[0].vars()['(Stack).layer(Linear).w'].value" in copy_paths(page)  # paths that evaluate


def test_sharded_variables_show_their_layout():
    if len(jax.devices()) < 8:
        pytest.skip('needs 8 devices (tests/conftest.py asks XLA for 8 CPU devices)')
    model = objax.nn.Linear(4, 16)
    mesh = objax.sharding.make_mesh({'data': 2, 'model': 4})
    objax.sharding.set_spec(model.w, jax.sharding.PartitionSpec(None, 'model'))
    objax.sharding.shard(model.vars(), mesh)
    text = treescope.render_to_text(model.vars())
    spec = str(jax.sharding.PartitionSpec(None, 'model'))  # P(None, 'model') in JAX 0.10
    assert f"sharding={spec} over mesh {{'data': 2, 'model': 4}}" in text and f'spec={spec}' in text
    assert "'(Linear).b': objax.TrainVar(" in text
    assert f'sharding={jax.sharding.PartitionSpec()} over mesh' in text


def test_plain_print_keeps_the_objax_format():
    model = objax.nn.Linear(3, 4)
    assert str(model.vars()).splitlines() == ['(Linear).b                  4 (4,)',
                                             '(Linear).w                 12 (3, 4)',
                                             '+Total(2)                  16']


def test_import_objax_does_not_import_treescope():
    code = ('import sys, objax, objax.nn, objax.util, objax.export; m = objax.nn.Linear(2, 2); repr(m); '
            'str(m.vars()); objax.util.summary(m); assert "treescope" not in sys.modules, "imported"')
    env = dict(os.environ, PYTHONPATH=str(SRC), JAX_PLATFORMS='cpu')
    proc = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_equal(proc.stdout, '')
