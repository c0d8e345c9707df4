"""A circuit breaker: stop calling a backend that keeps failing, and probe it now and then.

Closed: every request goes through; ``failures`` consecutive failures open the circuit. Open:
requests are refused at once, without touching the backend, for ``reset_s`` seconds. Half-open:
one probe request goes through (others are still refused); its success closes the circuit, its
failure opens it again for another ``reset_s``. Pure and clock-injectable, so it is tested
without any backend.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

State = Literal["closed", "open", "half_open"]


@dataclass
class CircuitBreaker:
    """Per-backend failure accounting; ``allow()`` before a request, ``record_*`` after it."""

    failures: int = 3
    reset_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    consecutive_failures: int = 0
    opened_at: float | None = None
    probing: bool = False
    times_opened: int = field(default=0)

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.reset_s:
            return "half_open"
        return "open"

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 when it would now)."""
        if self.opened_at is None:
            return 0.0
        return max(0.0, self.reset_s - (self.clock() - self.opened_at))

    def allow(self) -> bool:
        """Whether a request may go to the backend now; in half-open, claims the one probe."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self.probing:
            self.probing = True
            return True
        return False

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self.opened_at = None
        self.probing = False

    def record_failure(self) -> None:
        self.consecutive_failures += 1
        if self.probing or self.consecutive_failures >= self.failures:
            if self.opened_at is None or self.probing:
                self.times_opened += 1
            self.opened_at = self.clock()
        self.probing = False

    def release_probe(self) -> None:
        """Give the probe back unused (the request was cancelled before it said anything)."""
        self.probing = False

    def snapshot(self) -> dict:
        """The state as plain data, for /ready, admin status and metrics."""
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "failure_threshold": self.failures,
            "times_opened": self.times_opened,
            "retry_in_s": round(self.retry_in(), 2),
        }
