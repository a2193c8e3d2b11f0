"""objax.io.Checkpoint: numbering, keep_ckpts, restore, corrupted files with fallback, and a save killed by SIGKILL."""

import glob
import os
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.io import Checkpoint, load_var_collection, save_var_collection


def make_vc(value: float) -> objax.VarCollection:
    return objax.VarCollection({'w': objax.TrainVar(jn.full((2, 3), value, jn.float32)),
                                'step': objax.StateVar(jn.asarray(int(value), jn.int32))})


def values(vc):
    return float(vc['w'].value[0, 0]), int(vc['step'].value)


def ckpt_files(logdir):
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(str(logdir), 'ckpt', Checkpoint.FILE_MATCH)))


def test_save_keeps_newest_and_restore_loads_newest(tmp_path, capsys):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=2)
    vc = make_vc(0)
    assert ckpt.restore(vc) == (0, '') and values(vc) == (0.0, 0)
    for idx in (1, 5, 12):
        ckpt.save(make_vc(idx), idx)
    assert ckpt_files(tmp_path) == ['0000000005.npz', '0000000012.npz']
    assert sorted(os.listdir(tmp_path / 'ckpt')) == ckpt_files(tmp_path)  # no temporary files left
    idx, filename = ckpt.restore(vc)
    assert (idx, filename) == (12, str(tmp_path / 'ckpt' / '0000000012.npz'))
    assert values(vc) == (12.0, 12)
    assert 'Resuming from' in capsys.readouterr().out
    assert ckpt.restore(vc, idx=5)[0] == 5 and values(vc) == (5.0, 5)
    assert ckpt.restore(vc, idx=np.int64(12))[0] == 12 and values(vc) == (12.0, 12)
    with pytest.raises(FileNotFoundError, match=r'idx=7.*available indices: \[5, 12\]'):
        ckpt.restore(vc, idx=7)


def test_files_are_objax_npz_and_indices_sort_numerically(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=3, verbose=False)
    for idx in (9, 10, 123456789012):  # more than 10 digits still sorts by number
        ckpt.save(make_vc(idx % 1000), idx)
    assert ckpt.restore(make_vc(0))[0] == 123456789012
    vc = make_vc(0)
    load_var_collection(str(tmp_path / 'ckpt' / '0000000010.npz'), vc)
    assert values(vc) == (10.0, 10)
    with np.load(str(tmp_path / 'ckpt' / '0000000009.npz'), allow_pickle=False) as data:
        assert data['names'].tolist() == ['w', 'step']


def test_checkpoint_idx_and_constants():
    assert Checkpoint.checkpoint_idx('/a/b/ckpt/0000000042.npz') == 42
    assert Checkpoint.checkpoint_idx('0000000000.npz') == 0
    with pytest.raises(ValueError, match='not a checkpoint file name'):
        Checkpoint.checkpoint_idx('latest.npz')
    assert (Checkpoint.DIR_NAME, Checkpoint.FILE_MATCH, Checkpoint.FILE_FORMAT) == ('ckpt', '*.npz', '%010d.npz')
    assert Checkpoint.LOAD_FN is load_var_collection and Checkpoint.SAVE_FN is save_var_collection


def test_foreign_and_temporary_files_are_ignored(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=1, verbose=False)
    ckpt.save(make_vc(3), 3)
    (tmp_path / 'ckpt' / 'notes.npz').write_bytes(b'not a checkpoint')
    (tmp_path / 'ckpt' / '.0000000009.npz.123.abcd.tmp').write_bytes(b'partial')
    vc = make_vc(0)
    assert ckpt.restore(vc)[0] == 3 and values(vc) == (3.0, 3)
    ckpt.save(make_vc(4), 4)
    assert ckpt_files(tmp_path) == ['0000000004.npz', 'notes.npz']


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match='keep_ckpts'):
        Checkpoint(str(tmp_path), keep_ckpts=0)
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=1, verbose=False)
    with pytest.raises(ValueError, match='expected an int >= 0'):
        ckpt.save(make_vc(1), -1)
    with pytest.raises(ValueError, match='expected an int >= 0'):
        ckpt.save(make_vc(1), 1.5)
    with pytest.raises(TypeError, match='VarCollection'):
        ckpt.save({'w': 1}, 1)
    no_dir = Checkpoint(str(tmp_path / 'absent'), keep_ckpts=1, makedir=False)
    assert not os.path.exists(tmp_path / 'absent')
    with pytest.raises(FileNotFoundError, match='does not exist'):
        no_dir.save(make_vc(1), 1)
    assert no_dir.restore(make_vc(0)) == (0, '')


@pytest.mark.parametrize('damage', ['truncated', 'empty', 'garbage'])
def test_corrupted_newest_names_it_and_fallback_restores_previous(tmp_path, damage):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=3, verbose=False)
    for idx in (1, 2, 3):
        ckpt.save(make_vc(idx), idx)
    newest = tmp_path / 'ckpt' / '0000000003.npz'
    data = newest.read_bytes()
    newest.write_bytes({'truncated': data[:len(data) // 3], 'empty': b'', 'garbage': os.urandom(len(data))}[damage])
    vc = make_vc(0)
    with pytest.raises(ValueError, match=r'0000000003\.npz is unreadable.*restore\(vc, idx=2\)'):
        ckpt.restore(vc)
    assert values(vc) == (0.0, 0)
    assert ckpt.restore(vc, idx=2) == (2, str(tmp_path / 'ckpt' / '0000000002.npz')) and values(vc) == (2.0, 2)
    vc = make_vc(0)
    with pytest.warns(UserWarning, match=r'0000000003\.npz is unreadable'):
        assert ckpt.restore(vc, fallback=True)[0] == 2
    assert values(vc) == (2.0, 2)


def test_fallback_with_every_file_unreadable(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=2, verbose=False)
    for idx in (1, 2):
        ckpt.save(make_vc(idx), idx)
        (tmp_path / 'ckpt' / ('%010d.npz' % idx)).write_bytes(b'x')
    vc = make_vc(0)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=r'No readable checkpoint.*\[1, 2\]'):
        ckpt.restore(vc, fallback=True)
    os.remove(tmp_path / 'ckpt' / '0000000001.npz')
    with pytest.raises(ValueError, match=r'0000000002\.npz is unreadable.*no older checkpoint'):
        ckpt.restore(vc)
    assert values(vc) == (0.0, 0)


def test_model_mismatch_is_not_skipped_by_fallback(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=2, verbose=False)
    ckpt.save(make_vc(1), 1)
    other = objax.VarCollection({'w': objax.TrainVar(jn.zeros((3, 3)))})
    with pytest.raises(ValueError, match="'w': shape"):
        ckpt.restore(other, fallback=True)


def test_load_and_save_fn_get_the_checkpoint_path(tmp_path):
    """As in Objax 1.8, SAVE_FN(path, vc) and LOAD_FN(path, vc) receive the path logdir/ckpt/%010d.npz."""
    calls = []

    class PathBased(Checkpoint):
        @staticmethod
        def SAVE_FN(path, vc):
            calls.append(('save', path))
            assert isinstance(path, str)
            np.savez(path, **{k: np.asarray(v.value) for k, v in vc.items()})  # a path-based writer

        @staticmethod
        def LOAD_FN(path, vc):
            calls.append(('load', path))
            with np.load(path) as data:
                for k, v in vc.items():
                    v.assign(jn.asarray(data[k]))

    ckpt = PathBased(str(tmp_path), keep_ckpts=1, verbose=False)
    ckpt.save(make_vc(4), 4)
    vc = make_vc(0)
    expected = os.path.join(str(tmp_path), 'ckpt', '0000000004.npz')
    assert ckpt.restore(vc) == (4, expected) and values(vc) == (4.0, 4)
    assert calls == [('save', expected), ('load', expected)]
    assert sorted(os.listdir(tmp_path / 'ckpt')) == ['0000000004.npz']


def test_load_fn_with_renamer(tmp_path):
    class Renaming(Checkpoint):
        @staticmethod
        def LOAD_FN(path, vc):
            load_var_collection(path, vc, renamer=lambda k: 'new_' + k)

    ckpt = Renaming(str(tmp_path), keep_ckpts=1, verbose=False)
    ckpt.save(make_vc(4), 4)
    vc = make_vc(0).rename(lambda k: 'new_' + k)
    assert ckpt.restore(vc)[0] == 4 and float(vc['new_w'].value[0, 0]) == 4.0


_CHILD = textwrap.dedent('''
    import sys
    import jax.numpy as jn
    import objax
    from objax.io import Checkpoint
    # 4 x 64 MiB of zeros: the write takes long enough to be interrupted.
    vc = objax.VarCollection({f'big{i}': objax.StateVar(jn.zeros((16, 1024, 1024), jn.float32)) for i in range(4)})
    print('saving', flush=True)
    Checkpoint(sys.argv[1], keep_ckpts=1, verbose=False).save(vc, 2)
    print('saved', flush=True)
''')


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    logdir = str(tmp_path)
    ckpt = Checkpoint(logdir, keep_ckpts=1, verbose=False)
    ckpt.save(make_vc(1), 1)
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    child = subprocess.Popen([sys.executable, '-c', _CHILD, logdir], stdout=subprocess.PIPE, env=env)
    try:
        assert child.stdout.readline().strip() == b'saving'
        temp, deadline = None, time.monotonic() + 60
        while temp is None and time.monotonic() < deadline and child.poll() is None:
            found = [p for p in glob.glob(os.path.join(logdir, 'ckpt', '.*.tmp')) if os.path.getsize(p) > 0]
            temp = found[0] if found else None
        assert temp is not None, 'the save finished before it could be interrupted'
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert ckpt_files(tmp_path) == ['0000000001.npz']  # no partial file matches the checkpoint pattern
    vc = make_vc(0)
    assert ckpt.restore(vc) == (1, os.path.join(logdir, 'ckpt', '0000000001.npz'))
    assert values(vc) == (1.0, 1)
    assert os.path.exists(temp)  # the killed save left its (large) temporary file behind
    ckpt.save(make_vc(3), 3)  # the next save works, and removes the temporary of the dead process (no leftovers)
    assert sorted(os.listdir(tmp_path / 'ckpt')) == ['0000000003.npz']
