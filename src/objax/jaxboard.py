"""TensorBoard summaries: collect scalars, images and text in a Summary and write them with SummaryWriter."""

import dataclasses
import enum
import numbers
import operator
import os
import queue
import sys
import threading
import time
import weakref
from typing import Callable, Dict, List, Tuple, Union

import numpy as np
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.plugins.text.summary_v2 import text_pb
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from objax.util.image import encode_png, normalize_to_uint8

__all__ = ['Reducer', 'DelayedScalar', 'Image', 'Text', 'Summary', 'SummaryWriter']


class Reducer(enum.Enum):
    """How the values added to one scalar tag are merged: the first, the last or their (numpy) mean."""

    FIRST = 'first'
    LAST = 'last'
    MEAN = 'mean'

    def __call__(self, values: List[float]) -> float:
        """Merges the values of one scalar tag.

        Args:
            values: the values added to the tag, numbers or arrays (of one shape for MEAN).

        Returns:
            The first value, the last value, or the numpy mean of all of them.

        Raises:
            ValueError: values is empty.
        """
        if len(values) == 0:
            raise ValueError(f'Reducer.{self.name}: no values to reduce')
        if self is Reducer.FIRST:
            return values[0]
        if self is Reducer.LAST:
            return values[-1]
        return np.mean([np.asarray(v) for v in values])


class DelayedScalar:
    """A list of values for one scalar tag, reduced to one number when called."""

    def __init__(self, reduce: Union[Callable, Reducer]):
        """Starts with an empty `values` list.

        Args:
            reduce: a Reducer, or any callable taking the list of values and returning one number.

        Raises:
            TypeError: reduce is not callable.
        """
        if not callable(reduce):
            raise TypeError(f'DelayedScalar(reduce): expected a Reducer or a callable, got {type(reduce).__name__}')
        self.reduce = reduce
        self.values: List = []

    def __call__(self) -> float:
        """The values collected so far, merged by `reduce`.

        Returns:
            What `reduce` returns for the list of values (one number for the built-in Reducers).

        Raises:
            ValueError: no values were added (built-in Reducers); a custom reduce raises what it raises.
        """
        return self.reduce(self.values)


@dataclasses.dataclass
class Image:
    """A PNG-encoded image and its (channels, height, width) shape.

    Args:
        shape: (C, H, W) of the encoded image, C in 1, 3 or 4.
        png: the bytes of the PNG file.
    """

    shape: Tuple[int, int, int]
    png: bytes


@dataclasses.dataclass
class Text:
    """A text summary (TensorBoard renders it as Markdown).

    Args:
        text: the text to show.
    """

    text: str


def _to_png(image: np.ndarray, tag: str) -> bytes:
    """Encodes a CHW image (float in [-1, 1] or uint8; 1, 3 or 4 channels) as PNG."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[0] not in (1, 3, 4):
        raise ValueError(f'Summary.image({tag!r}): expected a (C, H, W) image with C in 1, 3, 4, '
                         f'got shape {image.shape}')
    if image.dtype.kind == 'f' or image.dtype.name == 'bfloat16':
        image = normalize_to_uint8(image.astype(np.float32))  # the same pixels as Objax 1.8
    elif image.dtype != np.uint8:
        raise ValueError(f'Summary.image({tag!r}): expected a float image in [-1, 1] or uint8, got {image.dtype}')
    hwc = image.transpose(1, 2, 0)
    return encode_png(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc)


class Summary(dict):
    """A {tag: DelayedScalar | Image | Text} dictionary, filled during training and written by SummaryWriter."""

    def scalar(self, tag: str, value: float, reduce: Union[Callable, Reducer] = Reducer.MEAN):
        """Appends `value` to scalar `tag`; the values are merged with `reduce` when written.

        Args:
            tag: name of the scalar in TensorBoard, e.g. 'losses/xe'.
            value: a number or a one-element array (MEAN also averages arrays of one shape element-wise, but
                only a single number can be written).
            reduce: how the tag's values are merged, a Reducer or a callable on the list of values; it is
                used only when the tag is new (the tag keeps its first reduce).

        Raises:
            ValueError: tag already holds an image or a text.
            TypeError: the tag is new and reduce is not callable.
        """
        if tag not in self:
            self[tag] = DelayedScalar(reduce)
        elif not isinstance(self[tag], DelayedScalar):
            raise ValueError(f'Summary.scalar: tag {tag!r} already holds a {type(self[tag]).__name__}')
        self[tag].values.append(value)

    def image(self, tag: str, image: np.ndarray):
        """Sets image `tag` from a (C, H, W) array, float in [-1, 1] or uint8.

        Args:
            tag: name of the image in TensorBoard; an existing entry of that tag is replaced.
            image: a numpy or jax array of shape (C, H, W), C in 1, 3 or 4; floats in [-1, 1] are mapped to
                uint8 with objax.util.image.normalize_to_uint8.

        Raises:
            ValueError: image is not (C, H, W) with C in 1, 3 or 4, or its dtype is neither floating nor uint8.
        """
        image = np.asarray(image)
        self[tag] = Image(tuple(image.shape), _to_png(image, tag))

    def text(self, tag: str, text: str):
        """Sets text `tag`.

        Args:
            tag: name of the text in TensorBoard; an existing entry of that tag is replaced.
            text: the text, rendered as Markdown.

        Raises:
            TypeError: text is not a str.
        """
        if not isinstance(text, str):
            raise TypeError(f'Summary.text({tag!r}): expected a str, got {type(text).__name__}')
        self[tag] = Text(text)

    def __call__(self) -> Dict[str, float]:
        """The reduced value of every scalar tag.

        Returns:
            A {tag: float} dict of the scalar tags (images and texts are left out).

        Raises:
            ValueError: a scalar tag has no values or reduces to more than one number.
        """
        return {k: _to_float(v()) for k, v in self.items() if isinstance(v, DelayedScalar)}


def _to_float(x) -> float:
    """A reduced scalar as a Python float (any array holding one number)."""
    x = np.asarray(x)
    if x.size != 1:
        raise ValueError(f'the reducer gave shape {x.shape}, not a single number')
    return float(x.reshape(()))


def _numeric(dtype: np.dtype) -> bool:
    return dtype.kind in 'biuf' or dtype.name == 'bfloat16'


def _check_scalar(tag: str, value: DelayedScalar, step: int):
    """Raises a clear error, on the caller's thread, for scalar values that cannot become one float."""
    where = f'SummaryWriter.write(step={step}): scalar {tag!r}'
    if not value.values:
        raise ValueError(f'{where} has no values')
    shapes = []
    for v in value.values:
        if isinstance(v, numbers.Real):
            shapes.append(())
            continue
        dtype, shape = getattr(v, 'dtype', None), getattr(v, 'shape', None)
        if dtype is None or shape is None:  # a list of numbers, say: what numpy would make of it
            try:
                as_array = np.asarray(v)
            except Exception:  # noqa: BLE001 - ragged lists and the like: refused below
                as_array = np.asarray(None)
            dtype, shape = as_array.dtype, as_array.shape
        if not _numeric(np.dtype(dtype)):
            kind = f'a {type(v).__name__}' if getattr(v, 'dtype', None) is None else f'an array of dtype {dtype}'
            raise TypeError(f'{where}: expected real numbers or numeric arrays, got {kind}: {v!r:.60}')
        shapes.append(tuple(shape))
    if value.reduce in (Reducer.FIRST, Reducer.LAST):
        shape = shapes[0 if value.reduce is Reducer.FIRST else -1]
        if int(np.prod(shape)) != 1:
            raise ValueError(f'{where}: {value.reduce} keeps a value of shape {shape}, expected a single number')
    elif value.reduce is Reducer.MEAN and len(set(shapes)) > 1:
        raise ValueError(f'{where}: Reducer.MEAN cannot average values of different shapes {sorted(set(shapes))}')


def _snapshot(summary: Summary, step: int) -> List[Tuple[str, object]]:
    """A copy of the summary safe from later changes by the caller, checking every entry (nothing is queued when
    one is wrong: the caller keeps the whole Summary and gets an error naming the tag)."""
    out = []
    for tag, value in summary.items():
        if not isinstance(tag, str):
            raise TypeError(f'SummaryWriter.write: tags must be str, got {tag!r}')
        if isinstance(value, DelayedScalar):
            _check_scalar(tag, value, step)
            copy = DelayedScalar(value.reduce)
            copy.values = list(value.values)
            value = copy
        elif not isinstance(value, (Image, Text)):
            raise TypeError(f'SummaryWriter.write: tag {tag!r} holds a {type(value).__name__}, '
                            f'expected a DelayedScalar, Image or Text (use Summary.scalar/image/text)')
        out.append((tag, value))
    return out


def _event(entries: List[Tuple[str, object]], step: int, wall_time: float, errors: List[str]) -> event_pb2.Event:
    """The event of one summary; a tag that fails (a custom reducer raising) is left out and described in `errors`."""
    summary = summary_pb2.Summary()
    for tag, value in entries:
        if isinstance(value, DelayedScalar):
            try:
                number = _to_float(value())
            except Exception as e:  # noqa: BLE001 - reported to the caller, the other tags are still written
                errors.append(f'step {step}, scalar {tag!r}: {type(e).__name__}: {e}')
                continue
            summary.value.add(tag=tag, simple_value=number)
        elif isinstance(value, Image):
            channels, height, width = value.shape
            summary.value.add(tag=tag, image=summary_pb2.Summary.Image(
                height=height, width=width, colorspace=channels, encoded_image_string=bytes(value.png)))
        else:
            summary.value.extend(text_pb(tag, value.text).value)
    return event_pb2.Event(wall_time=wall_time, step=step, summary=summary)


_STOP, _FLUSH = object(), object()


class _State:
    """What the worker thread shares with the writer (kept apart so the writer can be garbage collected)."""

    def __init__(self, writer: EventFileWriter, queue_size: int, logdir: str):
        self.writer = writer
        self.queue = queue.Queue(queue_size)
        self.logdir = logdir
        self.errors: List[str] = []  # failures not yet reported to the caller
        self.lock = threading.Lock()
        self.closed = False
        self.caller_reports = False  # close() reports the errors itself; at exit they go to stderr

    def add_errors(self, errors: List[str]):
        with self.lock:
            self.errors += errors

    def take_errors(self) -> List[str]:
        with self.lock:
            errors, self.errors = self.errors, []
        return errors


def _work(state: _State):
    """Worker thread: turns queued summaries into events (reducing scalars off the training thread)."""
    while True:
        item = state.queue.get()
        try:
            if item is _STOP:
                return
            if item is _FLUSH:
                state.writer.flush()
            else:
                errors = []
                state.writer.add_event(_event(*item, errors))
                state.add_errors(errors)
        except Exception as e:  # noqa: BLE001 - reported by the next write/flush/close, or at exit
            state.add_errors([f'{type(e).__name__}: {e}'])
        finally:
            state.queue.task_done()


def _shutdown(state: _State, thread: threading.Thread):
    """Writes everything queued, stops the worker and closes the event file (idempotent). Called by close(), when
    the writer is garbage collected, and at interpreter exit; the last two report failures on stderr."""
    if state.closed:
        return
    state.closed = True
    state.queue.put(_STOP)
    thread.join()
    try:
        state.writer.close()
    except Exception as e:  # noqa: BLE001
        state.add_errors([f'closing the event file: {type(e).__name__}: {e}'])
    if not state.caller_reports and state.errors:
        lines = '\n  '.join(state.take_errors())
        sys.stderr.write(f'objax.jaxboard.SummaryWriter({state.logdir!r}): some summaries were not written:\n'
                         f'  {lines}\n')
        sys.stderr.flush()


class SummaryWriter:
    """Writes Summaries to a TensorBoard event file in `logdir`, asynchronously: `write` queues (at most
    `queue_size` pending summaries) and a background thread writes them, flushing every `write_interval` seconds.
    `close()` (or leaving a `with` block, or interpreter exit) writes everything still pending."""

    def __init__(self, logdir: str, queue_size: int = 5, write_interval: int = 5):
        """Creates `logdir` if needed, opens a new event file in it and starts the writing thread.

        Args:
            logdir: directory of the event file (a str or path-like), created with its parents if missing.
            queue_size: how many summaries may wait to be written before `write` blocks, an int >= 1.
            write_interval: seconds between flushes of the event file to disk, a positive number.

        Raises:
            ValueError: queue_size is not an int >= 1, or write_interval is not a positive number.
            OSError: logdir cannot be created.
        """
        if isinstance(queue_size, bool) or not isinstance(queue_size, numbers.Integral) or queue_size < 1:
            raise ValueError(f'SummaryWriter(queue_size): expected an int >= 1, got {queue_size!r}')
        if not isinstance(write_interval, numbers.Real) or write_interval <= 0:
            raise ValueError(f'SummaryWriter(write_interval): expected a positive number, got {write_interval!r}')
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        writer = EventFileWriter(self.logdir, max_queue_size=int(queue_size), flush_secs=write_interval)
        self._state = _State(writer, int(queue_size), self.logdir)
        self._thread = threading.Thread(target=_work, args=(self._state,), name='objax.SummaryWriter', daemon=True)
        self._thread.start()
        self._finalizer = weakref.finalize(self, _shutdown, self._state, self._thread)

    def _check(self, where: str, note: str = ''):
        errors = self._state.take_errors()
        if errors:
            raise RuntimeError(f'SummaryWriter.{where}: writing an earlier summary failed{note}: ' + '; '.join(errors))

    def write(self, summary: Summary, step: int):
        """Queues `summary` to be written at `step` (blocks only while `queue_size` summaries are pending).

        Every entry is checked here, on the caller's thread: a scalar that cannot become one number (a string, a
        vector kept by Reducer.LAST...) raises an error naming its tag and nothing is queued.

        Args:
            summary: a Summary (any dict of DelayedScalar, Image or Text by str tag); copied, so it may be
                changed or cleared once write returns.
            step: the training step the summary is shown at, an int.

        Raises:
            TypeError, ValueError: a bad entry or step, or the writer is closed; the Summary is left as it was
                and nothing is written.
            RuntimeError: writing an earlier summary failed in the background (reported once; this summary is
                queued all the same).
        """
        if self._state.closed:
            raise ValueError(f'SummaryWriter.write: the writer for {self.logdir!r} is closed')
        if not isinstance(summary, dict):
            raise TypeError(f'SummaryWriter.write(summary): expected a Summary, got {type(summary).__name__}')
        try:
            step = operator.index(step)
        except TypeError:
            raise TypeError(f'SummaryWriter.write(step): expected an int, got {type(step).__name__}') from None
        entries = _snapshot(summary, step)
        self._state.queue.put((entries, step, time.time()))
        self._check('write', ' (this summary was queued)')

    def flush(self):
        """Blocks until every queued summary is written and on disk.

        Raises:
            RuntimeError: writing a summary failed in the background (not reported before).
        """
        if not self._state.closed:
            self._state.queue.put(_FLUSH)
            self._state.queue.join()
        self._check('flush')

    def close(self):
        """Writes everything pending and closes the event file.

        Raises:
            RuntimeError: writing a summary failed in the background (not reported before).
        """
        self._state.caller_reports = True
        self._finalizer()
        self._check('close')

    def __enter__(self) -> 'SummaryWriter':
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()
