"""Stage: train. Feature sets + labels -> cross-validated fusion models and their predictions.

Input: the clip registry, the dataset's newest feature set per extractor, and training labels
(clip_id, label, weight: the human labels of the `train` split, to which pseudo-labelling later
adds accepted clips).
Output: per fusion head, seed and fold, a model file (`<run>/train/model-<fusion>-s<seed>-f<fold>.pt`);
`oof.parquet` (out-of-fold probabilities of every labelled clip), `predictions.parquet`
(probabilities of the clips to predict: per fold and averaged, per head), and metrics.

Experts (one per input): every clip-level feature set as an MLP expert, the AU sequence as a
temporal expert (`au_seq`), and the early audio-text module (`audio_text`: frame-level audio x
token-level text). Folds are stratified; each fold trains on the rest with early stopping on
the fold's validation weighted F1; fold predictions are averaged in log space (the MER
toolkit averages fold logits).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import gc
import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from sklearn.model_selection import StratifiedKFold

from models.baseline import Bundle, ExpertInput, FusionClassifier
from models.metrics import evaluate
from storage.artifacts import ArtifactRef, ArtifactStore
from storage.feature_cache import FeatureSource, gather_sequences, gather_vectors
from storage.ids import IdIndex, isin
from storage.ingest import USABLE
from storage.locks import flocked
from storage.spill import SpillFile
from tasks.memory import release_memory, trim_heap


@dataclass(frozen=True)
class ExpertSpec:
    name: str
    kind: str  # vector, sequence, joint
    sources: tuple[str, ...]  # feature sets (extractor names) it reads


def default_experts(available: list[str]) -> list[ExpertSpec]:
    """An MLP per feature set, the AU temporal expert and the audio-text joint module."""
    specs = [ExpertSpec(name, "vector", (name,)) for name in sorted(available)]
    if "au" in available:
        specs.append(ExpertSpec("au_seq", "sequence", ("au",)))
    if "audio_handcrafted" in available and "text" in available:
        specs.append(ExpertSpec("audio_text", "joint", ("audio_handcrafted", "text")))
    return specs


def choose_experts(available: list[str], names: list[str] | None) -> list[ExpertSpec]:
    specs = default_experts(available)
    if not names:
        return specs
    known = {s.name: s for s in specs}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(
            f"unknown or unavailable expert(s) {', '.join(unknown)}; available: {', '.join(known)}"
        )
    return [known[n] for n in names]


def build_bundle(ids: Sequence[str], features: Mapping[str, FeatureSource],
                 specs: list[ExpertSpec]) -> Bundle:
    """The inputs of clips `ids` for every expert (absent features masked, never zeros).
    `features`: per feature set a table, a frame or record batches (storage.records.FeatureFrames
    streams each artifact a row group at a time into the expert's matrix). With a `drop(name)`,
    each is dropped, and its heap handed back, once the last expert that reads it is built."""
    last_use = {source: i for i, spec in enumerate(specs) for source in spec.sources}
    drop = getattr(features, "drop", None)
    experts = []
    for i, spec in enumerate(specs):
        if spec.kind == "vector":
            x, present = gather_vectors(features[spec.sources[0]], ids)
            experts.append(ExpertInput(spec.name, "vector", present, x=x))
        elif spec.kind == "sequence":
            seqs, present = gather_sequences(features[spec.sources[0]], ids)
            experts.append(ExpertInput(spec.name, "sequence", present, seqs=seqs))
        else:
            audio, pa_ = gather_sequences(features[spec.sources[0]], ids)
            text, pt_ = gather_sequences(features[spec.sources[1]], ids)
            experts.append(ExpertInput(spec.name, "joint", pa_ & pt_, seqs=audio, seqs2=text))
        done = [source for source in spec.sources if last_use[source] == i]
        if drop is not None and done:
            for source in done:
                drop(source)
            release_memory()
    # The ids as one Arrow string array: a list of Python strings is ~70 bytes a clip more,
    # and forked fold workers copy the pages of the objects whose reference counts they touch.
    return Bundle(pd.array(ids, dtype="str", copy=False), experts)


@dataclass
class TrainConfig:
    fusions: tuple[str, ...] = ("moe", "attention")
    experts: tuple[str, ...] = ()
    folds: int = 5
    seeds: tuple[int, ...] = (0, 1, 2)
    model: dict = field(default_factory=dict)     # FusionClassifier settings (hidden, epochs, ...)
    # Processes fitting fold models side by side (fork); results do not depend on it.
    workers: int = 1

    def build(self, labels: tuple[str, ...], fusion: str, seed: int) -> FusionClassifier:
        return FusionClassifier(labels, fusion=fusion, seed=seed, **self.model)


@dataclass
class TrainResult:
    oof: pd.DataFrame  # clip_id, fusion, head, seed, p_<label>
    # The clips predicted: each head's fold-averaged probabilities (`pool.probs`), and every
    # fold model's rows too (or, stored as the fits returned, `pool.stored`) until
    # `save_training` stores them.
    pool: PoolPredictions
    models: list[dict] = field(default_factory=list)  # fusion, seed, fold, bytes, val_f1, best_epoch
    metrics: dict = field(default_factory=dict)  # fusion -> head -> evaluate(...)

    @property
    def predictions(self) -> pd.DataFrame:
        """The fold-averaged rows (seed and fold 'mean') of every head in one frame: clip_id,
        head, fusion, seed, fold, p_<label> (the flows read a head at a time: `pool.probs`)."""
        return self.pool.mean_frame()


def _rows(ids, probs: dict[str, np.ndarray], labels, **keys) -> list[pd.DataFrame]:
    out = []
    for head, p in probs.items():
        frame = pd.DataFrame(p, columns=[f"p_{lab}" for lab in labels])
        frame.insert(0, "clip_id", ids)
        for i, (k, v) in enumerate({"head": head, **keys}.items(), start=1):
            frame.insert(i, k, v)
        out.append(frame)
    return out


def mean_log(probs: list[np.ndarray]) -> np.ndarray:
    """Average in log space (fold logits up to a per-row constant), renormalised; NaN-aware:
    a clip's NaN rows are left out of its mean (all NaN: NaN). The members are added in the
    order given (`LogMean`)."""
    mean = LogMean(np.result_type(*probs) if probs else np.float64)
    for p in probs:
        mean.add(p)
    return mean.result()


class LogMean:
    """`mean_log` of members added one at a time: a running sum of their logs, the members
    added and, once a member has a NaN, how many members lack each value, so the members need
    not be held together (at 100,000 candidates a fold model's block of one head is 2.4 MB,
    and a round has dozens). The result is bit-for-bit numpy's `nanmean` over the stacked
    members in the order they were added."""

    def __init__(self, dtype=np.float32) -> None:
        self.dtype = np.dtype(dtype)
        self.total: np.ndarray | None = None
        self.missing: np.ndarray | None = None      # uint16; None while no member had a NaN
        self.n = 0

    def add(self, p: np.ndarray) -> None:
        # One temporary the member's size, worked on in place (at 100,000 candidates each head
        # of a fold model is 2.4 MB, and the flow adds 8 of them per fold model).
        logp = np.clip(np.asarray(p, self.dtype), 1e-8, 1.0, dtype=self.dtype)
        np.log(logp, out=logp)
        if self.total is not None and logp.shape != self.total.shape:
            raise ValueError(f"a member of shape {logp.shape} added to means of shape {self.total.shape}")
        unknown = np.isnan(logp)
        if unknown.any():
            logp[unknown] = 0.0
            if self.missing is None:
                self.missing = np.zeros(logp.shape, np.uint16)
            self.missing += unknown
        if self.total is None:
            self.total = logp
        else:
            self.total += logp
        self.n += 1

    def result(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("a mean of no members")
        # As nanmean divides: the sum by an integer count of the members that have the value.
        count = np.intp(self.n) if self.missing is None else self.n - self.missing.astype(np.intp)
        with warnings.catch_warnings():
            # An expert head is NaN for a clip that lacks the expert in every fold: it stays NaN.
            warnings.simplefilter("ignore", RuntimeWarning)
            m = np.true_divide(self.total, count, out=self.total, casting="unsafe")   # 0 / 0: NaN
            p = np.exp(m - np.nanmax(m, axis=1, keepdims=True))
        self.total = self.missing = None
        self.n = 0
        return p / p.sum(axis=1, keepdims=True)


def member_order(seed: object, fold: object) -> tuple:
    """The order in which a head's fold models enter its mean: by seed, then fold, numbers
    numerically (the order `fold_jobs` fits them in)."""
    return tuple((0, int(v), "") if str(v).isdigit() else (1, 0, str(v)) for v in (seed, fold))


@dataclass(frozen=True)
class FoldJob:
    """One fold model to fit: its seed, fold and fusion, and its rows among the training labels."""

    seed: int
    fold: int
    fusion: str
    tr: np.ndarray
    va: np.ndarray


@dataclass
class FoldData:
    """What every fold fit reads: the bundle of all clips (labelled and to predict), the rows of
    the training labels in it with their label indices, weights and pseudo-label mask, and the
    rows to predict."""

    bundle: Bundle
    train_rows: np.ndarray
    y: np.ndarray
    weight: np.ndarray | None
    predict_rows: np.ndarray
    label_set: tuple[str, ...]
    config: TrainConfig
    pseudo: np.ndarray | None = None


def fold_jobs(y: np.ndarray, config: TrainConfig, pseudo: np.ndarray | None = None) -> list[FoldJob]:
    """Every (seed, fold, fusion) fit, in the order their outputs are recorded. The folds split
    the human labels; pseudo-labels (`pseudo`: bool per label) join every fold's training side
    and are never validated on: early stopping and the out-of-fold scores judge human labels."""
    pseudo = np.zeros(len(y), bool) if pseudo is None else np.asarray(pseudo, bool)
    human, extra = np.flatnonzero(~pseudo), np.flatnonzero(pseudo)
    jobs = []
    # By seed, then fold (`member_order`): the order the pool's means add them in.
    for seed in sorted(set(config.seeds)):
        folds = StratifiedKFold(config.folds, shuffle=True, random_state=seed).split(
            np.zeros(len(human)), y[human])
        for fold, (tr, va) in enumerate(folds):
            tr = np.concatenate([human[tr], extra]) if len(extra) else human[tr]
            jobs += [FoldJob(seed, fold, fusion, tr, human[va]) for fusion in config.fusions]
    return jobs


def fit_fold(data: FoldData, job: FoldJob, pool_file: str | None = None) -> dict:
    """Fit one fold model; its out-of-fold and pool probabilities per head, bytes and scores.
    `pool_file`: the pool's probabilities are written to that file a chunk of rows at a time
    and handed on as a `HeadFile` of it (a forked worker's, instead of an array and its pickle)."""
    # The fold's rows are read in place from the shared bundle, never copied out of it.
    tr, va = data.train_rows[job.tr], data.train_rows[job.va]
    model = data.config.build(data.label_set, job.fusion, job.seed * 1000 + job.fold).fit(
        data.bundle, data.y[job.tr], None if data.weight is None else data.weight[job.tr],
        val=(data.bundle, data.y[job.va], va), pseudo=None if data.pseudo is None else data.pseudo[job.tr],
        rows=tr,
    )
    pred = (model.predict_proba(data.bundle, data.predict_rows) if pool_file is None
            else predict_to_file(model, data.bundle, data.predict_rows, pool_file))
    return {"oof": model.predict_proba(data.bundle, va), "pred": pred,
            "bytes": model.to_bytes(), "val_f1": model.val_f1_, "best_epoch": model.best_epoch_}


# Pool rows a fold worker predicts, then writes, at a time: a multiple of the 256-row batches
# `FusionClassifier.predict_proba` runs, so the batches (and the probabilities) are those of
# one call over every row.
PREDICT_CHUNK = 32 * 256


class HeadFile(Mapping):
    """One fold model's probabilities per head (each rows x labels, float32) in a raw file,
    head after head, read a head at a time when asked (`np.fromfile`: not mapped, so the
    reader holds only the head it reads). Small to pickle: a fold worker hands this on, not
    the pool's probabilities (at 100,000 candidates 17 MB per MoE fold model, and as much
    again for their pickle in the worker and their copy in the flow)."""

    def __init__(self, path: str, heads: Sequence[str], rows: int, labels: int) -> None:
        self.path, self.heads, self.rows, self.labels = str(path), tuple(heads), int(rows), int(labels)

    def __getitem__(self, head: str) -> np.ndarray:
        return self.read(head)

    def read(self, head: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows `start` to `stop` (default: all) of one head."""
        i = self.heads.index(head)
        stop = self.rows if stop is None else min(stop, self.rows)
        start = min(max(start, 0), stop)
        values = np.fromfile(self.path, np.float32, count=(stop - start) * self.labels,
                             offset=(i * self.rows + start) * self.labels * 4)
        return values.reshape(stop - start, self.labels)

    def __iter__(self) -> Iterator[str]:
        return iter(self.heads)

    def __len__(self) -> int:
        return len(self.heads)


def predict_to_file(model: FusionClassifier, bundle: Bundle, rows: np.ndarray, path: str) -> HeadFile:
    """`model.predict_proba(bundle, rows)` written to `path` a chunk of `PREDICT_CHUNK` rows at
    a time (`HeadFile`'s layout): only a chunk's probabilities are ever in memory."""
    rows = np.asarray(rows)
    heads: list[str] = []
    labels = len(model.labels)
    block = len(rows) * labels * 4                         # one head's bytes
    with open(path, "wb") as f:
        for start in range(0, len(rows), PREDICT_CHUNK):
            probs = model.predict_proba(bundle, rows[start:start + PREDICT_CHUNK])
            heads = heads or list(probs)
            for i, head in enumerate(heads):
                f.seek(i * block + start * labels * 4)
                f.write(np.ascontiguousarray(probs[head], np.float32))
    return HeadFile(path, heads, len(rows), labels)


# Pool rows the flow works on at a time: a fold model's head is read, added to its running mean
# and written to the predictions artifact (a row group) this many rows at a time.
POOL_CHUNK = 16_384

# The fold data and jobs of the running `fit_folds`, and the folder of its fits' pool files,
# inherited by its forked workers (never pickled: at 100,000 candidates the bundle is ~330 MB,
# shared copy-on-write).
_SHARED: tuple[FoldData, list[FoldJob], str] | None = None


def _fit_shared(i: int) -> dict:
    data, jobs, scratch = _SHARED
    out = fit_fold(data, jobs[i], pool_file=os.path.join(scratch, f"fit-{i}.f32"))
    # The pool prediction's freed batch arrays stay resident in the worker's heap (glibc's
    # dynamic mmap threshold moves blocks of their size into it): +180-490 MB private per
    # worker at 100,000 candidates, given back here before the next fit. (A fixed mmap
    # threshold kept them out of the heap, but one run's rounds were ~50 % slower with it.)
    trim_heap()
    return out


def _die_with_parent(parent: int) -> None:
    """A fold worker is killed when the flow process ends (SIGKILLed, crashed) instead of fitting
    on for nobody (Linux: PR_SET_PDEATHSIG; elsewhere it ends after its current fit)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)      # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:                  # the parent died before the line above ran
        os._exit(1)


def _warm_torch(data: FoldData, job: FoldJob) -> None:
    """One epoch on a few rows, here, before the workers fork: torch's first fit and predict
    set up kernels, thread pools and allocator caches (~170 MB), which forked workers would
    otherwise each set up in private memory (measured: 271 -> 104 MB private per worker at
    100,000 candidates). The workers' fits seed themselves, so their results do not change."""
    rows = data.train_rows[job.tr[:64]]
    model = data.config.build(data.label_set, job.fusion, 0)
    model.epochs = 1
    model.fit(data.bundle, data.y[job.tr[:64]], val=(data.bundle, data.y[job.tr[:64]], rows), rows=rows)


def fit_folds(data: FoldData, jobs: list[FoldJob], workers: int = 1) -> Iterator[dict]:
    """`fit_fold` of every job, in job order, each handed on as it returns (the caller stores
    and lets go of one fit's pool probabilities before it asks for the next). `workers` > 1:
    that many forked processes fit side by side (one torch thread each, as in this process);
    each fit is seeded by its own (seed, fold), so the results are the same as with one worker.
    Each fit's pool probabilities come as a `HeadFile` in a temporary folder (TMPDIR), removed
    when the caller asks for the next fit (the folder when the fits end; a folder left by a
    killed flow when the next fits begin: `scratch_folder`), with one worker as with several:
    no fit's pool probabilities are in memory whole unless the caller reads them so (it reads
    them a chunk of a head at a time unless it keeps every block). Where fork is unavailable
    (Windows), one worker."""
    global _SHARED
    if workers <= 1 or len(jobs) <= 1 or "fork" not in mp.get_all_start_methods():
        with scratch_folder() as scratch:
            for i, job in enumerate(jobs):
                yield from _hand_on(fit_fold(data, job, pool_file=os.path.join(scratch, f"fit-{i}.f32")))
        return
    with scratch_folder() as scratch:
        _SHARED = (data, jobs, scratch)
        try:
            yield from _fit_forked(data, jobs, workers)
        finally:
            _SHARED = None


def _fit_forked(data: FoldData, jobs: list[FoldJob], workers: int) -> Iterator[dict]:
    _warm_torch(data, jobs[0])
    with _frozen_objects(), ProcessPoolExecutor(
            min(workers, len(jobs)), mp_context=mp.get_context("fork"),
            initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
        fits = pool.map(_fit_shared, range(len(jobs)))
        # Each fit is handed on while the workers go on with the next; the last one after
        # they have ended, so that their memory is not held while the caller stores it.
        try:
            for _ in range(len(jobs) - 1):
                yield from _hand_on(next(fits))
            last = next(fits)
        finally:
            fits.close()        # the caller stopped early: the fits not begun are cancelled
    yield from _hand_on(last)


SCRATCH_PREFIX = "mersemi-fits-"


@contextlib.contextmanager
def scratch_folder() -> Iterator[str]:
    """A new folder in TMPDIR for the pool files of fold models (`predict_to_file`: the fits',
    the predict stage's), removed at the end. Its `owner` file is locked (flock) while the
    folder is in use, so a folder whose process was killed before it could remove it (SIGKILL,
    out of memory: the pool files of the models in flight, 14-17 MB each for a MoE fold model at
    100,000 candidates) is told from one in use, here or in another process, and removed when
    the next fits or predictions begin. The lock goes with the last process holding
    it (forked workers inherit it, and die with the flow), whatever its pid namespace. Folders
    and locks are made and swept under one lock in TMPDIR, so a sweep never finds a new folder
    before its owner locked it."""
    base = tempfile.gettempdir()
    with flocked(os.path.join(base, "mersemi-fits.lock")):
        _remove_orphaned_scratch(base)
        path = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base)
        try:
            owner = os.open(os.path.join(path, "owner"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            shutil.rmtree(path, ignore_errors=True)
            raise
        fcntl.flock(owner, fcntl.LOCK_EX)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(owner)


def _remove_orphaned_scratch(base: str) -> None:
    """Remove the fits' folders in `base` that no live process holds (their `owner` lock is
    free). A folder without an owner file (made by a version before it had one) is left alone:
    nothing tells whether it is in use."""
    for entry in os.scandir(base):
        if not entry.name.startswith(SCRATCH_PREFIX) or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            fd = os.open(os.path.join(entry.path, "owner"), os.O_RDONLY | os.O_CLOEXEC)
        except OSError:                     # gone meanwhile, no owner file, or not ours to open
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:             # in use
            continue
        finally:
            os.close(fd)                    # (a successful lock goes with it)
        shutil.rmtree(entry.path, ignore_errors=True)


@contextlib.contextmanager
def _frozen_objects() -> Iterator[None]:
    """The objects alive now are left out of garbage collection for the block (the fold workers'
    lifetime): a collection, in a worker or in this process, writes to each tracked object's
    header, and every page of them the processes share would be copied. Not if someone else
    froze some already (unfreezing would let theirs go too)."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _hand_on(fit: dict) -> Iterator[dict]:
    """Hand a fit on; its pool file goes once the caller is back for the next."""
    return hand_on(fit, fit.get("pred"))


def hand_on(item: Any, pred: Mapping | None) -> Iterator[Any]:
    """Hand `item` on (a fit, or a fold model's keys and predictions); once the caller is back
    for the next, its pool file `pred` (a `HeadFile`) is removed."""
    yield item
    if isinstance(pred, HeadFile):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pred.path)


class _Mean:
    """One (fusion, head)'s running `LogMean`, kept in the pool's `SpillFile`: where its sums
    are (then its means, once made), where its counts of members lacking each value are (once
    a member had a NaN), and how many members it has."""

    __slots__ = ("total_at", "missing_at", "n")

    def __init__(self, total_at: int) -> None:
        self.total_at, self.missing_at, self.n = total_at, None, 0


class PoolPredictions:
    """Every fold model's probabilities of the clips to predict, and per fusion and head their
    'mean' (every seed's and fold's, averaged in log space): rows clip_id, head, fusion, seed,
    fold, p_<label>, handed out a block at a time (one model's head, or one mean), each in
    frames of `chunk_rows` rows (a row group each in the artifact).

    The fold models (`members`: their keys fusion, seed, fold; `heads`: every head any of them
    has) are added one at a time, as their fits return (`add`), each head's in `member_order`
    (the means then do not depend on the order in which fits finish); `finish` makes the
    means. The running sums and then the means are kept in an unnamed temporary file
    (`storage.spill.SpillFile`), worked on `chunk_rows` rows at a time: the flow holds no
    head's probabilities of the whole pool (at 100,000 candidates the 8 heads' running sums
    were 19 MB, held through every fit, and their means' frame 35 MB). With `keep_folds` the
    fold models' blocks are kept for `frames()`; without, the caller writes each as it comes
    (`write`): at 100,000 candidates the fold blocks of a round are 3.2 M rows, which the
    flows only ever write to the predictions artifact. What the flows read is one head's
    means (`probs`); `mean_frame()` is every head's. `of(ids, parts, label_set)`: all at once."""

    def __init__(self, ids: Sequence[str], label_set: tuple[str, ...], members: list[dict],
                 heads: Sequence[str], keep_folds: bool = True, chunk_rows: int = POOL_CHUNK) -> None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
        self.label_set = tuple(label_set)
        self.keep_folds = keep_folds
        self.chunk_rows = int(chunk_rows)
        self.blocks: list[tuple] = []           # the kept fold blocks (head, fusion, seed, fold, p)
        self._spill = SpillFile()
        self._means: dict[tuple[str, str], _Mean] = {}
        self._last: dict[tuple[str, str], tuple] = {}
        self._done = False
        # The artifact the blocks were written to as they came (`collect_predictions`).
        self.stored: ArtifactRef | None = None
        # One string array of the ids, sliced (not copied) by every frame; one set of categories.
        self.ids = pd.array(ids, dtype="str", copy=False)
        self.categories = {"head": sorted(set(heads)), "fusion": sorted({str(m["fusion"]) for m in members}),
                           "seed": sorted({str(m["seed"]) for m in members} | {"mean"}),
                           "fold": sorted({str(m["fold"]) for m in members} | {"mean"})}

    @property
    def n_fold_blocks(self) -> int:
        return len(self.blocks)

    @classmethod
    def of(cls, ids: list[str], parts: list[tuple[dict, dict[str, np.ndarray]]],
           label_set: tuple[str, ...]) -> PoolPredictions:
        """Every part at once (keys fusion, seed, fold; probabilities per head, rows in `ids`
        order): their blocks in the parts' order, then the means."""
        heads = {head for _, probs in parts for head in probs}
        pool = cls(ids, label_set, [keys for keys, _ in parts], heads, keep_folds=False)
        for keys, probs in sorted(parts, key=lambda part: member_order(part[0]["seed"], part[0]["fold"])):
            pool.add(keys, probs)
        pool.blocks = [(head, str(keys["fusion"]), str(keys["seed"]), str(keys["fold"]), p)
                       for keys, probs in parts for head, p in probs.items()]
        pool.keep_folds = True
        pool.finish()
        return pool

    def add(self, keys: dict, probs: Mapping[str, np.ndarray]) -> None:
        """One fold model's probabilities per head (rows in `ids` order) into the means."""
        for _ in self._added(keys, probs):
            pass

    def _spans(self) -> list[tuple[int, int]]:
        """The row ranges worked on at a time (one empty range for no rows)."""
        n = len(self.ids)
        return [(a, min(a + self.chunk_rows, n)) for a in range(0, n, self.chunk_rows)] or [(0, 0)]

    def _added(self, keys: dict, probs: Mapping[str, np.ndarray]) -> Iterator[tuple[tuple, int, np.ndarray]]:
        """`add`, handing out each head's rows a chunk at a time once they are in the means
        (block key, first row, probabilities): a `HeadFile`'s head is read a chunk at a time,
        once, for the means and its frames."""
        if self._done:
            raise ValueError("fold model added after the means were made")
        unknown = sorted(set(probs) - set(self.categories["head"]))
        if unknown:
            raise ValueError(f"fold model {keys} has heads {unknown} beyond the announced "
                             f"{self.categories['head']}")
        fusion, seed, fold = str(keys["fusion"]), str(keys["seed"]), str(keys["fold"])
        if any(v not in self.categories[k] for k, v in (("fusion", fusion), ("seed", seed), ("fold", fold))):
            raise ValueError(f"fold model {keys} is not among the members announced")
        for head in probs:
            # A HeadFile's head is read a chunk at a time, unless its block is kept whole.
            whole = None if isinstance(probs, HeadFile) and not self.keep_folds else np.asarray(probs[head])
            rows = probs.rows if whole is None else len(whole)
            if rows != len(self.ids):
                raise ValueError(f"fold model {keys}, head {head}: {rows} rows for {len(self.ids)} clips")
            group, order = (fusion, head), member_order(seed, fold)
            if group in self._last and order <= self._last[group]:
                raise ValueError(f"fold model {keys} added after seed/fold {self._last[group]} "
                                 "(members are added by seed, then fold)")
            self._last[group] = order
            mean = self._means.get(group)
            if mean is None:
                mean = self._means[group] = _Mean(self._spill.reserve(self._at(0, len(self.ids), np.float32)))
            block = (head, fusion, seed, fold)
            for start, stop in self._spans():
                p = whole[start:stop] if whole is not None else probs.read(head, start, stop)
                self._add_rows(mean, start, p)
                yield block, start, p
            mean.n += 1
            if self.keep_folds:
                self.blocks.append((*block, whole))

    def _at(self, region: int, row: int, dtype) -> int:
        """Where `row` starts in a spill region of rows x labels values of `dtype`."""
        return region + row * len(self.label_set) * np.dtype(dtype).itemsize

    def _running(self, mean: _Mean, start: int, rows: int) -> LogMean:
        """The running mean of `rows` rows from `start`, read from the spill file."""
        shape = (rows, len(self.label_set))
        state = LogMean(np.float32)
        if mean.n:
            state.total = self._spill.read(self._at(mean.total_at, start, np.float32), np.float32, shape)
            state.n = mean.n
            if mean.missing_at is not None:
                at = self._at(mean.missing_at, start, np.uint16)
                state.missing = self._spill.read(at, np.uint16, shape)
        return state

    def _add_rows(self, mean: _Mean, start: int, p: np.ndarray) -> None:
        """Add a member's rows from `start` to `mean` (elementwise: a chunk's sums and counts are
        those of the whole block's)."""
        state = self._running(mean, start, len(p))
        state.add(p)
        self._spill.write(self._at(mean.total_at, start, np.float32), state.total)
        if state.missing is not None:
            if mean.missing_at is None:         # zeros for the rows before: they had no NaN
                mean.missing_at = self._spill.reserve(self._at(0, len(self.ids), np.uint16))
            self._spill.write(self._at(mean.missing_at, start, np.uint16), state.missing)

    def write(self, parts: Iterable[tuple[dict, Mapping[str, np.ndarray]]]) -> Iterator[pd.DataFrame]:
        """Add each part as it comes and hand out the frames of its blocks, a chunk of a head at
        a time (for `ArtifactStore.save_frames`), then the means' frames."""
        for keys, probs in parts:
            for block, start, p in self._added(keys, probs):
                yield self._frame(block, start, p)
        yield from self.frames(means_only=True)

    def save(self, store: ArtifactStore, run_id: str, stage: str) -> ArtifactRef:
        """The predictions artifact: the one written as the parts came (`stored`), or every
        kept block written now."""
        return self.stored or store.save_frames(self.frames(), run_id, stage, "predictions")

    def release_folds(self) -> None:
        """Let the kept fold blocks go (stored: they are read back from the artifact if ever
        needed); the means stay."""
        self.blocks = []
        self.keep_folds = False

    def finish(self) -> None:
        """Make the means, by (fusion, head), a chunk of rows at a time (a row's mean depends on
        that row only), in place of the sums."""
        if self._done:
            return
        self._done = True
        for group in sorted(self._means):
            mean = self._means[group]
            for start, stop in self._spans():
                p = self._running(mean, start, stop - start).result().astype(np.float32, copy=False)
                self._spill.write(self._at(mean.total_at, start, np.float32), p)

    def _mean_rows(self, group: tuple[str, str], start: int, stop: int) -> np.ndarray:
        return self._spill.read(self._at(self._means[group].total_at, start, np.float32), np.float32,
                                (stop - start, len(self.label_set)))

    def probs(self, fusion: str, head: str) -> pd.DataFrame:
        """One head's means per clip (index clip_id; p_<label>, float32); no rows for a head
        that no member has."""
        self.finish()
        columns = [f"p_{lab}" for lab in self.label_set]
        if (fusion, head) not in self._means:
            return pd.DataFrame(np.zeros((0, len(columns)), np.float32), columns=columns,
                                index=pd.Index([], dtype="str", name="clip_id"))
        p = self._mean_rows((fusion, head), 0, len(self.ids))
        return pd.DataFrame(p, columns=columns, index=pd.Index(self.ids, name="clip_id"), copy=False)

    @property
    def heads(self) -> list[str]:
        """The "<fusion>/<head>" of every mean."""
        return [f"{fusion}/{head}" for fusion, head in sorted(self._means)]

    def _frame(self, block: tuple, start: int, p: np.ndarray) -> pd.DataFrame:
        n = len(p)
        data: dict = {"clip_id": self.ids[start:start + n]}
        for i, name in enumerate(("head", "fusion", "seed", "fold")):
            # Categorical: a byte per row, not a string.
            cats = self.categories[name] or [""]
            code = cats.index(block[i])
            data[name] = pd.Categorical.from_codes(np.full(n, code, np.int8 if len(cats) < 127 else np.int32),
                                                   categories=cats)
        for j, lab in enumerate(self.label_set):
            data[f"p_{lab}"] = np.ascontiguousarray(p[:, j], dtype=np.float32)
        return pd.DataFrame(data, copy=False)

    def frames(self, means_only: bool = False) -> Iterator[pd.DataFrame]:
        """Frames of `chunk_rows` rows per block: the kept fold blocks in the order they were
        added, then the means by (fusion, head); an empty frame when there is none."""
        if not means_only and not self.keep_folds:
            raise ValueError("the fold models' blocks were not kept (written as they came): "
                             "only the means are here")
        self.finish()
        if not self._means and (means_only or not self.blocks):
            yield self._frame(("", "", "", ""), 0, np.zeros((0, len(self.label_set)), np.float32)).iloc[:0]
            return
        if not means_only:
            for head, fusion, seed, fold, p in self.blocks:
                for start, stop in self._spans():
                    yield self._frame((head, fusion, seed, fold), start, p[start:stop])
        for fusion, head in sorted(self._means):
            for start, stop in self._spans():
                yield self._frame((head, fusion, "mean", "mean"), start,
                                  self._mean_rows((fusion, head), start, stop))

    def mean_frame(self) -> pd.DataFrame:
        """The 'mean' rows (seed and fold 'mean'), one per clip, fusion and head, in one frame
        (small sets and tests; the flows read a head at a time: `probs`)."""
        return pd.concat(list(self.frames(means_only=True)), ignore_index=True)

    def frame(self) -> pd.DataFrame:
        """Every row in one frame (small sets; the flows stream `frames()` instead)."""
        return pd.concat(list(self.frames()), ignore_index=True)


def prediction_frame(ids: list[str], parts: list[tuple[dict, dict[str, np.ndarray]]],
                     label_set: tuple[str, ...]) -> pd.DataFrame:
    """clip_id, head, fusion, seed, fold, p_<label>: the rows of every part, then per fusion and
    head a 'mean' row per clip (`PoolPredictions`, in one frame)."""
    return PoolPredictions.of(ids, parts, label_set).frame()


def collect_predictions(pool: PoolPredictions, parts: Iterable[tuple[dict, dict[str, np.ndarray]]],
                        store_predictions: Callable[[Iterator[pd.DataFrame]], ArtifactRef] | None = None
                        ) -> None:
    """Add every part (keys, probabilities per head) to `pool` as it comes. With
    `store_predictions` (`ArtifactStore.save_frames` of this run's predictions), each part's
    frames are written as it comes and only the running means are held; the artifact's
    reference is then `pool.stored`."""
    if store_predictions is None:
        for keys, probs in parts:
            pool.add(keys, probs)
        return
    pool.stored = store_predictions(pool.write(parts))


def fold_data(bundle: Bundle, labels_df: pd.DataFrame, label_set: tuple[str, ...],
              config: TrainConfig, predict_ids: Sequence[str]) -> FoldData:
    """The FoldData of the labelled clips `labels_df` (clip_id, label; weight and pseudo if
    given) and the clips `predict_ids`, all of them clips of `bundle`."""
    index = IdIndex(bundle.clip_ids, "clip {!r} is in the bundle twice")

    def rows(ids: Sequence[str]) -> np.ndarray:
        ids = pd.array(ids, dtype="str")
        at = index.positions(ids)
        outside = np.flatnonzero(at < 0)
        if len(outside):
            raise KeyError(f"clip {ids[outside[0]]!r} is not in the bundle")
        return at.astype(np.int64)

    y = np.array([label_set.index(lab) for lab in labels_df["label"]])
    pseudo = labels_df["pseudo"].to_numpy(bool) if "pseudo" in labels_df else np.zeros(len(y), bool)
    return FoldData(bundle, rows(labels_df["clip_id"]), y,
                    labels_df["weight"].to_numpy(np.float32) if "weight" in labels_df else None,
                    rows(predict_ids), label_set, config, pseudo)


def cross_validate(
    bundle: Bundle,
    labels_df: pd.DataFrame,
    label_set: tuple[str, ...],
    config: TrainConfig,
    predict_ids: list[str],
    store_predictions: Callable[[Iterator[pd.DataFrame]], ArtifactRef] | None = None,
) -> TrainResult:
    """k-fold CV per seed and fusion: out-of-fold probabilities, fold models, predictions.

    `store_predictions`: stores the prediction frames as they come (every fold model's blocks
    as its fit returns, then the means; `ArtifactStore.save_frames`) and returns the artifact's
    reference (`TrainResult.pool.stored`); only the running means are held meanwhile. None:
    every block is kept in `TrainResult.pool` (for `save_training` to store)."""
    data = fold_data(bundle, labels_df, label_set, config, predict_ids)
    jobs = fold_jobs(data.y, config, data.pseudo)
    keys = [{"fusion": job.fusion, "seed": str(job.seed), "fold": str(job.fold)} for job in jobs]
    heads = {h for fusion in config.fusions for h in FusionClassifier.output_heads(fusion, bundle.names)}
    pool = PoolPredictions(predict_ids, label_set, keys, heads, keep_folds=store_predictions is None)
    oof_parts: list[pd.DataFrame] = []
    models: list[dict] = []

    def fits() -> Iterator[tuple[dict, dict[str, np.ndarray]]]:
        for job, key, fitted in zip(jobs, keys, fit_folds(data, jobs, config.workers), strict=True):
            va_ids = [bundle.clip_ids[i] for i in data.train_rows[job.va]]
            oof_parts.extend(_rows(va_ids, fitted["oof"], label_set, fusion=job.fusion, seed=job.seed,
                                   fold=job.fold))
            models.append({"fusion": job.fusion, "seed": job.seed, "fold": job.fold, "bytes": fitted["bytes"],
                           "val_f1": fitted["val_f1"], "best_epoch": fitted["best_epoch"]})
            yield key, fitted.pop("pred")
            # Its blocks are in the means and the artifact: the heap their reading, log and
            # encoding freed goes back before the next fit's (at 100,000 candidates ~40 MB
            # stayed resident otherwise, beside the fits still running). No collection: the
            # workers share this process's pages (`release_memory`).
            trim_heap()

    collect_predictions(pool, fits(), store_predictions)
    oof = pd.concat(oof_parts, ignore_index=True)
    metrics = oof_metrics(oof, labels_df[~data.pseudo], label_set)
    return TrainResult(oof, pool, models, metrics)


def oof_metrics(oof: pd.DataFrame, labels_df: pd.DataFrame, label_set: tuple[str, ...]) -> dict:
    """Cross-validated metrics per fusion and head (seed-averaged out-of-fold probabilities)."""
    cols = [f"p_{lab}" for lab in label_set]
    truth = labels_df.set_index("clip_id")["label"]
    metrics: dict = {}
    for (fusion, head), group in oof.groupby(["fusion", "head"], sort=True):
        per_seed = [g.set_index("clip_id")[cols] for _, g in group.groupby("seed")]
        ids = per_seed[0].index[per_seed[0].notna().all(axis=1).to_numpy()].tolist()
        if not ids:
            continue
        p = mean_log([s.loc[ids].to_numpy() for s in per_seed])
        pred = [label_set[i] for i in p.argmax(1)]
        metrics.setdefault(fusion, {})[head] = evaluate(truth.loc[ids].tolist(), pred, label_set) | {
            "coverage": len(ids) / len(truth)
        }
    return metrics


def save_training(result: TrainResult, store: ArtifactStore, run_id: str, stage: str = "train"
                  ) -> dict[str, ArtifactRef | list]:
    """Store fold models, out-of-fold and candidate predictions (unless `cross_validate` stored
    them as they came); return their references."""
    model_refs = []
    for m in result.models:
        name = f"model-{m['fusion']}-s{m['seed']}-f{m['fold']}"
        model_refs.append(store.save_bytes(m["bytes"], run_id, stage, name, suffix=".pt"))
    predictions = result.pool.save(store, run_id, stage)
    # Stored: the per-fold rows are read back from the artifact if ever needed, not held.
    result.pool.release_folds()
    return {"models": model_refs, "oof": store.save(result.oof, run_id, stage, "oof"),
            "predictions": predictions}


def training_labels(registry: pd.DataFrame, extra: pd.DataFrame | None = None,
                    human_weights: dict[str, float] | None = None) -> pd.DataFrame:
    """clip_id, label, weight, pseudo: usable labelled `train` clips (weight 1, or
    `human_weights[clip_id]` for a down-weighted human label; pseudo False), plus `extra`
    (pseudo-labels with their weights; pseudo True)."""
    base = registry[
        (registry["split"] == "train") & registry["label"].notna() & registry["status"].isin(USABLE)
    ]
    labels = pd.DataFrame(
        {"clip_id": base["clip_id"].astype(str), "label": base["label"].astype(str), "weight": 1.0,
         "pseudo": False}
    )
    if human_weights:
        labels["weight"] = [float(human_weights.get(c, 1.0)) for c in labels["clip_id"]]
    if extra is not None and len(extra):
        extra = extra[~extra["clip_id"].isin(labels["clip_id"])]
        labels = pd.concat([labels, extra[["clip_id", "label", "weight"]].assign(pseudo=True)],
                           ignore_index=True)
    return labels.sort_values("clip_id").reset_index(drop=True)


def labelled_rows(registry: pd.DataFrame) -> pd.DataFrame:
    """The registry's `train` rows: all that `training_labels`, and so `train` given a
    `TrainingSet`, reads of it. A mining run keeps these through its rounds, not a row per
    candidate."""
    return registry[registry["split"] == "train"]


@dataclass
class TrainingSet:
    """What every training on one registry shares: the experts, the clips to predict (usable,
    not `train`) and the bundle of those and the labelled clips. A mining run builds it once
    (each round only adds labels of clips already in it) and lets the feature frames go."""

    specs: list[ExpertSpec]
    predict_ids: Sequence[str]         # an Arrow string array, in the registry's order
    bundle: Bundle


def training_set(registry: pd.DataFrame, features: dict[str, pd.DataFrame], config: TrainConfig,
                 extra_ids: set[str] | frozenset[str] = frozenset()) -> TrainingSet:
    """The bundle of the registry's usable `train` and to-predict clips (and `extra_ids`)."""
    specs = choose_experts(list(features), list(config.experts))
    # Arrow string arrays throughout, sorted as Python sorts str: no Python string per clip,
    # and no copy of the registry's rows held while the bundle is built.
    to_predict = registry["status"].isin(USABLE) & (registry["split"] != "train")
    predict_ids = registry.loc[to_predict, "clip_id"].astype("str").array
    ids = pd.concat([training_labels(registry)["clip_id"].astype("str"), pd.Series(predict_ids),
                     pd.Series(list(extra_ids), dtype="str")], ignore_index=True)
    ids = ids.drop_duplicates().sort_values(ignore_index=True).array
    return TrainingSet(specs, predict_ids, build_bundle(ids, features, specs))


def train(
    registry: pd.DataFrame,
    features: dict[str, pd.DataFrame] | TrainingSet,
    label_set: tuple[str, ...],
    config: TrainConfig,
    store: ArtifactStore,
    run_id: str,
    extra_labels: pd.DataFrame | None = None,
    stage: str = "train",
    human_weights: dict[str, float] | None = None,
) -> dict:
    """The whole stage as one plain function: bundle, cross-validation, artifacts, summary.

    `features`: the feature frames, or a `training_set` of them built earlier (every label's
    clip must be in its bundle). `stage` names the artifacts' folder (a mining run trains once
    per round: "round-1", ...); `human_weights` down-weights human labels that label refinement
    flagged."""
    labels_df = training_labels(registry, extra_labels, human_weights)
    counts = labels_df.loc[~labels_df["pseudo"], "label"].value_counts()
    if len(counts) < 2 or counts.min() < config.folds:
        raise ValueError(
            f"training needs at least {config.folds} human-labelled clips of each of two or more "
            f"labels for {config.folds}-fold CV; got {counts.to_dict()}"
        )
    if isinstance(features, TrainingSet):
        data = features
        outside = sorted(labels_df.loc[~isin(labels_df["clip_id"], data.bundle.clip_ids), "clip_id"].unique())
        if outside:
            raise ValueError(f"{len(outside)} labelled clip(s) are not in the training set built "
                             f"earlier (e.g. {outside[:3]}): build it with them")
    else:
        data = training_set(registry, features, config, set(labels_df["clip_id"]))
    specs, predict_ids = data.specs, data.predict_ids
    # Each fold model's pool rows go to the predictions artifact as its fit returns.
    result = cross_validate(data.bundle, labels_df, label_set, config, predict_ids,
                            lambda frames: store.save_frames(frames, run_id, stage, "predictions"))
    refs = save_training(result, store, run_id, stage)
    # The unpickled fits' freed heap goes back before the caller votes on the pool.
    release_memory()
    return {
        "result": result,
        "refs": refs,
        "experts": [asdict(s) for s in specs],
        "n_train": len(labels_df),
        "n_pseudo": int(labels_df["pseudo"].sum()),
        "n_predict": len(predict_ids),
        "config": json.loads(json.dumps(asdict(config))),
    }


train_task = task(train, name="train-baseline", cache_policy=NO_CACHE)
training_set_task = task(training_set, name="training-set", cache_policy=NO_CACHE)
