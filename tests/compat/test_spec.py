"""Objax 1.8's behaviour (shared/spec/objax18_behaviour.md): the concrete examples not already checked elsewhere.

Audit of where each behaviour's own example is checked (PrivateGradValues, and Parallel inside `vc.replicate()`,
belong to other work):
- Objax 1.8's module paths (`objax.variable.VarCollection`, ...): test_compat_names.
- Variables' unchecked `reduce`, checked `assign` as an AssertionError, `round`, and VarCollection refusing to
  rebind a name: test_compat_core.
- Variable names of functions, transforms and nested or wrapped modules (Function's `{name}` prefix,
  find_used_variables, `__wrapped__`, Jit/Vectorize/Parallel) and ForceArgs: test_compat_core; ForceArgs.undo in a
  Sequential and the transforms' names written out literally: here.
- Reprs (`objax.Class(arguments)` and the function format): test_compat_repr, test_nn_*::test_repr*,
  test_optimizer_checks, test_optimizer_ema, test_random_threefry, test_nn_batchnorm; the Generator's seed shown:
  here.
- Variable writes inside gradient transforms: test_core_pure.
- Signatures of Grad and GradValues, Vectorize's arity checks, Parallel's list arguments, and GradValues returning
  f's outputs as f returned them: test_compat_core.
- Dropout(keep=0): test_nn_dropout. Sequential's return value: test_nn_sequential.
- Creation order of variables (bias before weight, gamma before beta): test_nn_linear, test_nn_conv,
  test_nn_groupnorm, test_compat_checkpoints.
- interpolate's scale_factor rule: test_functional_interpolate. Element order of the space/batch/channel
  rearrangements: test_functional_rearrange.
- Truncated-normal initialisers scaled by the std of the actual bounds: test_nn_init.
- ExponentialMovingAverage's state and averages: test_optimizer_ema.
- The renamer maps the names stored in the file: test_io_npz; several names and TrainRefs: here.
- A shape mismatch on restore is an AssertionError: test_io_npz. Checkpoint's SAVE_FN and LOAD_FN receive the
  path: test_io_checkpoint.
- override_args_kwargs and Renamer: test_util; to_tuple of any length: here.
- DNNet's final activation, the ResNetV2 family and WideResNet's depths: test_zoo_objax18. RNN's `state` only from
  init_state: test_zoo; a new StateVar each call: here. VGG19: test_zoo_vgg. to_png: test_util.
- Dropout's generator key named `._key`: test_nn_dropout, test_compat_checkpoints.
- A compiled function that reads a variable missing from its collection (frozen in, with a warning):
  test_core_transforms, test_core_pure; the documentation's empty-collection example: here.
- Strictness that would reject what Objax 1.8 accepted is dropped: test_compat_core, test_nn_dropout,
  test_nn_batchnorm, test_io_npz, test_compat_checkpoints; Checkpoint.restore: here.
"""

import io
import warnings

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.util import to_tuple


def test_generator_seed_shown_is_the_last_given():
    gen = objax.random.Generator(seed=123)
    assert repr(gen) == 'objax.random.Generator(seed=123)'
    gen.seed(5)
    assert repr(gen) == 'objax.random.Generator(seed=5)'


def test_to_tuple_accepts_any_length():
    assert to_tuple((1, 2), 3) == (1, 2)
    assert to_tuple([1, 2], 3) == (1, 2)
    assert to_tuple(1.5, 3) == (1.5, 1.5, 1.5)
    assert to_tuple((1, 2, 3, 4), 2) == (1, 2, 3, 4)


class _Scale(objax.Module):
    def __init__(self):
        self.w = objax.TrainVar(jn.array([2., 3.]))
        self.calls = objax.StateVar(jn.zeros(()))

    def __call__(self, x):
        return x * self.w.value


def test_constant_optimization_with_an_empty_collection():
    """Objax 1.8's documented `objax.Jit(model, objax.VarCollection())` freezes the values, here with a warning."""
    model = _Scale()
    frozen = objax.Jit(model, objax.VarCollection())
    with pytest.warns(objax.VariableOutsideCollectionWarning, match=r'\(_Scale\)\.w'):
        np.testing.assert_array_equal(frozen(jn.ones(2)), [2., 3.])
    model.w.assign(jn.array([10., 10.]))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # once per compiled function and variable
        np.testing.assert_array_equal(frozen(jn.ones(2)), [2., 3.])  # the value compiled in, as in Objax 1.8
    np.testing.assert_array_equal(objax.Jit(model)(jn.ones(2)), [10., 10.])
    with warnings.catch_warnings():
        warnings.simplefilter('error', objax.VariableOutsideCollectionWarning)
        with pytest.raises(objax.VariableOutsideCollectionWarning):
            objax.Jit(model, objax.VarCollection())(jn.ones(2))

    def count(x):
        model.calls.value += 1
        return model(x)

    with warnings.catch_warnings():
        warnings.simplefilter('ignore', objax.VariableOutsideCollectionWarning)  # the read of `calls` before it
        with pytest.raises(objax.VariableOutsideCollectionError, match='calls'):
            objax.Jit(count, objax.VarCollection({'w': model.w}))(jn.ones(2))
    assert float(model.calls.value) == 0  # the write raised and changed nothing


def test_checkpoint_restore_ignores_entries_of_other_variables(tmp_path):
    model = objax.nn.Linear(3, 2)
    opt = objax.optimizer.Momentum(model.vars())
    ckpt = objax.io.Checkpoint(str(tmp_path), keep_ckpts=2, verbose=False)
    ckpt.save(model.vars() + opt.vars(), 4)
    fresh = objax.nn.Linear(3, 2)
    assert ckpt.restore(fresh.vars())[0] == 4
    np.testing.assert_array_equal(fresh.w.value, model.w.value)
    np.testing.assert_array_equal(fresh.b.value, model.b.value)


def test_several_names_load_from_the_first_found_and_trainrefs_load_into_their_trainvar():
    w = objax.TrainVar(jn.zeros(2))
    vc = objax.VarCollection({'first': w}) + objax.VarCollection({'second': w})
    f = io.BytesIO()
    np.savez(f, names=np.array(['second', 'first']), **{'0': np.array([1., 1.], np.float32),
                                                         '1': np.array([2., 2.], np.float32)})
    f.seek(0)
    objax.io.load_var_collection(f, vc)
    np.testing.assert_array_equal(w.value, [2., 2.])  # 'first' comes first in vc
    f = io.BytesIO()
    np.savez(f, names=np.array(['second']), **{'0': np.array([3., 4.], np.float32)})
    f.seek(0)
    objax.io.load_var_collection(f, vc)
    np.testing.assert_array_equal(w.value, [3., 4.])
    ref = objax.VarCollection({'(SGD).train_vars(ModuleList)[0]': objax.TrainRef(w)})
    f = io.BytesIO()
    np.savez(f, names=np.array(['(SGD).train_vars(ModuleList)[0]']), **{'0': np.array([5., 6.], np.float32)})
    f.seek(0)
    objax.io.load_var_collection(f, ref)
    np.testing.assert_array_equal(w.value, [5., 6.])


def test_init_state_makes_a_new_statevar_each_call():
    from objax.zoo.rnn import RNN
    model = RNN(3, 2, 2)
    model.init_state(1)
    first = model.state
    before = model.vars()
    model.init_state(4)
    assert model.state is not first and model.state.value.shape == (4, 3)
    assert before['(RNN).state'] is first and first.value.shape == (1, 3)  # built earlier: keeps the old one
    assert model.vars()['(RNN).state'] is model.state


def test_transform_names_literally():
    from objax.privacy.dpsgd import PrivateGradValues
    lin = objax.nn.Linear(2, 1)
    assert list(objax.Jit(lin).vars().keys()) == ['(Jit)(Linear).b', '(Jit)(Linear).w']
    assert list(objax.Vectorize(lin).vars().keys()) == ['(Vectorize)(Linear).b', '(Vectorize)(Linear).w']
    assert list(objax.Parallel(lin).vars().keys()) == ['(Parallel)(Linear).b', '(Parallel)(Linear).w']

    def loss_fn(x):
        return lin(x).mean()

    assert list(objax.Jit(loss_fn, lin.vars()).vars().keys()) == ['(Jit){loss_fn}(Linear).b',
                                                                 '(Jit){loss_fn}(Linear).w']
    gv = PrivateGradValues(loss_fn, lin.vars(), noise_multiplier=1.0, l2_norm_clip=0.5, microbatch=1)
    assert list(gv.vars().keys()) == ['(PrivateGradValues)(Linear).b', '(PrivateGradValues)(Linear).w',
                                      '(PrivateGradValues).keygen(Generator)._key']


def test_undo_replaces_emptied_wrappers_in_module_lists():
    drop = objax.nn.Dropout(0.5)
    seq = objax.nn.Sequential([objax.ForceArgs(drop, training=False), objax.nn.Linear(2, 2)])
    objax.ForceArgs.undo(seq, training=True)  # another value: kept
    assert isinstance(seq[0], objax.ForceArgs)
    objax.ForceArgs.undo(seq, training=objax.ForceArgs.ANY)
    assert seq[0] is drop
