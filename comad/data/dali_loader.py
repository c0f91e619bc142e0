"""The DALI train loader: files in a sampler's order -> DALI -> batches shaped as the torch path's.

:class:`DaliTrainLoader` iterates like a ``DataLoader`` over an :class:`ImageFolderDataset`
(the same file order and labels) and a sampler (the same draws: give it the run's
``ResumableInfiniteSampler``). Each batch is ``dict(inputs=(B, 3, H, W) uint8, label=(B,) int64,
index=(B,) int64, corrupt_skipped=(B,) int64)`` -- the keys and meaning of the torch path's
collated batch -- with ``inputs`` on the pipeline's GPU (or on the CPU in DALI's CPU mode).

How: a reader thread groups the sampler's draws into batches, replaces the files already known
to be corrupt, and reads the encoded bytes (a few I/O threads); the DALI graph of
:mod:`comad.data.dali` takes them through an external source, in that order.

Corrupt files. A batch that DALI cannot decode is checked file by file with DALI's decoder
(:class:`~comad.data.dali.DecodeChecker`); each file that fails is handed to
:meth:`ImageFolderDataset.note_corrupt` (``on_corrupt='error'``: the error naming it;
``'skip'``: warned once, counted, ``max_corrupt_frac`` enforced) and replaced by the next index
(``i + 1``, then ``i + 2`` ...), as the torch path does, with ``corrupt_skipped`` counting the
replacements. The pipeline is then rebuilt and the failed batch and those queued behind it run
again in order, so the batch order never changes. A corrupt file costs one such restart the
first time this process meets it; afterwards it is replaced before it reaches DALI.

Resume. The files come in the sampler's order, so after ``sampler.skip(n)`` the batches are
those of the uninterrupted run. The crops and flips are DALI's draws from a generator seeded
from (``seed``, rank, the draws skipped, the restarts): reproducible for a given run and resume
point, but a resumed run's crops are not those the uninterrupted run drew (the torch path seeds
every draw and is equal bit for bit).
"""
from __future__ import annotations

import hashlib
import math
import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

from .dali import CropSpec, DecodeChecker, build_train_pipeline, dali_error_gist, import_dali
from .dataset import CorruptImageError, ImageFolderDataset, TooManyCorruptImagesError

__all__ = ["DaliTrainLoader", "skip_known_corrupt"]


@dataclass
class _Batch:
    """One batch on its way through DALI: dataset indices, replacements counted, encoded files."""

    index: np.ndarray
    skipped: np.ndarray
    encoded: list[np.ndarray]


def skip_known_corrupt(index: np.ndarray, corrupt: frozenset[int], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Replace every index in ``corrupt`` by the next one not in it (``(i + 1) % n`` ...).

    Returns:
        (the (B,) indices used, the (B,) number of files skipped for each).
    """
    index = np.asarray(index, dtype=np.int64).copy()
    skipped = np.zeros(index.shape, dtype=np.int64)
    if not corrupt:
        return index, skipped
    bad = np.fromiter(corrupt, dtype=np.int64, count=len(corrupt))
    mask = np.isin(index, bad)
    while mask.any():
        if int(skipped.max()) >= n:
            raise TooManyCorruptImagesError(f"every one of the {n} images is corrupt")
        index[mask] = (index[mask] + 1) % n
        skipped[mask] += 1
        mask = np.isin(index, bad)
    return index, skipped


def _index_of(item: Any) -> int:
    """A sampler item: ``index`` or ``(index, draw)`` (ResumableInfiniteSampler)."""
    return int(item[0]) if isinstance(item, tuple) else int(item)


class _Reader:
    """A thread that turns the sampler's draws into :class:`_Batch` es (replacements, bytes read)."""

    def __init__(self, dataset: ImageFolderDataset, draws: Iterator[Any], batch_size: int,
                 corrupt: Callable[[], frozenset[int]], depth: int, threads: int) -> None:
        self.dataset, self.draws, self.batch_size, self.corrupt = dataset, draws, batch_size, corrupt
        self.error: BaseException | None = None
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="dali-read")
        self._thread = threading.Thread(target=self._run, name="dali-reader", daemon=True)
        self._thread.start()

    def read(self, index: np.ndarray) -> list[np.ndarray]:
        """The encoded files of ``index`` (1-D uint8 arrays), read by the I/O threads."""
        return [np.frombuffer(b, dtype=np.uint8) for b in self._pool.map(self.dataset.read_bytes, index.tolist())]

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                items = [_index_of(x) for _, x in zip(range(self.batch_size), self.draws)]
                if len(items) < self.batch_size:  # the draws ended: the last partial batch is dropped
                    self._put(StopIteration())
                    return
                index, skipped = skip_known_corrupt(np.asarray(items), self.corrupt(), len(self.dataset))
                self._put(_Batch(index, skipped, self.read(index)))
        except BaseException as e:  # handed to the consumer, raised there
            self.error = e
            self._put(e)

    def get(self) -> _Batch:
        """The next batch; StopIteration at the end; the reader's error if it failed."""
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)


def _seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(("comad-dali:" + ":".join(map(str, parts))).encode()).digest()[:4],
                          "little") & 0x7FFFFFFF


class DaliTrainLoader:
    """Train batches of ``dataset`` in ``sampler``'s order, cropped by DALI (see the module docstring).

    Args:
        dataset: the images (its ``transform`` is not used; ``spec`` says the crop).
        sampler: an iterable of indices or ``(index, draw)`` pairs (a fresh iterator per
            ``iter(loader)``: ``ResumableInfiniteSampler`` continues where it stands).
        batch_size: images per batch (a final partial batch of a finite sampler is dropped).
        spec: crop, resize and flip (:meth:`CropSpec.from_transform` of the train transform).
        num_threads: DALI's CPU threads.
        device_id: CUDA device of the ``mixed`` decoder and the output, or None (CPU mode).
        seed: seed of the crops and flips (mixed with the rank and the resume point).
        prefetch: batches DALI prepares ahead (the reader holds as many more).
        read_threads: threads reading the files.
        hw_decoder_load: share of JPEGs for the hardware decoder (``mixed`` only).
    """

    def __init__(self, dataset: ImageFolderDataset, sampler: Iterable[Any], batch_size: int, spec: CropSpec,
                 num_threads: int = 4, device_id: int | None = None, seed: int = 0, prefetch: int = 2,
                 read_threads: int = 4, hw_decoder_load: float = 0.65) -> None:
        import_dali()  # fail here, with the install hint, not at the first batch
        if batch_size < 1 or num_threads < 1 or prefetch < 1:
            raise ValueError(f"DaliTrainLoader: batch_size, num_threads and prefetch must be >= 1, got "
                             f"{batch_size}, {num_threads}, {prefetch}")
        self.dataset, self.sampler, self.batch_size, self.spec = dataset, sampler, int(batch_size), spec
        self.num_threads, self.device_id, self.seed = int(num_threads), device_id, int(seed)
        self.prefetch, self.read_threads, self.hw_decoder_load = int(prefetch), int(read_threads), hw_decoder_load
        self.restarts = 0  #: pipeline restarts after a batch with a corrupt file
        self._corrupt: frozenset[int] = frozenset()
        self._checker = DecodeChecker(device_id)
        self._copy_stream: Any = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._batches()

    def __len__(self) -> int:
        """Batches per epoch as a ``DataLoader`` counts them (``ceil(len(sampler) / batch_size)``)."""
        return math.ceil(len(self.sampler) / self.batch_size)  # type: ignore[arg-type]

    def _pipeline(self, source: Callable[[], list[np.ndarray]]) -> Any:
        rank = int(getattr(self.sampler, "rank", 0))
        seed = _seed(self.seed, rank, int(getattr(self.sampler, "skipped", 0)), self.restarts)
        return build_train_pipeline(source, self.spec, self.batch_size, self.num_threads, self.device_id, seed,
                                    self.prefetch, self.hw_decoder_load)

    def _batches(self) -> Iterator[dict[str, Any]]:
        """The loop: run the pipeline; on a failed batch fix it, rebuild, replay what was queued."""
        reader = _Reader(self.dataset, iter(self.sampler), self.batch_size, lambda: self._corrupt,
                         self.prefetch + 1, self.read_threads)
        pending: deque[_Batch] = deque()  # handed to DALI, not yet out, in order
        replay: deque[_Batch] = deque()

        def source() -> list[np.ndarray]:
            batch = replay.popleft() if replay else self._fix(reader.get(), reader)  # read before a late find
            pending.append(batch)
            return batch.encoded

        pipe = self._pipeline(source)
        try:
            while True:
                try:
                    (out,) = pipe.run()
                except StopIteration:
                    return
                except RuntimeError as e:
                    if reader.error is not None and reader.error is not e:
                        raise reader.error from e
                    if reader.error is not None or isinstance(e, (TooManyCorruptImagesError, CorruptImageError)):
                        raise
                    replay.append(self._fix(pending.popleft(), reader, e))
                    replay.extend(self._fix(b, reader) for b in pending)
                    pending.clear()
                    pipe = None
                    self.restarts += 1
                    pipe = self._pipeline(source)
                    continue
                yield self._to_torch(out, pending.popleft())
        finally:
            reader.close()
            pipe = None

    def _fix(self, batch: _Batch, reader: _Reader, err: RuntimeError | None = None) -> _Batch:
        """``batch`` with its corrupt files replaced: after a failure (``err``) every file is
        checked with DALI's decoder first; always, the files known corrupt are replaced and
        the replacements checked in turn."""
        index, skipped, encoded = batch.index, batch.skipped, list(batch.encoded)
        if err is not None:
            if not self._note_bad(index, encoded, range(len(index))):
                shown = ", ".join(str(self.dataset.path(int(i))) for i in index[:3])
                raise RuntimeError(f"DALI failed on a batch whose files each decode alone ({shown}, ...): "
                                   f"{dali_error_gist(err)}") from err
        while True:
            new, more = skip_known_corrupt(index, self._corrupt, len(self.dataset))
            changed = [int(p) for p in np.flatnonzero(new != index)]
            if not changed:
                return _Batch(index, skipped, encoded)
            for p, f in zip(changed, reader.read(new[changed])):
                encoded[p] = f
            index, skipped = new, skipped + more
            self._note_bad(index, encoded, changed)

    def _note_bad(self, index: np.ndarray, encoded: list[np.ndarray], positions: Iterable[int]) -> int:
        """Check ``positions`` of a batch with DALI's decoder; note each corrupt file with the
        dataset (which raises per its ``on_corrupt`` / ``max_corrupt_frac``); how many failed."""
        bad = [(int(index[p]), msg) for p in positions if (msg := self._checker.error(encoded[p])) is not None]
        for i, msg in bad:
            self.dataset.note_corrupt(i, CorruptImageError(f"corrupt image {self.dataset.path(i)}: DALI: {msg}"))
        self._corrupt = self._corrupt | {i for i, _ in bad}
        return len(bad)

    def _to_torch(self, out: Any, batch: _Batch) -> dict[str, Any]:
        """The torch batch of DALI's output ``out`` (copied: DALI reuses its buffers)."""
        from nvidia.dali.plugin.pytorch import feed_ndarray

        t = out.as_tensor()
        device = torch.device("cpu") if self.device_id is None else torch.device("cuda", self.device_id)
        x = torch.empty(t.shape(), dtype=torch.uint8, device=device)
        if device.type == "cuda":
            # On a stream of its own, finished before the next run() lets DALI reuse its buffer:
            # the step's stream may still hold a whole step of work ahead of a copy queued there.
            if self._copy_stream is None:
                self._copy_stream = torch.cuda.Stream(device)
            feed_ndarray(t, x, cuda_stream=self._copy_stream)
            self._copy_stream.synchronize()
        else:
            feed_ndarray(t, x)
        return dict(inputs=x, label=torch.from_numpy(self.dataset.labels[batch.index]),
                    index=torch.from_numpy(batch.index), corrupt_skipped=torch.from_numpy(batch.skipped))
