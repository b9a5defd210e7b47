"""Putting a pool of clips to a teacher: cache first, then requests in priority order under a
concurrency limit, a requests-per-minute limiter, retries with backoff and a budget.

Every clip ends with one outcome: served from the cache, answered / unparseable / refused
(paid for, cached from then on), failed (no answer after the retries; asked again next run),
or not_asked (the budget ran out first). New answers are handed to `sink` in batches as they
arrive, so a crash loses at most one batch of paid answers.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from models.teachers.base import FAILED, LABEL, NOT_ASKED, Answer, Clip, Teacher, TeacherError
from models.teachers.limits import Budget, RateLimiter, RetryPolicy

log = logging.getLogger("mersemi.teacher")
IN_FLIGHT_PER_WORKER = 4              # requests submitted ahead per worker thread
# New answers handed to the sink at most this many at a time: the replay teacher answered
# ~8,500 clips a second here, and one catalog upsert of 30,000 answers took +145 MB at once.
FLUSH_MAX = 5_000


@dataclass(slots=True)
class Asked:
    """The outcome for one clip: its key, its answer (None when not asked), where it came from."""

    clip: Clip
    key: str
    answer: Answer | None
    from_cache: bool = False
    attempts: int = 0

    @property
    def outcome(self) -> str:
        return self.answer.status if self.answer is not None else NOT_ASKED


@dataclass
class RunReport:
    asked: list[Asked]
    requests: int
    cost_usd: float
    budget_exhausted: str | None
    counts: dict[str, int] = field(default_factory=dict)


def _ask_with_retries(teacher: Teacher, clip: Clip, question: str, budget: Budget,
                      limiter: RateLimiter, retry: RetryPolicy, rng: random.Random,
                      sleep: Callable[[float], None]) -> tuple[Answer | None, int]:
    """(answer, attempts); (None, 0) when the budget could not cover the first attempt."""
    estimate = teacher.estimate_cost(clip, question)
    last: TeacherError | None = None
    for attempt in range(retry.attempts):
        if not budget.reserve(estimate):
            if attempt == 0:
                return None, 0
            return Answer(FAILED, error=f"budget ran out before retry {attempt}: {last}"), attempt
        limiter.acquire()
        started = time.monotonic()
        try:
            answer = teacher.ask(clip, question)
        except TeacherError as exc:
            budget.settle(estimate, 0.0)
            last = exc
            if not exc.retryable or attempt + 1 == retry.attempts:
                return Answer(FAILED, error=str(exc), latency_s=time.monotonic() - started), attempt + 1
            delay = retry.delay(attempt, rng)
            log.warning("teacher request for %s failed (%s); retry %d in %.2f s",
                        clip.clip_id, exc, attempt + 1, delay)
            sleep(delay)
            continue
        except Exception as exc:      # a broken media file, say: this clip fails, the run goes on
            budget.settle(estimate, 0.0)
            return Answer(FAILED, error=f"{type(exc).__name__}: {exc}"), attempt + 1
        budget.settle(estimate, answer.cost_usd)
        if answer.latency_s is None:
            answer.latency_s = time.monotonic() - started
        return answer, attempt + 1
    raise AssertionError("unreachable")


def ask_pool(teacher: Teacher, clips: Sequence[Clip],
             cached: Mapping[str, Answer] | Callable[[list[str]], Mapping[str, Answer]],
             question: str = LABEL, budget: Budget | None = None, rpm: int | None = None,
             concurrency: int = 4, retry: RetryPolicy | None = None,
             sink: Callable[[list[Asked]], None] | None = None, flush_every: int = 50,
             flush_interval_s: float = 2.0, flush_max: int = FLUSH_MAX, seed: int = 0,
             sleep: Callable[[float], None] = time.sleep, limiter: RateLimiter | None = None,
             asked_before: dict[str, Answer] | None = None, warn: bool = True) -> RunReport:
    """Ask a fitted teacher about `clips` (in priority order); `cached`: answers by cache key,
    or a function that reads those of the clips' keys (one per clip) from the cache.

    New answers go to `sink` in batches of at least `flush_every`, at most one batch every
    `flush_interval_s` unless `flush_max` are waiting (and the rest at the end): a crash loses
    at most that many paid answers or that many seconds of them, a fast teacher (replay:
    thousands of answers a second) does not open the catalog for every 50, and no batch is
    larger than `flush_max`.

    A pool asked a chunk at a time (tasks/teacher.query_teacher) is one call per chunk with
    one `budget`, one `limiter` (made from `rpm` when not given) and one `asked_before`: the
    answers, by key, that earlier calls got and that the next chunk's `cached` will not hold
    (failed ones; every one when there is no sink to record them). A clip whose key is there
    takes that answer, as a clip that shares its key with one asked in this call does; this
    call adds its own such answers to it. `warn=False`: no warning here when the budget ran
    out (the caller of many chunks warns once)."""
    budget = budget or Budget()
    limiter = limiter or RateLimiter(rpm, sleep=sleep)
    retry = retry or RetryPolicy()
    rng, rng_lock = random.Random(seed), threading.Lock()
    requests_before, cost_before = budget.requests, budget.cost_usd     # a budget may be shared

    class LockedRandom:                 # random.Random is not documented as thread-safe
        def uniform(self, a: float, b: float) -> float:
            with rng_lock:
                return rng.uniform(a, b)

    keys = [teacher.key(clip, question) for clip in clips]
    if callable(cached):
        cached = cached(keys)
    asked: dict[str, Asked] = {}        # by clip id
    first_of_key: dict[str, Clip] = {}  # the one clip asked for each key in this run
    for clip, key in zip(clips, keys, strict=True):
        if key in cached:
            asked[clip.clip_id] = Asked(clip, key, cached[key], from_cache=True)
        elif asked_before and key in asked_before:     # asked in an earlier chunk of this run
            earlier = asked_before[key]
            asked[clip.clip_id] = Asked(clip, key, earlier, from_cache=earlier.status != FAILED)
        elif key in first_of_key:       # same media and prompt as another clip of the pool
            asked[clip.clip_id] = Asked(clip, key, None, from_cache=True)
        else:
            first_of_key[key] = clip

    pending: list[Asked] = []
    last_flush = [time.monotonic()]

    def flush() -> None:
        if sink and pending:
            sink(list(pending))
        pending.clear()
        last_flush[0] = time.monotonic()

    workers = max(1, concurrency)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="teacher") as pool:
        # A window of requests in flight, topped up as they finish, in priority order: a future
        # per clip of a 100,000-clip pool, all submitted at once, held ~1 KB each to the end.
        todo = enumerate(first_of_key.items())
        running: dict[Future, tuple[int, str, Clip]] = {}

        def top_up() -> None:
            for n, (key, clip) in itertools.islice(todo, IN_FLIGHT_PER_WORKER * workers - len(running)):
                running[pool.submit(_ask_with_retries, teacher, clip, question, budget, limiter, retry,
                                    LockedRandom(), sleep)] = (n, key, clip)

        try:
            top_up()
            while running:
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in sorted(done, key=lambda f: running[f][0]):
                    _, key, clip = running.pop(future)
                    answer, attempts = future.result()
                    asked[clip.clip_id] = Asked(clip, key, answer, attempts=attempts)
                    if answer is not None:
                        pending.append(asked[clip.clip_id])
                    due = time.monotonic() - last_flush[0] >= flush_interval_s
                    if len(pending) >= flush_max or (len(pending) >= flush_every and due):
                        flush()
                top_up()
        finally:
            for future in running:
                future.cancel()
            flush()
    # Clips that shared a key with an asked clip take its answer.
    by_key = {a.key: a.answer for a in asked.values() if not a.from_cache}
    for a in asked.values():
        if a.from_cache and a.answer is None:
            a.answer = by_key.get(a.key)
            a.from_cache = a.answer is not None and a.answer.status != FAILED
    if asked_before is not None:
        for a in asked.values():
            if not a.from_cache and a.answer is not None and (sink is None or a.answer.status == FAILED):
                asked_before[a.key] = a.answer
    ordered = [asked[c.clip_id] for c in clips]
    counts: dict[str, int] = {}
    for a in ordered:
        counts[a.outcome] = counts.get(a.outcome, 0) + 1
    if budget.exhausted and warn:
        log.warning("teacher budget exhausted (%s): %d clips not asked", budget.exhausted,
                    counts.get(NOT_ASKED, 0))
    return RunReport(ordered, budget.requests - requests_before, budget.cost_usd - cost_before,
                     budget.exhausted, counts)
