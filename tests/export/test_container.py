"""The objax.export file: damaged, truncated and foreign files are refused with an error naming the file."""

import io
import json
import zipfile

import numpy as np
import pytest

import objax
from objax.export import container
from objax.io import UnreadableFileError


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
    """(path, bytes) of a small exported Linear layer."""
    path = tmp_path_factory.mktemp('export') / 'linear.export'
    model = objax.nn.Linear(3, 2)
    objax.export.save(path, model, model.vars(), np.zeros((1, 3), np.float32))
    return path, path.read_bytes()


def member_span(data: bytes, name: str) -> slice:
    """Where the bytes of member `name` lie in the archive."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo(name)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    return slice(start, start + info.file_size)


def refused(path, *patterns: str):
    """Loads `path`, expecting an UnreadableFileError (a ValueError) naming it and matching every pattern."""
    with pytest.raises(UnreadableFileError) as error:
        objax.export.load(path)
    assert isinstance(error.value, ValueError) and str(path) in str(error.value), error.value
    for pattern in patterns:
        assert pattern in str(error.value), error.value
    return str(error.value)


def test_the_saved_file_loads(saved):
    path, _ = saved
    assert objax.export.load(path)(np.ones((2, 3), np.float32)).shape == (2, 2)


@pytest.mark.parametrize('member', [container.PROGRAM, container.VARIABLES, container.MANIFEST])
def test_a_corrupted_byte_is_refused(saved, tmp_path, member):
    _, data = saved
    span = member_span(data, member)
    damaged = bytearray(data)
    damaged[(span.start + span.stop) // 2] ^= 0x10
    path = tmp_path / 'damaged.export'
    path.write_bytes(bytes(damaged))
    refused(path, 'is corrupted', member, 'CRC')


@pytest.mark.parametrize('keep', [0.99, 0.5, 0.01])
def test_a_truncated_file_is_refused(saved, tmp_path, keep):
    _, data = saved
    path = tmp_path / 'truncated.export'
    path.write_bytes(data[:int(len(data) * keep)])
    refused(path, 'not an objax.export file', 'not a zip archive')


def test_an_empty_file_and_random_bytes_are_refused(tmp_path):
    path = tmp_path / 'empty.export'
    path.write_bytes(b'')
    refused(path, 'not a zip archive')
    path = tmp_path / 'noise.bin'
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    refused(path, 'not a zip archive')


def test_other_formats_are_refused(tmp_path):
    model = objax.nn.Linear(3, 2)
    npz = tmp_path / 'weights.npz'
    objax.io.save_var_collection(str(npz), model.vars())
    refused(npz, 'not an objax.export file', 'has no manifest.json')
    path = tmp_path / 'other.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('manifest.json', json.dumps({'format': 'something else'}))
    refused(path, "format 'something else'", "expected 'objax.export'")
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('manifest.json', b'\xff not json')
    refused(path, 'manifest.json is not valid JSON')
    directory = tmp_path / 'folder.export'
    directory.mkdir()
    refused(directory, 'is a directory')
    with pytest.raises(FileNotFoundError):
        objax.export.load(tmp_path / 'missing.export')


def rewrite(data: bytes, path, **replace):
    """Writes a copy of the archive `data` to `path` with some members replaced (name: new bytes or None)."""
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(path, 'w') as target:
        for name in source.namelist():
            new = replace.get(name.replace('.', '_'), source.read(name))
            if new is not None:
                target.writestr(name, new)


def test_missing_members_newer_versions_and_inconsistent_parts_are_refused(saved, tmp_path):
    _, data = saved
    path = tmp_path / 'edited.export'
    rewrite(data, path, variables_safetensors=None)
    refused(path, 'variables.safetensors is missing')
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(data)).read('manifest.json'))
    rewrite(data, path, manifest_json=json.dumps(dict(manifest, version=99)))
    refused(path, 'version 99 of the objax.export format', 'install a newer objax')
    rewrite(data, path, program_jax_export=b'not a program')
    refused(path, 'cannot read its program')
    rewrite(data, path, variables_safetensors=b'\x08\x00\x00\x00\x00\x00\x00\x00{}      ')
    refused(path, 'the variables of its manifest (2), of its safetensors member (0)')
    rewrite(data, path, variables_safetensors=b'garbage')
    refused(path, 'variables.safetensors', 'cannot be read as a safetensors file')
    other = dict(manifest, variables=[dict(v, name='x' + v['name']) for v in manifest['variables']])
    rewrite(data, path, manifest_json=json.dumps(other))
    refused(path, 'differ')


def test_a_flipped_byte_anywhere_is_refused_or_harmless(saved, tmp_path):
    path, data = saved
    x = np.ones((2, 3), np.float32)
    expected = np.asarray(objax.export.load(path)(x))
    damaged_path = tmp_path / 'damaged.export'
    outcomes = {'refused': 0, 'harmless': 0}
    for position in np.linspace(0, len(data) - 1, 40).astype(int):
        damaged = bytearray(data)
        damaged[position] ^= 0x01
        damaged_path.write_bytes(bytes(damaged))
        try:
            served = objax.export.load(damaged_path)
        except UnreadableFileError as e:
            assert str(damaged_path) in str(e)
            outcomes['refused'] += 1
            continue
        np.testing.assert_array_equal(np.asarray(served(x)), expected, err_msg=f'byte {position}')  # e.g. a date
        outcomes['harmless'] += 1
    assert outcomes['refused'] >= 30, outcomes  # 38 of 40 on JAX 0.10
