"""VarCollection and Module.vars(): names, conflicts, deduplication, assign, subset, rename, cycles."""

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.util import Renamer


class Pair(objax.Module):
    def __init__(self):
        self.a = objax.TrainVar(jn.zeros(2))
        self.s = objax.StateVar(jn.ones(3))


def test_names_of_nested_modules_and_lists():
    class Outer(objax.Module):
        def __init__(self):
            self.p = Pair()
            self.items = objax.ModuleList([Pair(), objax.StateVar(jn.zeros(1))])
            self.plain = [objax.TrainVar(jn.zeros(1))]  # not looked into
            self.number = 3

    names = list(Outer().vars().keys())
    assert names == ['(Outer).p(Pair).a', '(Outer).p(Pair).s', '(Outer).items(ModuleList)[0](Pair).a',
                     '(Outer).items(ModuleList)[0](Pair).s', '(Outer).items(ModuleList)[1]']
    assert list(Pair().vars('scope/').keys()) == ['scope/(Pair).a', 'scope/(Pair).s']


def test_add_conflict_lists_names_and_allows_same_variable():
    p, q = Pair(), Pair()
    with pytest.raises(ValueError, match=r"Name conflicts.*'\(Pair\)\.a', '\(Pair\)\.s'"):
        p.vars() + q.vars()
    both = p.vars() + p.vars()  # same names bound to the same variables: fine
    assert len(both) == 2


def test_update_refuses_without_partial_change():
    p, q = Pair(), Pair()
    vc = p.vars()
    other = objax.VarCollection({'new': objax.StateVar(jn.zeros(1)), '(Pair).a': q.a})
    with pytest.raises(ValueError):
        vc.update(other)
    assert list(vc.keys()) == ['(Pair).a', '(Pair).s']
    with pytest.raises(TypeError, match="must be variables; got 'x' \\(int\\)"):
        vc.update({'x': 1})
    with pytest.raises(TypeError):
        vc['y'] = 'not a variable'


def test_iteration_deduplicates_shared():
    p = Pair()
    shared = p.vars('one') + p.vars('two')
    assert len(shared) == 4
    assert [id(v) for v in shared] == [id(p.a), id(p.s)]
    assert len(shared.tensors()) == 2
    assert len(shared.tensors(objax.TrainVar)) == 1


def test_assign_checks_everything_before_writing():
    p = Pair()
    vc = p.vars()
    with pytest.raises(ValueError, match='expected 2 tensors .* got 1'):
        vc.assign([jn.ones(2)])
    with pytest.raises(ValueError, match=r'\(Pair\)\.s: .*shape \(4,\)'):
        vc.assign([jn.ones(2), jn.ones(4)])  # first would be fine, second is wrong: nothing written
    np.testing.assert_array_equal(p.a.value, np.zeros(2))
    vc.assign([jn.ones(2) * 5, jn.ones(3) * 7])
    np.testing.assert_array_equal(p.a.value, 5 * np.ones(2))
    np.testing.assert_array_equal(p.s.value, 7 * np.ones(3))


def test_subset_and_rename():
    class Holder(objax.Module):
        def __init__(self):
            self.p = Pair()
            self.r = objax.TrainRef(self.p.a)
            self.g = objax.random.Generator(1)

    vc = Holder().vars()
    assert list(vc.subset(objax.TrainVar).keys()) == ['(Holder).p(Pair).a']
    assert list(vc.subset(objax.BaseState, is_not=objax.RandomState).keys()) == [
        '(Holder).p(Pair).s', '(Holder).r']
    assert list(vc.subset(is_not=(objax.TrainRef, objax.RandomState)).keys()) == [
        '(Holder).p(Pair).a', '(Holder).p(Pair).s']
    assert list(vc.subset(objax.RandomState).keys()) == ['(Holder).g(Generator)._key']
    renamed = vc.rename(Renamer({'(Holder).': 'h.', '(Pair).': ''}))
    assert list(renamed.keys())[:2] == ['h.pa', 'h.ps']
    regex = vc.rename(Renamer([(r'\((\w+)\)', r'\1/')]))
    assert list(regex.keys())[0] == 'Holder/.pPair/.a'
    chained = Renamer({'(Pair).': ''}, chain=Renamer({'a': 'b'}))  # chain runs after the rules (Objax 1.8)
    assert chained('(Pair).a') == 'b'


def test_print_format_and_total():
    p = Pair()
    text = str(p.vars())
    assert text == ('(Pair).a                    2 (2,)\n'
                    '(Pair).s                    3 (3,)\n'
                    '+Total(2)                   5')


def test_cycle_and_self_reference_give_clear_error():
    class Node(objax.Module):
        def __init__(self):
            self.w = objax.TrainVar(jn.zeros(1))

    a = Node()
    a.me = a
    with pytest.raises(ValueError, match='cycle'):
        a.vars()
    b, c = Node(), Node()
    b.next, c.next = c, b
    with pytest.raises(ValueError, match='cycle'):
        b.vars()
    lst = objax.ModuleList()
    lst.append(lst)
    with pytest.raises(ValueError, match='cycle'):
        lst.vars()
    # The same sub-module twice (no cycle) is fine.
    d = Node()
    holder = objax.ModuleList([d, d])
    assert len(holder.vars()) == 2 and len(list(holder.vars())) == 1


def test_module_list_slice_keeps_type():
    class MyList(objax.ModuleList):
        pass

    items = MyList([Pair(), Pair(), Pair()])
    assert type(items[1:]) is MyList and len(items[1:]) == 2
    assert isinstance(items[0], Pair)


def test_function_and_force_args():
    p = Pair()
    f = objax.Function(lambda x: x + p.a.value, p.vars())
    np.testing.assert_array_equal(f(jn.ones(2)), np.ones(2))
    assert list(f.vars('F').keys()) == ['F{<lambda>}(Pair).a', 'F{<lambda>}(Pair).s']
    with pytest.raises(TypeError, match='vc must be a VarCollection'):
        objax.Function(lambda: 0, [p.a])

    @objax.Function.with_vars(p.vars())
    def g(x):
        return x * 2
    assert isinstance(g, objax.Function) and list(g.vars().keys()) == ['{g}(Pair).a', '{g}(Pair).s']

    counter = objax.StateVar(jn.zeros(()))

    def uses_globals(x):
        return x + counter.value + p.a.value

    auto = objax.Function.auto_vars(uses_globals)
    assert {id(v) for v in auto.vars()} == {id(counter), id(p.a), id(p.s)}

    class Layer(objax.Module):
        def __init__(self):
            self.w = objax.TrainVar(jn.ones(1))

        def __call__(self, x, training=True, scale=1.0):
            return x * self.w.value * scale if training else x

    class Net(objax.Module):
        def __init__(self):
            self.l1 = objax.ForceArgs(Layer(), training=False)
            self.l2 = objax.ForceArgs(Layer(), scale=3.0)

        def __call__(self, x):
            return self.l2(self.l1(x))

    net = Net()
    assert list(net.vars().keys()) == ['(Net).l1(Layer).w', '(Net).l2(Layer).w']
    np.testing.assert_allclose(net(jn.ones(1) * 2, ), [6.])
    objax.ForceArgs.undo(net, scale=objax.ForceArgs.ANY)
    assert isinstance(net.l2, Layer) and isinstance(net.l1, objax.ForceArgs)
    objax.ForceArgs.undo(net, training=True)  # value does not match: kept
    assert isinstance(net.l1, objax.ForceArgs)
    objax.ForceArgs.undo(net)
    assert isinstance(net.l1, Layer)
