"""objax.jaxboard: summaries written asynchronously as TensorBoard event files, read back with EventAccumulator."""

import io
import threading
import time

import jax.numpy as jn
import numpy as np
import pytest
from PIL import Image as PILImage
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from objax.jaxboard import DelayedScalar, Image, Reducer, Summary, SummaryWriter, Text


def read(logdir) -> EventAccumulator:
    acc = EventAccumulator(str(logdir), size_guidance={'scalars': 0, 'images': 0, 'tensors': 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_reducers():
    values = [3.0, 1.0, 2.0, 6.0]
    assert Reducer.FIRST(values) == 3.0 and Reducer.LAST(values) == 6.0 and Reducer.MEAN(values) == 3.0
    assert isinstance(Reducer.MEAN, Reducer) and {r.name for r in Reducer} == {'FIRST', 'LAST', 'MEAN'}
    with pytest.raises(ValueError, match='no values'):
        Reducer.MEAN([])
    d = DelayedScalar(Reducer.LAST)
    d.values += [1, 2]
    assert d() == 2
    with pytest.raises(TypeError, match='reduce'):
        DelayedScalar('mean')


def test_summary_entries():
    s = Summary()
    s.scalar('loss', 1.0)
    s.scalar('loss', jn.float32(2.0))
    s.scalar('lr', 0.1, reduce=Reducer.FIRST)
    s.scalar('lr', 0.2)
    s.scalar('max', 1.0, reduce=max)
    s.scalar('max', 5.0)
    s.text('note', 'hello')
    s.image('img', np.zeros((3, 2, 5), np.float32))
    assert s() == {'loss': 1.5, 'lr': 0.1, 'max': 5.0}
    assert isinstance(s['note'], Text) and s['note'].text == 'hello'
    assert isinstance(s['img'], Image) and s['img'].shape == (3, 2, 5) and s['img'].png[:4] == b'\x89PNG'
    with pytest.raises(ValueError, match="'note' already holds a Text"):
        s.scalar('note', 1.0)
    with pytest.raises(ValueError, match=r'\(C, H, W\)'):
        s.image('bad', np.zeros((2, 5, 5)))
    with pytest.raises(ValueError, match='uint8'):
        s.image('bad', np.zeros((3, 5, 5), np.int32))
    with pytest.raises(TypeError, match='str'):
        s.text('bad', 3)
    assert 'bad' not in s


def test_png_encoding_matches_float_and_uint8_conventions():
    s = Summary()
    chw = np.stack([np.linspace(-1, 1, 12).reshape(3, 4), np.zeros((3, 4)), np.full((3, 4), 2.0)])
    s.image('f', chw.astype(np.float32))
    decoded = np.asarray(PILImage.open(io.BytesIO(s['f'].png)))
    # Quantised as Objax 1.8's to_png does: round(128 * (x + 1 - 1/256)), clipped.
    expected = np.clip(np.round(128 * (chw + 1 - 1 / 256)), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(decoded, expected)
    gray = np.arange(20, dtype=np.uint8).reshape(1, 4, 5)
    s.image('g', gray)
    np.testing.assert_array_equal(np.asarray(PILImage.open(io.BytesIO(s['g'].png))), gray[0])


def test_scalars_images_text_read_back(tmp_path):
    with SummaryWriter(str(tmp_path)) as writer:
        for step in range(3):
            s = Summary()
            for k in range(4):
                s.scalar('loss/mean', step * 10 + k)
                s.scalar('loss/first', step * 10 + k, reduce=Reducer.FIRST)
                s.scalar('loss/last', jn.float32(step * 10 + k), reduce=Reducer.LAST)
            custom = DelayedScalar(lambda v: float(np.max(v) - np.min(v)))
            custom.values += [step, 3 * step + 1]
            s['spread'] = custom
            s.image('samples/rgb', np.zeros((3, 6, 8), np.float32))
            s.image('samples/gray', np.full((1, 5, 7), 200, np.uint8))
            s.text('notes', f'step **{step}**')
            writer.write(s, step * 100)
    acc = read(tmp_path)
    assert scalars(acc, 'loss/mean') == [(0, 1.5), (100, 11.5), (200, 21.5)]
    assert scalars(acc, 'loss/first') == [(0, 0.0), (100, 10.0), (200, 20.0)]
    assert scalars(acc, 'loss/last') == [(0, 3.0), (100, 13.0), (200, 23.0)]
    assert scalars(acc, 'spread') == [(0, 1.0), (100, 3.0), (200, 5.0)]
    rgb, gray = acc.Images('samples/rgb'), acc.Images('samples/gray')
    assert [(e.step, e.width, e.height) for e in rgb] == [(0, 8, 6), (100, 8, 6), (200, 8, 6)]
    assert [(e.width, e.height) for e in gray] == [(7, 5)] * 3
    decoded = np.asarray(PILImage.open(io.BytesIO(gray[-1].encoded_image_string)))
    assert decoded.shape == (5, 7) and (decoded == 200).all()
    texts = acc.Tensors('notes')
    assert [(e.step, e.tensor_proto.string_val[0].decode()) for e in texts] == \
        [(0, 'step **0**'), (100, 'step **1**'), (200, 'step **2**')]
    assert acc.SummaryMetadata('notes').plugin_data.plugin_name == 'text'


def test_write_is_asynchronous_with_a_bounded_queue(tmp_path):
    release, threads = threading.Event(), []

    def slow(values):
        threads.append(threading.current_thread())
        release.wait(10)
        return values[0]

    writer = SummaryWriter(str(tmp_path), queue_size=2, write_interval=1)
    summaries = []
    for step in range(4):
        s = Summary()
        s.scalar('x', float(step), reduce=slow)
        summaries.append(s)
    start = time.monotonic()
    writer.write(summaries[0], 0)  # picked up by the worker, which blocks in `slow`
    while not threads:
        time.sleep(0.001)
    writer.write(summaries[1], 1)  # these two fill the queue (queue_size=2) without blocking
    writer.write(summaries[2], 2)
    assert time.monotonic() - start < 5
    blocked = threading.Thread(target=writer.write, args=(summaries[3], 3))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive(), 'a write beyond queue_size pending summaries should wait'
    release.set()
    blocked.join(10)
    writer.close()
    assert all(t is not threading.main_thread() for t in threads)  # reductions ran in the background
    assert scalars(read(tmp_path), 'x') == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0)]


def test_written_in_background_without_close(tmp_path):
    writer = SummaryWriter(str(tmp_path), write_interval=0.2)
    s = Summary()
    s.scalar('x', 7.0)
    writer.write(s, 1)
    deadline, found = time.monotonic() + 10, []
    while not found and time.monotonic() < deadline:
        time.sleep(0.1)
        acc = read(tmp_path)
        found = scalars(acc, 'x') if 'x' in acc.Tags()['scalars'] else []
    assert found == [(1, 7.0)]
    writer.close()


def test_summary_changed_after_write_is_written_as_it_was(tmp_path):
    release = threading.Event()
    with SummaryWriter(str(tmp_path)) as writer:
        s = Summary()
        s.scalar('x', 1.0, reduce=lambda v: (release.wait(10), float(np.mean(v)))[1])
        writer.write(s, 0)
        s.scalar('x', 100.0)
        s.text('late', 'not written')
        release.set()
    acc = read(tmp_path)
    assert scalars(acc, 'x') == [(0, 1.0)] and 'late' not in acc.Tags()['tensors']


def test_errors(tmp_path):
    with pytest.raises(ValueError, match='queue_size'):
        SummaryWriter(str(tmp_path), queue_size=0)
    with pytest.raises(ValueError, match='write_interval'):
        SummaryWriter(str(tmp_path), write_interval=0)
    writer = SummaryWriter(str(tmp_path))
    with pytest.raises(TypeError, match="tag 'x' holds a float"):
        writer.write({'x': 1.0}, 0)
    with pytest.raises(TypeError, match='step'):
        writer.write(Summary(), 1.5)
    bad = Summary()
    bad.scalar('fails', 1.0, reduce=lambda v: 1 / 0)  # a custom reducer can only fail in the worker
    writer.write(bad, 0)
    with pytest.raises(RuntimeError, match="writing an earlier summary failed: step 0, scalar 'fails': "
                                           "ZeroDivisionError"):
        writer.flush()
    good = Summary()
    good.scalar('ok', 2.0)
    writer.write(good, 1)  # the writer keeps working after reporting the failure
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(ValueError, match='closed'):
        writer.write(good, 2)
    assert scalars(read(tmp_path), 'ok') == [(1, 2.0)]


@pytest.mark.parametrize('value,reduce,error,match', [
    ('0.5', Reducer.MEAN, TypeError, "scalar 'bad': expected real numbers or numeric arrays, got a str"),
    (np.ones(3), Reducer.LAST, ValueError, r"scalar 'bad': Reducer.LAST keeps a value of shape \(3,\)"),
    (jn.ones((2, 2)), Reducer.FIRST, ValueError, r"Reducer.FIRST keeps a value of shape \(2, 2\)"),
    (np.array(['a']), Reducer.MEAN, TypeError, 'got an array of dtype <U1'),
    (1 + 2j, Reducer.MEAN, TypeError, 'got a complex'),
    (None, Reducer.MEAN, TypeError, 'got a NoneType'),
    ([1.0, 'x'], Reducer.MEAN, TypeError, 'got a list'),
    ([[1.0], [2.0, 3.0]], Reducer.MEAN, TypeError, 'got a list')])
def test_bad_scalar_is_refused_by_write_and_nothing_is_lost(tmp_path, value, reduce, error, match):
    """A bad value is refused on the caller's thread; the caller keeps the Summary, the valid tags are written."""
    with SummaryWriter(str(tmp_path)) as writer:
        s = Summary()
        s.scalar('loss', 1.0)
        s.scalar('acc', 0.5)
        for v in ([value, 3.0] if reduce is Reducer.FIRST else [3.0, value]):
            s.scalar('bad', v, reduce=reduce)
        s.text('note', 'kept')
        with pytest.raises(error, match=r'write\(step=4\): .*' + match):
            writer.write(s, 4)
        writer.flush()
        assert read(tmp_path).Tags()['scalars'] == []  # nothing was queued
        assert sorted(s) == ['acc', 'bad', 'loss', 'note'] and len(s['bad'].values) == 2  # the Summary is intact
        del s['bad']
        writer.write(s, 4)
    acc = read(tmp_path)
    assert scalars(acc, 'loss') == [(4, 1.0)] and scalars(acc, 'acc') == [(4, 0.5)]
    assert 'note' in acc.Tags()['tensors']


def test_scalar_shapes_that_reduce_to_one_number_are_accepted(tmp_path):
    with SummaryWriter(str(tmp_path)) as writer:
        s = Summary()
        s.scalar('batch', np.array([1.0, 2.0, 3.0]))  # MEAN averages every element, as numpy does
        s.scalar('batch', jn.array([5.0, 6.0, 7.0]))
        s.scalar('one', jn.ones((1, 1)) * 3, reduce=Reducer.LAST)
        s.scalar('flag', True)
        s.scalar('count', np.int64(7))
        s.scalar('half', jn.bfloat16(1.5))
        s.scalar('list', [jn.float32(2.0)])  # Objax 1.8 programs pass the list a GradValues returns
        s.scalar('list', [4.0])
        writer.write(s, 0)
        s2 = Summary()
        s2.scalar('mixed', np.ones(2))
        s2.scalar('mixed', np.ones(3))
        with pytest.raises(ValueError, match='different shapes'):
            writer.write(s2, 1)
        with pytest.raises(ValueError, match="scalar 'empty' has no values"):
            writer.write({'empty': DelayedScalar(Reducer.MEAN)}, 1)
    acc = read(tmp_path)
    assert scalars(acc, 'batch') == [(0, 4.0)] and scalars(acc, 'one') == [(0, 3.0)]
    assert scalars(acc, 'flag') == [(0, 1.0)] and scalars(acc, 'count') == [(0, 7.0)]
    assert scalars(acc, 'half') == [(0, 1.5)] and scalars(acc, 'list') == [(0, 3.0)]


def test_failing_custom_reducer_loses_only_its_tag(tmp_path):
    writer = SummaryWriter(str(tmp_path))
    s = Summary()
    s.scalar('loss', 2.0)
    s.scalar('odd', 1.0, reduce=lambda v: float('x'))
    s.text('note', 'still written')
    writer.write(s, 3)
    with pytest.raises(RuntimeError, match="step 3, scalar 'odd': ValueError"):
        writer.close()
    acc = read(tmp_path)
    assert scalars(acc, 'loss') == [(3, 2.0)] and 'odd' not in acc.Tags()['scalars']
    assert 'note' in acc.Tags()['tensors']


@pytest.mark.slow
def test_failure_reported_at_interpreter_exit(tmp_path):
    import subprocess
    import sys
    script = ('import sys\n'
              'from objax.jaxboard import Summary, SummaryWriter\n'
              'w = SummaryWriter(sys.argv[1])\n'
              's = Summary()\n'
              's.scalar("good", 1.0)\n'
              's.scalar("broken", 1.0, reduce=lambda v: {}["missing"])\n'
              'w.write(s, 9)\n')  # exits without close(): the failure must still be reported
    done = subprocess.run([sys.executable, '-c', script, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "some summaries were not written" in done.stderr
    assert "step 9, scalar 'broken': KeyError" in done.stderr
    assert scalars(read(tmp_path), 'good') == [(9, 1.0)]


def test_pending_summaries_written_at_interpreter_exit(tmp_path):
    import subprocess
    import sys
    script = ('import sys, time\n'
              'from objax.jaxboard import Summary, SummaryWriter\n'
              'w = SummaryWriter(sys.argv[1])\n'
              'for step in range(3):\n'
              '    s = Summary()\n'
              '    s.scalar("x", float(step), reduce=lambda v: (time.sleep(0.1), v[0])[1])\n'
              '    w.write(s, step)\n')  # exits without close(), with summaries still queued
    subprocess.run([sys.executable, '-c', script, str(tmp_path)], check=True, timeout=120)
    assert scalars(read(tmp_path), 'x') == [(0, 0.0), (1, 1.0), (2, 2.0)]
