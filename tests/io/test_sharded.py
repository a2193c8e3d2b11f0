"""objax.io.ShardedCheckpoint (orbax-checkpoint): values saved shard by shard from one mesh layout are restored
onto another layout, another mesh or one device, unchanged; bad restores change nothing."""

import os

import jax
import jax.numpy as jn
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import objax
from objax.io import ShardedCheckpoint
from objax.sharding import fsdp, layout, make_mesh, shard

RULES = [('*[[]0](Linear).w', P(None, 'model')), ('*[[]0](Linear).b', P('model')), ('*[[]2](Linear).w', P('model'))]


def build(seed: int):
    """A small MLP, its Adam state and a random key, every value drawn from `seed`."""
    model = objax.nn.Sequential([objax.nn.Linear(8, 16), objax.functional.relu, objax.nn.Linear(16, 4)])
    opt = objax.optimizer.Adam(model.vars())
    key = objax.RandomState(seed)
    vc = model.vars() + opt.vars() + objax.VarCollection({'key': key})
    rng = np.random.RandomState(seed)
    for v in vc:
        if isinstance(v, (objax.TrainVar, objax.StateVar)) and v.value.dtype == jn.float32:
            v.assign(jn.asarray(rng.normal(size=v.value.shape).astype(np.float32)))
    opt.step.value = jn.array(seed, jn.uint32)
    return vc


def values(vc):
    return {k: np.asarray(v.value) for k, v in vc.items()}


def test_saved_on_2x4_restores_on_fsdp_4_devices_and_one_device(tmp_path):
    vc = build(1)
    shard(vc, make_mesh('data=2,model=4'), rules=RULES)
    ckpt = ShardedCheckpoint(tmp_path, keep_ckpts=2, verbose=False)
    assert ckpt.restore(vc) == (0, '')
    path = ckpt.save(vc, 3)
    assert path == os.path.join(tmp_path, 'sharded', '3') and os.path.isdir(path)
    expected = values(vc)

    # Another layout on all 8 devices: FSDP over one axis.
    other = build(2)
    mesh8 = make_mesh({'data': 8})
    shard(other, mesh8, rules=[fsdp(mesh8)])
    assert ShardedCheckpoint(tmp_path, keep_ckpts=2, verbose=False).restore(other) == (3, path)
    for k, v in values(other).items():
        np.testing.assert_array_equal(v, expected[k], err_msg=k)
    w = other['(Sequential)[0](Linear).w']
    assert w.value.sharding.is_equivalent_to(layout(w), 2) and layout(w).spec == P(None, 'data')

    # 4 devices of one process, and one device (a model that was never laid out).
    mesh4 = make_mesh({'data': 4}, devices=jax.devices()[:4])
    for devices in (4, 1):
        fresh = build(3)
        if devices == 4:
            shard(fresh, mesh4, rules=[fsdp(mesh4)])
        ShardedCheckpoint(tmp_path, keep_ckpts=2, verbose=False).restore(fresh)
        for k, v in values(fresh).items():
            np.testing.assert_array_equal(v, expected[k], err_msg=k)
        assert {len(v.value.sharding.device_set) for v in fresh} == {devices}
        if devices == 4:
            trained = [n for n, v in fresh.items() if n.startswith('(Sequential)') and isinstance(v, objax.TrainVar)]
            w = fresh[f"(Adam).v(ModuleList)[{trained.index('(Sequential)[0](Linear).w')}]"].value
            assert {s.data.shape for s in w.addressable_shards} == {(8, 4)}  # (8, 16) split 4-way on dim 1


def test_keeps_newest_and_restores_by_index(tmp_path, capsys):
    vc = build(1)
    shard(vc, make_mesh({'data': 8}))
    ckpt = ShardedCheckpoint(tmp_path, keep_ckpts=2)
    first = values(vc)
    for i in (1, 2, 3):
        vc['(Adam).step'].value = jn.array(10 * i, jn.uint32)
        ckpt.save(vc, i)
    assert ckpt.indices() == [2, 3]
    assert ckpt.restore(vc, 2)[0] == 2 and int(vc['(Adam).step'].value) == 20
    assert 'Resuming from' in capsys.readouterr().out
    np.testing.assert_array_equal(np.asarray(vc['(Sequential)[0](Linear).w'].value),
                                  first['(Sequential)[0](Linear).w'])
    with pytest.raises(FileNotFoundError, match=r'no such checkpoint .*available indices: \[2, 3\]'):
        ckpt.restore(vc, 1)
    with pytest.raises(ValueError, match='checkpoint 3 already exists'):
        ckpt.save(vc, 3)
    with pytest.raises(ValueError, match='keep_ckpts'):
        ShardedCheckpoint(tmp_path, keep_ckpts=0)


def test_mismatched_collection_changes_nothing(tmp_path):
    vc = build(1)
    ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False).save(vc, 1)
    other = objax.nn.Sequential([objax.nn.Linear(8, 16), objax.functional.relu, objax.nn.Linear(16, 5)])
    target = other.vars() + objax.VarCollection({'extra': objax.StateVar(jn.zeros(2))})
    before = values(target)
    with pytest.raises(ValueError) as error:
        ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False).restore(target)
    message = str(error.value)
    assert 'nothing was changed' in message and "missing from the checkpoint: 'extra'" in message
    assert "'(Sequential)[2](Linear).w': float32[16, 4] in the checkpoint, float32[16, 5] in the collection" in message
    assert "unexpected in the checkpoint (no variable of that name): '(Adam).step'" in message
    for k, v in values(target).items():
        np.testing.assert_array_equal(v, before[k])


def _data_files(path):
    """The array data files of a checkpoint directory (orbax's OCDBT data blocks)."""
    return sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files
                  if os.sep + 'd' + os.sep in os.path.join(root, f) + os.sep or os.path.basename(root) == 'd')


@pytest.mark.parametrize('async_save', [False, True], ids=['sync', 'async'])
def test_save_below_the_newest_keeps_the_checkpoint_just_written_and_warns(tmp_path, async_save):
    vc = build(2)
    ckpt = ShardedCheckpoint(tmp_path, keep_ckpts=2, verbose=False, async_save=async_save)
    ckpt.save(vc, 5)
    ckpt.save(vc, 6)
    with pytest.warns(UserWarning, match='newer than this one'):
        path = ckpt.save(vc, 3)
    ckpt.wait()
    assert os.path.isdir(path) and ckpt.indices() == [3, 5, 6]  # nothing newer deleted, nor the one just written
    ckpt.save(vc, 7)
    ckpt.close()
    assert ckpt.indices() == [6, 7]  # retention keeps the newest two


# orbax reports the failed reads of its background tasks once more when they are collected
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_flipped_byte_in_a_data_file_never_restores_other_numbers(tmp_path):
    saved = build(3)
    ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False).save(saved, 1)
    files = _data_files(tmp_path / 'sharded' / '1')
    assert files
    refused = 0
    for name in files:
        data = bytearray(open(name, 'rb').read())
        for position in (len(data) // 2, len(data) - 5):
            target = build(4)
            before = values(target)
            data[position] ^= 0x10
            open(name, 'wb').write(bytes(data))
            try:
                ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False).restore(target)
            except objax.io.UnreadableFileError as e:
                assert str(tmp_path / 'sharded' / '1') in str(e)
                assert all(np.array_equal(before[k], v) for k, v in values(target).items())  # nothing changed
                refused += 1
            else:  # a byte that holds no value (padding, an unused field): every value must be the saved one
                assert all(np.array_equal(values(saved)[k], v) for k, v in values(target).items())
            data[position] ^= 0x10
            open(name, 'wb').write(bytes(data))
    assert refused  # flips in the arrays' data are caught


@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('async_save', [False, True], ids=['sync', 'async'])
@pytest.mark.parametrize('damage', ['truncated shard', 'truncated metadata', 'deleted metadata'])
def test_damaged_checkpoint_files_are_refused_naming_the_checkpoint(tmp_path, damage, async_save):
    with ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False, async_save=async_save) as ckpt:
        ckpt.save(build(5), 1)
    path = tmp_path / 'sharded' / '1'
    metadata = path / 'default' / '_METADATA'
    if damage == 'truncated shard':
        for name in _data_files(path):
            open(name, 'r+b').truncate(os.path.getsize(name) // 2)
    elif damage == 'truncated metadata':
        open(metadata, 'r+b').truncate(os.path.getsize(metadata) // 2)
    else:
        os.remove(metadata)
    target = build(6)
    before = values(target)
    error = FileNotFoundError if damage == 'deleted metadata' else objax.io.UnreadableFileError
    with pytest.raises(error) as e:
        ShardedCheckpoint(tmp_path, keep_ckpts=1, verbose=False).restore(target)
    assert str(path) in str(e.value)
    if damage != 'truncated shard':
        assert '_METADATA' in str(e.value)
    assert all(np.array_equal(before[k], v) for k, v in values(target).items())
