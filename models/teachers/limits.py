"""Retries with backoff, a requests-per-minute limiter and the per-run budget.

All three take their clock and sleep as arguments so that tests run them in milliseconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
    Jitter"): attempt n waits uniform(0, min(max_delay, initial * 2**n)), so clients that were
    refused together do not come back together."""

    attempts: int = 5               # tries per request, the first included
    initial_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, retry: int, rng: random.Random) -> float:
        return rng.uniform(0, min(self.max_delay_s, self.initial_delay_s * 2 ** retry))


class RateLimiter:
    """At most `rpm` requests in any sliding 60 s window (None: no limit). Thread-safe."""

    def __init__(self, rpm: int | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, window_s: float = 60.0) -> None:
        self.rpm, self.clock, self.sleep, self.window_s = rpm, clock, sleep, window_s
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        if not self.rpm:
            return
        while True:
            with self._lock:
                now = self.clock()
                while self._sent and now - self._sent[0] >= self.window_s:
                    self._sent.popleft()
                if len(self._sent) < self.rpm:
                    self._sent.append(now)
                    return
                wait = self.window_s - (now - self._sent[0])
            self.sleep(max(wait, 0.001))


@dataclass
class Budget:
    """Requests and estimated cost one run may spend (None: unlimited). Thread-safe.

    A request is reserved before it is sent, at its estimated cost, and settled with the cost
    reported afterwards; a request whose estimate does not fit is not sent.
    """

    max_requests: int | None = None
    max_cost_usd: float | None = None
    requests: int = 0
    cost_usd: float = 0.0
    reserved_usd: float = 0.0
    exhausted: str | None = None            # why the budget ran out, once it did
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def reserve(self, estimate_usd: float) -> bool:
        with self._lock:
            if self.max_requests is not None and self.requests >= self.max_requests:
                self.exhausted = self.exhausted or f"request budget of {self.max_requests} spent"
                return False
            committed = self.cost_usd + self.reserved_usd + estimate_usd
            if self.max_cost_usd is not None and committed > self.max_cost_usd:
                self.exhausted = self.exhausted or (
                    f"cost budget of ${self.max_cost_usd:.4f} would be exceeded "
                    f"(spent ${self.cost_usd:.4f}, next request ~${estimate_usd:.4f})")
                return False
            self.requests += 1
            self.reserved_usd += estimate_usd
            return True

    def settle(self, estimate_usd: float, actual_usd: float | None) -> None:
        with self._lock:
            self.reserved_usd = max(0.0, self.reserved_usd - estimate_usd)
            self.cost_usd += actual_usd or 0.0
