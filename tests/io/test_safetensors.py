"""objax.io.save_safetensors / load_safetensors: round trips, files from other tools, renaming, bad files."""

import io
import os

import jax.numpy as jn
import numpy as np
import pytest
import safetensors.numpy

import objax
from objax.io import load_safetensors, save_safetensors


class Block(objax.Module):
    def __init__(self, seed: int):
        rng = np.random.default_rng(seed)
        self.w = objax.TrainVar(jn.asarray(rng.normal(size=(4, 3)), jn.float32))
        self.b = objax.TrainVar(jn.asarray(rng.normal(size=(3,)), jn.float32))
        self.steps = objax.StateVar(jn.asarray(seed, jn.int32))
        self.half = objax.StateVar(jn.asarray(rng.normal(size=(2,)), jn.bfloat16))


def arrays(vc):
    return {k: np.asarray(v.value) for k, v in vc.items()}


def assert_same(vc, expected):
    for k, v in vc.items():
        assert v.value.dtype == expected[k].dtype, k
        np.testing.assert_array_equal(np.asarray(v.value, np.float64), expected[k].astype(np.float64), err_msg=k)


def test_round_trip_and_readable_by_safetensors_alone(tmp_path):
    src, dst = Block(1), Block(2)
    path = str(tmp_path / 'model.safetensors')
    save_safetensors(path, src.vars())
    assert os.listdir(tmp_path) == ['model.safetensors']
    load_safetensors(path, dst.vars())
    assert_same(dst.vars(), arrays(src.vars()))
    without_bf16 = objax.VarCollection({k: v for k, v in src.vars().items() if not k.endswith('half')})
    save_safetensors(path, without_bf16)
    plain = safetensors.numpy.load_file(path)
    assert sorted(plain) == sorted(without_bf16.keys())
    for k, v in without_bf16.items():
        np.testing.assert_array_equal(plain[k], np.asarray(v.value))
        assert plain[k].dtype == np.asarray(v.value).dtype


def test_round_trip_through_file_objects():
    src, dst = Block(3), Block(4)
    buf = io.BytesIO()
    save_safetensors(buf, src.vars())
    buf.seek(0)
    load_safetensors(buf, dst.vars())
    assert_same(dst.vars(), arrays(src.vars()))


def test_torch_style_file_loads_with_renamer(tmp_path):
    # A file as PyTorch / Hugging Face would write it: 'layer.weight' names, no Objax metadata.
    rng = np.random.default_rng(0)
    tensors = {'layer.weight': rng.normal(size=(4, 3)).astype(np.float32),
               'layer.bias': rng.normal(size=(3,)).astype(np.float32),
               'layer.num_batches_tracked': np.array(11, np.int32),
               'layer.scale': np.zeros(2, np.float32)}
    path = str(tmp_path / 'torch.safetensors')
    safetensors.numpy.save_file(tensors, path, metadata={'format': 'pt'})
    model = Block(5)
    model.half = objax.StateVar(jn.zeros(2, jn.float32))
    # The renamer maps the names stored in the file to the collection's names (as load_var_collection does).
    renamer = objax.util.Renamer([(r'^layer\.', '(Block).'), (r'\.weight$', '.w'), (r'\.bias$', '.b'),
                                  (r'\.num_batches_tracked$', '.steps'), (r'\.scale$', '.half')])
    load_safetensors(path, model.vars(), renamer=renamer)
    np.testing.assert_array_equal(model.w.value, tensors['layer.weight'])
    np.testing.assert_array_equal(model.b.value, tensors['layer.bias'])
    assert int(model.steps.value) == 11


def test_written_names_map_to_torch_names_and_shared_saved_once(tmp_path):
    model = Block(6)
    vc = model.vars() + objax.VarCollection({'ref': objax.TrainRef(model.w), 'alias': model.b})
    path = str(tmp_path / 'o.safetensors')
    save_safetensors(path, vc)
    with open(path, 'rb') as f:
        names = [n for n, _ in safetensors.deserialize(f.read())]
    assert sorted(names) == sorted(model.vars().keys())  # TrainRef and alias not written again
    fresh = Block(7)
    load_safetensors(path, fresh.vars() + objax.VarCollection({'ref': objax.TrainRef(fresh.w)}))
    assert_same(fresh.vars(), arrays(model.vars()))


def _bad_file(kind: str) -> bytes:
    good = io.BytesIO()
    save_safetensors(good, Block(1).vars())
    good = good.getvalue()
    names = {k: np.asarray(v.value) for k, v in Block(1).vars().items() if not k.endswith('half')}
    half = {'(Block).half': np.zeros(2, np.float32)}
    if kind == 'empty':
        return b''
    if kind == 'truncated':
        return good[:len(good) - 7]
    if kind == 'not safetensors':
        return b'PK\x03\x04 definitely not a safetensors header' * 3
    if kind == 'wrong dtype':
        return safetensors.numpy.save({**names, **half})
    if kind == 'wrong shape':
        return safetensors.numpy.save({**names, '(Block).w': np.zeros((3, 4), np.float32)})
    if kind == 'missing':
        return safetensors.numpy.save(names)
    raise ValueError(kind)


@pytest.mark.parametrize('kind,message', [
    ('empty', 'cannot be read as a safetensors file'), ('truncated', 'cannot be read as a safetensors file'),
    ('not safetensors', 'cannot be read as a safetensors file'),
    ('wrong dtype', r"'\(Block\)\.half': dtype float32 in the file, bfloat16"),
    ('wrong shape', r"'\(Block\)\.w': shape \(3, 4\) in the file, \(4, 3\)"),
    ('missing', r"missing from the file: '\(Block\)\.half'")])
def test_bad_files(tmp_path, kind, message):
    path = tmp_path / 'bad.safetensors'
    path.write_bytes(_bad_file(kind))
    model = Block(9)
    before = arrays(model.vars())
    with pytest.raises(ValueError, match=message) as info:
        load_safetensors(str(path), model.vars())
    assert 'bad.safetensors' in str(info.value)
    assert_same(model.vars(), before)


def test_extra_tensor_is_reported_with_the_rest(tmp_path):
    path = str(tmp_path / 'extra.safetensors')
    tensors = {k: np.asarray(v.value) for k, v in Block(1).vars().items()}
    tensors.pop('(Block).half')
    safetensors.numpy.save_file({**tensors, 'lm_head.weight': np.zeros(2, np.float32)}, path)
    model = Block(2)
    before = arrays(model.vars())
    with pytest.raises(ValueError, match=r"(?s)missing from the file: '\(Block\)\.half'.*unused in the file: 'lm_head"):
        load_safetensors(path, model.vars())
    assert_same(model.vars(), before)
    tensors['(Block).half'] = np.asarray(Block(1).half.value)
    safetensors.numpy.save_file({**tensors, 'lm_head.weight': np.zeros(2, np.float32)}, path)
    with pytest.raises(ValueError, match=r"unexpected in the file \(no variable of that name\): 'lm_head"):
        load_safetensors(path, model.vars(), strict=True)
    assert_same(model.vars(), before)
    load_safetensors(path, model.vars())  # extra tensors are ignored by default
    assert_same(model.vars(), arrays(Block(1).vars()))
