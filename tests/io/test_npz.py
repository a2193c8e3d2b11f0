"""objax.io.save_var_collection / load_var_collection: Objax 1.8 .npz layout, all-or-nothing loading, bad files."""

import io
import os
import pickle
import zipfile

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.io import load_var_collection, save_var_collection


class Net(objax.Module):
    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.w = objax.TrainVar(jn.asarray(rng.normal(size=(3, 4)), jn.float32))
        self.b = objax.TrainVar(jn.asarray(rng.normal(size=(4,)), jn.float32))
        self.count = objax.StateVar(jn.asarray(seed, jn.int32))


class Opt(objax.Module):
    """Optimizer-like state: TrainRefs to the model's TrainVars plus one buffer per variable."""

    def __init__(self, vc: objax.VarCollection):
        self.train_vars = objax.ModuleList(objax.TrainRef(v) for v in vc.subset(objax.TrainVar))
        self.m = objax.ModuleList(objax.StateVar(jn.full(v.value.shape, 0.5, v.value.dtype))
                                  for v in vc.subset(objax.TrainVar))


def snapshot(vc):
    return {k: np.array(v.value) for k, v in vc.items()}


def assert_same(vc, expected):
    for k, v in vc.items():
        np.testing.assert_array_equal(np.asarray(v.value), expected[k], err_msg=k)
        assert v.value.dtype == expected[k].dtype, k


def test_round_trip_path_and_dtypes(tmp_path):
    src, dst = Net(1), Net(2)
    path = str(tmp_path / 'model.npz')
    save_var_collection(path, src.vars())
    assert sorted(os.listdir(tmp_path)) == ['model.npz']  # written atomically: no temporary left behind
    load_var_collection(path, dst.vars())
    assert_same(dst.vars(), snapshot(src.vars()))
    assert dst.count.value.dtype == jn.int32 and isinstance(dst.w, objax.TrainVar)


def test_round_trip_file_object_and_pathlike(tmp_path):
    src, dst = Net(1), Net(2)
    buf = io.BytesIO()
    save_var_collection(buf, src.vars())
    buf.seek(0)
    load_var_collection(buf, dst.vars())
    assert_same(dst.vars(), snapshot(src.vars()))
    save_var_collection(tmp_path / 'p.npz', Net(3).vars())
    load_var_collection(tmp_path / 'p.npz', dst.vars())
    assert_same(dst.vars(), snapshot(Net(3).vars()))


def test_file_readable_by_numpy_alone(tmp_path):
    net = Net(4)
    vc = net.vars()
    save_var_collection(str(tmp_path / 'm.npz'), vc)
    with np.load(str(tmp_path / 'm.npz'), allow_pickle=False) as data:
        assert sorted(data.files) == ['0', '1', '2', 'names']
        assert data['names'].tolist() == list(vc.keys())
        for i, (name, var) in enumerate(vc.items()):
            np.testing.assert_array_equal(data[str(i)], np.asarray(var.value), err_msg=name)


def test_objax18_layout_written_by_numpy_loads(tmp_path):
    net = Net(0)
    names = list(net.vars().keys())
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = -np.arange(4, dtype=np.float32)
    path = str(tmp_path / 'old.npz')
    np.savez(path, names=np.array(names), **{'0': w, '1': b, '2': np.array(7, np.int32)})
    load_var_collection(path, net.vars())
    np.testing.assert_array_equal(net.w.value, w)
    np.testing.assert_array_equal(net.b.value, b)
    assert int(net.count.value) == 7


def test_shared_variable_saved_once_and_trainref_as_its_trainvar(tmp_path):
    net = Net(5)
    opt = Opt(net.vars())
    vc = net.vars() + opt.vars() + objax.VarCollection({'alias.w': net.w})
    path = str(tmp_path / 'all.npz')
    save_var_collection(path, vc)
    with np.load(path) as data:
        names = data['names'].tolist()
        # w, b once (model names), count, then the two momentum buffers; no TrainRef and no alias entries.
        assert names == ['(Net).w', '(Net).b', '(Net).count', '(Opt).m(ModuleList)[0]', '(Opt).m(ModuleList)[1]']
        np.testing.assert_array_equal(data['0'], np.asarray(net.w.value))
    # TrainRefs first: the value is stored under the TrainRef's name, still the TrainVar's value.
    ref_first = opt.vars() + net.vars()
    save_var_collection(path, ref_first)
    with np.load(path) as data:
        names = data['names'].tolist()
        assert names[0] == '(Opt).train_vars(ModuleList)[0]' and '(Net).w' not in names
        np.testing.assert_array_equal(data['0'], np.asarray(net.w.value))
    other = Net(6)
    other_opt = Opt(other.vars())
    load_var_collection(path, other_opt.vars() + other.vars())
    np.testing.assert_array_equal(other.w.value, net.w.value)
    # Loading with the names in the other order also works: any name of a variable may match.
    other2 = Net(7)
    load_var_collection(path, other2.vars() + Opt(other2.vars()).vars())
    np.testing.assert_array_equal(other2.b.value, net.b.value)


def test_renamer_applies_to_stored_names(tmp_path):
    """As in Objax 1.8, the renamer maps the names stored in the file to the collection's names."""

    class Pair(objax.Module):
        def __init__(self, seed):
            self.conv = objax.nn.Conv2D(2, 3, 3)
            self.conv.w.assign(objax.random.normal(self.conv.w.value.shape, generator=objax.random.Generator(seed)))
            self.conv.b.assign(jn.full(self.conv.b.value.shape, float(seed)))

    a, b = Pair(1), Pair(2)
    path = str(tmp_path / 'renamed.npz')
    save_var_collection(path, a.vars().rename(objax.util.Renamer({'(Conv2D)': '(MyConv2D)'})))
    with np.load(path) as data:
        assert sorted(data['names'].tolist()) == ['(Pair).conv(MyConv2D).b', '(Pair).conv(MyConv2D).w']
    load_var_collection(path, b.vars(), renamer=objax.util.Renamer({'(MyConv2D)': '(Conv2D)'}))
    assert_same(b.vars(), snapshot(a.vars()))
    # Without the renamer nothing matches: the error lists the missing variables and the unused stored names.
    c = Pair(3)
    before = snapshot(c.vars())
    with pytest.raises(ValueError) as info:
        load_var_collection(path, c.vars())
    text = str(info.value)
    assert "2 missing from the file: '(Pair).conv(Conv2D)" in text
    assert "2 unused in the file: '(Pair).conv(MyConv2D)" in text
    assert not isinstance(info.value, AssertionError)
    # A renamer that is applied to the wrong side shows what each stored name became.
    with pytest.raises(ValueError, match=r"'\(Pair\)\.conv\(MyConv2D\)\.w' \(renamed '\(Pair\)\.conv\(X\)\.w'\)"):
        load_var_collection(path, c.vars(), renamer=lambda s: s.replace('MyConv2D', 'X'))
    assert_same(c.vars(), before)
    with pytest.raises(TypeError, match='renamer'):
        load_var_collection(path, c.vars(), renamer=lambda s: 3)
    # Two stored names renamed to the name of one variable: refused, nothing changed.
    with pytest.raises(ValueError, match='several entries'):
        load_var_collection(path, c.vars(), renamer=lambda s: '(Pair).conv(Conv2D).w')
    assert_same(c.vars(), before)


def test_renamer_spec_example(tmp_path):
    """The spec's renamer example, verbatim: '(MyConv2D).w/b' in the file load into b's '(Conv2D).w/b'."""
    a, b = objax.nn.Conv2D(2, 4, 3), objax.nn.Conv2D(2, 4, 3)
    a.b.assign(jn.arange(4, dtype=jn.float32).reshape(a.b.value.shape))
    path = str(tmp_path / 'a.npz')
    save_var_collection(path, a.vars().rename(objax.util.Renamer({'(Conv2D)': '(MyConv2D)'})))
    with np.load(path) as data:
        assert sorted(data['names'].tolist()) == ['(MyConv2D).b', '(MyConv2D).w']
    load_var_collection(path, b.vars(), renamer=objax.util.Renamer({'(MyConv2D)': '(Conv2D)'}))
    np.testing.assert_array_equal(b.w.value, a.w.value)
    np.testing.assert_array_equal(b.b.value, a.b.value)


def test_entries_matching_no_variable_are_ignored_unless_strict(tmp_path):
    """As in Objax 1.8, a model loads from a model + optimizer checkpoint; strict=True refuses the extra entries."""
    net = Net(4)
    opt = objax.optimizer.Momentum(net.vars())
    for m in opt.vars().subset(objax.StateVar):
        m.assign(jn.full(m.value.shape, 0.25, m.value.dtype))
    path = str(tmp_path / 'model_and_opt.npz')
    save_var_collection(path, net.vars() + opt.vars())
    fresh = Net(5)
    load_var_collection(path, fresh.vars())
    assert_same(fresh.vars(), snapshot(net.vars()))
    other = Net(6)
    before = snapshot(other.vars())
    with pytest.raises(ValueError, match=r"2 unexpected in the file \(no variable of that name\): '\(Momentum\)"):
        load_var_collection(path, other.vars(), strict=True)
    assert_same(other.vars(), before)
    load_var_collection(path, other.vars() + objax.optimizer.Momentum(other.vars()).vars(), strict=True)
    assert_same(other.vars(), snapshot(net.vars()))


def test_shape_mismatch_is_an_assertion_error(tmp_path):
    """A shape mismatch on restore is catchable as AssertionError (Objax 1.8) and as ValueError."""
    wide = objax.zoo.wide_resnet.WideResNet(3, 10, depth=10, width=2)
    path = str(tmp_path / 'wide.npz')
    save_var_collection(path, wide.vars())
    narrow = objax.zoo.wide_resnet.WideResNet(3, 10, depth=10, width=1)
    before = snapshot(narrow.vars())
    with pytest.raises(AssertionError, match='shape'):
        load_var_collection(path, narrow.vars())
    with pytest.raises(ValueError, match='shape'):
        load_var_collection(path, narrow.vars())
    ckpt = objax.io.Checkpoint(str(tmp_path), keep_ckpts=1, verbose=False)
    ckpt.save(wide.vars(), 1)
    with pytest.raises(AssertionError, match='shape'):
        ckpt.restore(narrow.vars(), fallback=True)  # a model mismatch is not an unreadable file: no fallback
    with pytest.raises(objax.io.ShapeMismatchError):
        ckpt.restore(narrow.vars(), idx=1)
    assert_same(narrow.vars(), before)


def test_bfloat16_round_trip(tmp_path):
    src = objax.VarCollection({'x': objax.TrainVar(jn.arange(5, dtype=jn.bfloat16) / 3)})
    dst = objax.VarCollection({'x': objax.TrainVar(jn.zeros(5, jn.bfloat16))})
    save_var_collection(str(tmp_path / 'bf.npz'), src)
    load_var_collection(str(tmp_path / 'bf.npz'), dst)
    assert dst['x'].value.dtype == jn.bfloat16
    np.testing.assert_array_equal(np.asarray(dst['x'].value, np.float32), np.asarray(src['x'].value, np.float32))


# ---- bad files: each gives a clear error and leaves the collection unchanged ----

def _good_bytes() -> bytes:
    buf = io.BytesIO()
    save_var_collection(buf, Net(1).vars())
    return buf.getvalue()


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _pickled_object_array() -> bytes:
    names = list(Net().vars().keys())
    return _npz(names=np.array(names), **{'0': np.array([{'evil': 1}, None], dtype=object),
                                          '1': np.zeros(4, np.float32), '2': np.array(0, np.int32)})


def _names():
    return list(Net().vars().keys())


BAD_FILES = {
    'empty': (lambda: b'', 'cannot be read'),
    'truncated': (lambda: _good_bytes()[:len(_good_bytes()) // 2], 'cannot be read'),
    'not a zip': (lambda: b'hello, this is just text\n' * 10, 'not an .npz archive'),
    'a pickle': (lambda: pickle.dumps({'0': np.zeros(3)}), 'not an .npz archive'),
    'a single npy': (lambda: (lambda b: (np.save(b, np.zeros(3)), b.getvalue())[1])(io.BytesIO()), 'single .npy'),
    'pickled object array': (_pickled_object_array, 'pickled Python objects'),
    'no names': (lambda: _npz(**{'0': np.zeros((3, 4), np.float32)}), 'no `names`'),
    'keys not matching names': (lambda: _npz(names=np.array(_names()), **{'0': np.zeros((3, 4), np.float32)}),
                                r"absent: \['1', '2'\]"),
    'wrong shape': (lambda: _npz(names=np.array(_names()), **{'0': np.zeros((4, 3), np.float32),
                                                              '1': np.zeros(4, np.float32),
                                                              '2': np.array(0, np.int32)}),
                    r"'\(Net\)\.w': shape \(4, 3\) in the file, \(3, 4\) in the collection"),
    'wrong dtype': (lambda: _npz(names=np.array(_names()), **{'0': np.zeros((3, 4), np.float64),
                                                              '1': np.zeros(4, np.float32),
                                                              '2': np.array(0, np.int64)}),
                    r"'\(Net\)\.w': dtype float64 in the file, float32"),
    'missing name': (lambda: _npz(names=np.array(_names()[:2]), **{'0': np.zeros((3, 4), np.float32),
                                                                   '1': np.zeros(4, np.float32)}),
                     r"1 missing from the file: '\(Net\)\.count'"),
    'missing name, extra name': (lambda: _npz(names=np.array(_names()[:2] + ['extra']),
                                              **{'0': np.zeros((3, 4), np.float32), '1': np.zeros(4, np.float32),
                                                 '2': np.zeros(2)}),
                                 r"1 missing from the file: '\(Net\)\.count'\n  1 unused in the file: 'extra'"),
}


@pytest.mark.parametrize('kind', sorted(BAD_FILES))
def test_bad_file_gives_clear_error_and_changes_nothing(tmp_path, kind):
    make, message = BAD_FILES[kind]
    path = tmp_path / 'bad.npz'
    path.write_bytes(make())
    net = Net(3)
    before = snapshot(net.vars())
    with pytest.raises(ValueError, match=message) as info:
        load_var_collection(str(path), net.vars())
    assert 'bad.npz' in str(info.value)  # the error names the file
    assert_same(net.vars(), before)
    with pytest.raises(ValueError, match=message):  # same through an open file object
        with open(path, 'rb') as f:
            load_var_collection(f, net.vars())
    assert_same(net.vars(), before)


def test_one_error_lists_every_problem(tmp_path):
    path = str(tmp_path / 'many.npz')
    np.savez(path, names=np.array(['(Net).w', '(Net).b', 'extra1', 'extra2']),
             **{'0': np.zeros((3, 5), np.float32), '1': np.zeros(4, np.int32), '2': np.zeros(1), '3': np.zeros(1)})
    net = Net(3)
    before = snapshot(net.vars())
    with pytest.raises(ValueError) as info:
        load_var_collection(path, net.vars())
    text = str(info.value)
    assert isinstance(info.value, AssertionError)  # one of the problems is a shape mismatch
    for needle in ["missing from the file: '(Net).count'", "'extra1', 'extra2'", "'(Net).w': shape (3, 5)",
                   "'(Net).b': dtype int32", 'nothing was changed']:
        assert needle in text, (needle, text)
    assert_same(net.vars(), before)


def test_corrupted_payload_detected_by_crc(tmp_path):
    data = bytearray(_good_bytes())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo('0.npy')
    # flip the last byte of the stored array data (the local header has variable-length name and extra fields)
    start = info.header_offset + 30 + int.from_bytes(data[info.header_offset + 26:info.header_offset + 28], 'little') \
        + int.from_bytes(data[info.header_offset + 28:info.header_offset + 30], 'little')
    data[start + info.compress_size - 1] ^= 0xFF
    net = Net(3)
    before = snapshot(net.vars())
    with pytest.raises(ValueError, match=r"entry '0' \('\(Net\)\.w'\) cannot be read: .*Bad CRC-32"):
        load_var_collection(io.BytesIO(bytes(data)), net.vars())
    assert_same(net.vars(), before)


def test_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match='VarCollection'):
        save_var_collection(str(tmp_path / 'x.npz'), {'w': 1})
    with pytest.raises(TypeError, match='VarCollection'):
        load_var_collection(str(tmp_path / 'x.npz'), [])
    with pytest.raises(FileNotFoundError):
        load_var_collection(str(tmp_path / 'absent.npz'), Net().vars())
    with pytest.raises(FileNotFoundError, match='does not exist'):
        save_var_collection(str(tmp_path / 'no' / 'dir.npz'), Net().vars())
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_previous_file(tmp_path):
    path = str(tmp_path / 'keep.npz')
    save_var_collection(path, Net(1).vars())
    before = open(path, 'rb').read()

    class Boom(objax.StateVar):
        @property
        def value(self):
            raise RuntimeError('device lost')

    vc = Net(2).vars() + objax.VarCollection({'boom': Boom(jn.zeros(1))})
    with pytest.raises(RuntimeError, match='device lost'):
        save_var_collection(path, vc)
    assert open(path, 'rb').read() == before and os.listdir(tmp_path) == ['keep.npz']
