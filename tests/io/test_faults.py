"""objax.io under faults: saves that must not lose data, corrupt files, races, memory, leftovers."""

import glob
import io
import os
import stat
import subprocess
import sys
import threading
import tracemalloc
import warnings
import zipfile

import jax.numpy as jn
import numpy as np
import pytest

import objax
from objax.io import Checkpoint, UnreadableFileError, load_var_collection, save_var_collection


def make_vc(value: float) -> objax.VarCollection:
    return objax.VarCollection({'w': objax.TrainVar(jn.full((2, 3), value, jn.float32)),
                                'step': objax.StateVar(jn.asarray(int(value), jn.int32))})


def values(vc):
    return float(vc['w'].value[0, 0]), int(vc['step'].value)


def listing(logdir):
    return sorted(os.listdir(os.path.join(str(logdir), 'ckpt')))


def stored(path):
    vc = make_vc(-1)
    load_var_collection(str(path), vc)
    return values(vc)


# ---- 1: a save never deletes the file it has just written ----

def test_save_below_the_newest_index_keeps_itself_and_warns(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=2, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # counting up never warns
        for idx in (10, 11, 12):
            ckpt.save(make_vc(idx), idx)
    assert listing(tmp_path) == ['0000000011.npz', '0000000012.npz']
    # A run restarted in the same logdir that counts from 0 again.
    with pytest.warns(UserWarning, match=r'idx=0.*already holds checkpoint 12.*restore\(\) will not load this save'):
        ckpt.save(make_vc(0), 0)
    assert listing(tmp_path) == ['0000000000.npz', '0000000011.npz', '0000000012.npz']
    assert stored(tmp_path / 'ckpt' / '0000000000.npz') == (0.0, 0)
    with pytest.warns(UserWarning, match='already holds checkpoint 12'):
        ckpt.save(make_vc(1), 1)
    # Older saves of this run are rotated out; the newer checkpoints of the old run are never deleted.
    assert listing(tmp_path) == ['0000000001.npz', '0000000011.npz', '0000000012.npz']
    assert stored(tmp_path / 'ckpt' / '0000000001.npz') == (1.0, 1)
    assert stored(tmp_path / 'ckpt' / '0000000012.npz') == (12.0, 12)


def test_keep_one_and_resave_same_index(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=1, verbose=False)
    ckpt.save(make_vc(3), 3)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        ckpt.save(make_vc(4), 3)  # the same index again replaces it
    assert listing(tmp_path) == ['0000000003.npz'] and stored(tmp_path / 'ckpt' / '0000000003.npz') == (4.0, 4)


# ---- 5: only names that FILE_FORMAT produces are checkpoints ----

def test_files_with_other_names_are_neither_restored_nor_deleted(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=1, verbose=False)
    ckpt.save(make_vc(2), 2)
    save_var_collection(str(tmp_path / 'ckpt' / '0000000099.backup.npz'), make_vc(99))
    save_var_collection(str(tmp_path / 'ckpt' / '99.npz'), make_vc(98))
    save_var_collection(str(tmp_path / 'ckpt' / '00000000097.npz'), make_vc(97))
    vc = make_vc(0)
    assert ckpt.restore(vc) == (2, str(tmp_path / 'ckpt' / '0000000002.npz')) and values(vc) == (2.0, 2)
    ckpt.save(make_vc(3), 3)
    assert listing(tmp_path) == sorted(['00000000097.npz', '0000000003.npz', '0000000099.backup.npz', '99.npz'])
    assert ckpt.restore(vc)[0] == 3 and values(vc) == (3.0, 3)

    class Short(Checkpoint):
        FILE_FORMAT = '%d.npz'

    short = Short(str(tmp_path), keep_ckpts=5, verbose=False)
    assert short.restore(vc) == (99, str(tmp_path / 'ckpt' / '99.npz')) and values(vc) == (98.0, 98)


# ---- 6: re-saving keeps the file's permission bits ----

@pytest.mark.parametrize('saver', ['npz', 'safetensors', 'checkpoint'])
def test_resave_keeps_the_file_mode(tmp_path, saver):
    old_umask = os.umask(0o022)
    try:
        if saver == 'checkpoint':
            ckpt = Checkpoint(str(tmp_path), keep_ckpts=2, verbose=False)
            path = str(tmp_path / 'ckpt' / '0000000001.npz')
            save = lambda vc: ckpt.save(vc, 1)  # noqa: E731
        else:
            path = str(tmp_path / f'model.{saver}')
            fn = save_var_collection if saver == 'npz' else objax.io.save_safetensors
            save = lambda vc: fn(path, vc)  # noqa: E731
        save(make_vc(1))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644  # a new file follows the umask
        os.chmod(path, 0o600)
        save(make_vc(2))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        os.chmod(path, 0o640)
        save(make_vc(3))
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    finally:
        os.umask(old_umask)


# ---- 8: every unreadable file is an UnreadableFileError naming it ----

def _small_file() -> bytes:
    buf = io.BytesIO()
    save_var_collection(buf, make_vc(7))
    return buf.getvalue()


def test_single_byte_corruptions_are_detected_or_harmless():
    data = _small_file()
    outcomes = {'unreadable': 0, 'loaded': 0}
    for pos in range(len(data)):
        for flip in (0x01, 0x80, 0xFF):
            bad = bytearray(data)
            bad[pos] ^= flip
            vc = make_vc(0)
            try:
                load_var_collection(io.BytesIO(bytes(bad)), vc)
            except UnreadableFileError as e:
                assert '<BytesIO>' in str(e)
                assert values(vc) == (0.0, 0), (pos, flip)  # nothing changed
                outcomes['unreadable'] += 1
            except Exception as e:  # pragma: no cover - the failure message says which byte
                raise AssertionError(f'byte {pos} ^ {flip:#x}: {type(e).__name__}: {e}') from e
            else:
                assert values(vc) == (7.0, 7), (pos, flip)
                outcomes['loaded'] += 1
    assert outcomes['unreadable'] > len(data)  # most corruptions are detected (CRC-32, headers, sizes)


def _central_entry(data: bytes, name: str) -> int:
    """Offset of the central directory entry of member `name`."""
    pos = data.index(b'PK\x01\x02')
    while data[pos + 46:pos + 46 + int.from_bytes(data[pos + 28:pos + 30], 'little')] != name.encode():
        pos = data.index(b'PK\x01\x02', pos + 4)
    return pos


def _data_offset(data: bytes, name: str) -> int:
    """Offset of the first byte of member `name`'s (stored) data."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        start = z.getinfo(name).header_offset
    return start + 30 + int.from_bytes(data[start + 26:start + 28], 'little') \
        + int.from_bytes(data[start + 28:start + 30], 'little')


@pytest.mark.parametrize('field', ['encrypted flag', 'compression method', 'version needed'])
def test_zip_features_not_supported_are_unreadable(tmp_path, field):
    data = bytearray(_small_file())
    entry = _central_entry(bytes(data), '0.npy')
    if field == 'encrypted flag':
        data[entry + 8] |= 0x01
    elif field == 'compression method':
        data[entry + 10] = 99
    else:
        data[entry + 6] = 99
    path = tmp_path / 'bad.npz'
    path.write_bytes(bytes(data))
    vc = make_vc(0)
    with pytest.raises(UnreadableFileError, match='bad.npz'):
        load_var_collection(str(path), vc)
    assert values(vc) == (0.0, 0)


def _npy_header(shape, descr='<f4') -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {'descr': descr, 'fortran_order': False, 'shape': shape})
    return buf.getvalue()


def _zip(members, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', compression) as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return buf.getvalue()


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize('member', ['0', 'names'])
def test_header_declaring_terabytes_is_unreadable_without_allocating(member):
    huge = _npy_header((1 << 40,), '<f4' if member == '0' else '<U4') + b'\0' * 48
    members = {'names.npy': _npy(np.array(['w', 'step'])), '0.npy': _npy(np.zeros((2, 3), np.float32)),
               '1.npy': _npy(np.array(0, np.int32))}
    members[f'{member}.npy'] = huge
    vc = make_vc(0)
    with pytest.raises(UnreadableFileError, match=r'declares shape \(1099511627776,\)'):
        load_var_collection(io.BytesIO(_zip(members)), vc)
    assert values(vc) == (0.0, 0)


def test_directory_is_unreadable_and_restore_falls_back(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=5, verbose=False)
    ckpt.save(make_vc(2), 2)
    os.mkdir(tmp_path / 'ckpt' / '0000000003.npz')
    vc = make_vc(0)
    with pytest.raises(UnreadableFileError, match=r'0000000003\.npz.*is a directory'):
        load_var_collection(str(tmp_path / 'ckpt' / '0000000003.npz'), vc)
    with pytest.raises(UnreadableFileError, match=r'0000000003\.npz is unreadable'):
        ckpt.restore(vc)
    with pytest.raises(UnreadableFileError, match='is a directory'):
        objax.io.load_safetensors(str(tmp_path / 'ckpt' / '0000000003.npz'), vc)
    assert values(vc) == (0.0, 0)
    with pytest.warns(UserWarning, match=r'0000000003\.npz is unreadable'):
        assert ckpt.restore(vc, fallback=True)[0] == 2
    assert values(vc) == (2.0, 2)


def test_restore_falls_back_over_every_kind_of_corruption(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=10, verbose=False)
    ckpt.save(make_vc(1), 1)
    good = _small_file()
    entry = _central_entry(good, '0.npy')
    damages = [(entry + 8, 0x01),  # encrypted flag
               (entry + 10, 0xFF),  # compression method
               (_data_offset(good, '0.npy') + 10, 0x20),  # the npy header of 'w'
               (_data_offset(good, '0.npy') + len(_npy_header((2, 3))) + 5, 0xFF),  # the data of 'w'
               (_data_offset(good, 'names.npy') + 140, 0xFF)]  # the names
    for n, (pos, flip) in enumerate(damages):
        bad = bytearray(good)
        bad[pos] ^= flip
        (tmp_path / 'ckpt' / ('%010d.npz' % (n + 2))).write_bytes(bytes(bad))
    vc = make_vc(0)
    with pytest.raises(UnreadableFileError, match=r'0000000006\.npz is unreadable.*restore\(vc, idx=5\)'):
        ckpt.restore(vc)
    with pytest.warns(UserWarning) as caught:
        assert ckpt.restore(vc, fallback=True) == (1, str(tmp_path / 'ckpt' / '0000000001.npz'))
    assert [str(w.message)[len(str(tmp_path)) + 17:][:10] for w in caught] == \
        ['0000000006', '0000000005', '0000000004', '0000000003', '0000000002']
    assert values(vc) == (1.0, 1)


# ---- 10: each member's header is checked before its data is inflated ----

def test_shape_checked_before_inflating(tmp_path):
    size = 256 << 20  # 256 MiB of zeros deflate to about 250 KiB
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, 'w', zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        z.writestr('names.npy', _npy(np.array(['w', 'step'])))
        with z.open('0.npy', 'w', force_zip64=True) as f:
            f.write(_npy_header((size // 4,)))
            chunk = bytes(4 << 20)
            for _ in range(size // len(chunk)):
                f.write(chunk)
        z.writestr('1.npy', _npy(np.array(0, np.int32)))
    assert len(buf.getvalue()) < 2 << 20
    vc = make_vc(0)
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"'w': shape \(67108864,\) in the file, \(2, 3\)"):
            load_var_collection(io.BytesIO(buf.getvalue()), vc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f'{peak / 2 ** 20:.0f} MiB used to refuse a file that inflates to 256 MiB'
    assert values(vc) == (0.0, 0)


# ---- 13: temporaries of dead processes are removed on the next save ----

def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    from objax.io import _atomic
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=1, verbose=False)
    ckpt.save(make_vc(1), 1)
    host, dead = _atomic._host(), _dead_pid()
    other_host = '%08x' % (int(host, 16) ^ 1)
    names = {'dead': f'.0000000002.npz.objax-{host}-{dead}-0123abcd.tmp',
             'alive': f'.0000000002.npz.objax-{host}-{os.getpid()}-0123abcd.tmp',
             'other host': f'.0000000002.npz.objax-{other_host}-{dead}-0123abcd.tmp',
             'user file': f'.notes.{dead}.tmp'}
    for name in names.values():
        (tmp_path / 'ckpt' / name).write_bytes(b'x' * 1000)
    ckpt.save(make_vc(3), 3)
    left = set(listing(tmp_path))
    assert names['dead'] not in left
    assert {names['alive'], names['other host'], names['user file'], '0000000003.npz'} == left
    # save_var_collection cleans its own directory too.
    (tmp_path / names['dead']).write_bytes(b'x')
    save_var_collection(str(tmp_path / 'model.npz'), make_vc(4))
    assert not (tmp_path / names['dead']).exists()


# ---- every refused call leaves every variable, file and checkpoint as it was ----

def test_failed_save_changes_no_file(tmp_path):
    ckpt = Checkpoint(str(tmp_path), keep_ckpts=1, verbose=False)
    ckpt.save(make_vc(5), 5)
    before = (tmp_path / 'ckpt' / '0000000005.npz').read_bytes()

    class Boom(objax.StateVar):
        @property
        def value(self):
            raise RuntimeError('device lost')

    bad = make_vc(6) + objax.VarCollection({'boom': Boom(jn.zeros(1))})
    for call in (lambda: ckpt.save(bad, 6), lambda: ckpt.save(make_vc(6), -1), lambda: ckpt.save([], 6)):
        with pytest.raises((RuntimeError, ValueError, TypeError)):
            call()
        assert listing(tmp_path) == ['0000000005.npz']
        assert (tmp_path / 'ckpt' / '0000000005.npz').read_bytes() == before


# ---- 9: restore while another process deletes old checkpoints ----

@pytest.mark.slow
def test_restore_while_saves_rotate_checkpoints(tmp_path):
    logdir = str(tmp_path)
    Checkpoint(logdir, keep_ckpts=1, verbose=False).save(make_vc(0), 0)
    stop, errors = threading.Event(), []

    def train():
        ckpt = Checkpoint(logdir, keep_ckpts=1, verbose=False)
        idx = 0
        while not stop.is_set():
            idx += 1
            try:
                ckpt.save(make_vc(idx % 1000), idx)
            except Exception as e:  # pragma: no cover
                errors.append(e)
                return

    trainer = threading.Thread(target=train)
    trainer.start()
    reader = Checkpoint(logdir, keep_ckpts=1, verbose=False)
    try:
        for _ in range(1000):
            vc = make_vc(0)
            idx, path = reader.restore(vc, fallback=True)
            assert path and values(vc) == (float(idx % 1000), idx % 1000)
    finally:
        stop.set()
        trainer.join()
    assert not errors
    assert len(glob.glob(os.path.join(logdir, 'ckpt', '*.npz'))) == 1
