"""objax.util.summary: a table of sub-modules with parameter counts that add up to vars()."""

import re

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.zoo.wide_resnet import WideResNet


def numbers(line: str) -> list:
    return [int(n.replace(',', '')) for n in re.findall(r'(?<![\w.\[])\d[\d,]*(?![\w.\]])', line)]


@pytest.fixture(scope='module')
def wrn():
    return WideResNet(nin=3, nclass=10, depth=28, width=2)


def test_total_equals_the_trainvars_of_vars(wrn):
    vc = wrn.vars()
    parameters = sum(v.value.size for v in vc if isinstance(v, objax.TrainVar))
    state = sum(v.value.size for v in vc if not isinstance(v, objax.TrainVar))
    table = objax.util.summary(wrn)
    total = table.splitlines()[-1]
    assert total.startswith(f'Total ({len(vc)} variables)')
    assert numbers(total)[1:3] == [parameters, state] and parameters == 1_467_610
    assert total.endswith(objax._core.display.human_bytes(sum(v.value.nbytes for v in vc)))
    assert objax.util.summary(vc) == table  # a module and its vars() give the same table


def test_rows_are_the_sub_modules_and_add_up(wrn):
    lines = objax.util.summary(wrn).splitlines()
    assert lines[0].split() == ['Module', 'Parameters', 'State', 'Bytes'] and set(lines[1]) == {'-'}
    assert lines[2].startswith('(WideResNet) ')
    children = [line for line in lines[3:-2] if re.match(r'  \S', line)]
    assert [c.split()[0] for c in children] == (['[0](Conv2D)'] + [f'[{i}](WRNBlock)' for i in range(1, 13)]
                                                + ['[13](BatchNorm2D)', '[16](Linear)'])
    assert sum(numbers(c)[-2] for c in children) == numbers(lines[2])[0]  # the parameters of the children
    assert len(objax.util.summary(wrn, depth=1).splitlines()) == 5
    deep = objax.util.summary(wrn, depth=None)
    assert '    .conv_1(Conv2D)' in deep and '.w TrainVar' not in deep


def test_variables_listed_with_kind_dtype_and_shape():
    model = objax.nn.Sequential([objax.nn.Linear(3, 4), objax.nn.BatchNorm0D(4)])
    lines = objax.util.summary(model, variables=True).splitlines()
    row = next(line for line in lines if '.w ' in line)
    assert row.split()[:3] == ['.w', 'TrainVar', 'float32[3,'] and numbers(row) == [12, 0, 48]
    row = next(line for line in lines if '.running_var ' in line)
    assert 'StateVar float32[1, 4]' in row and numbers(row)[-3:-1] == [0, 4]


def test_shared_variables_count_once_and_loose_variables_in_the_total():
    model = objax.nn.Linear(3, 4)
    opt = objax.optimizer.Momentum(model.vars())
    vc = model.vars() + opt.vars() + objax.VarCollection({'loose': objax.StateVar(jn.zeros(5, jn.bfloat16))})
    total = objax.util.summary(vc).splitlines()[-1]
    distinct = {id(v._storage()): v for v in vc}.values()
    assert numbers(total)[:3] == [len(distinct), 16, 16 + 5]
    assert total.endswith('138 B')  # 32 float32 values and 5 bfloat16


def test_bad_arguments():
    with pytest.raises(TypeError, match='expected a Module or a VarCollection, got dict'):
        objax.util.summary({})
    with pytest.raises(ValueError, match='summary\\(depth\\)'):
        objax.util.summary(objax.nn.Linear(2, 2), depth=0)
    assert objax.util.summary(objax.VarCollection()).splitlines()[-1].split()[:3] == ['Total', '(0', 'variables)']
    assert np.all([len(line) < 120 for line in objax.util.summary(objax.nn.Linear(2, 2)).splitlines()])
