from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

#: Seconds on a monotonic scale (``time.monotonic``); tests give a clock of their own.
Clock = Callable[[], float]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_in(seconds: float) -> str:
    """The moment ``seconds`` from now, as now_iso writes it."""
    moment = datetime.now(UTC) + timedelta(seconds=seconds)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_id() -> str:
    return str(uuid.uuid4())


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class ReadDeadline:
    """When a read that answers an API request stops starting requests (a results page: API
    Gateway answers 504 at 30 s, whatever the function is still doing). A reader asks
    :meth:`stops` before each request, or each wave of requests at once, that it could leave for
    the next page; ``stopped`` says whether one was left."""

    at: float
    clock: Clock = time.monotonic
    stopped: bool = field(default=False, init=False)
    #: The answer has moved its cursor on already: from now on no read is needed for that.
    moved_on: bool = field(default=False, init=False)

    @classmethod
    def after(cls, seconds: float, clock: Clock = time.monotonic) -> ReadDeadline:
        return cls(clock() + seconds, clock)

    def stops(self, first: bool = False) -> bool:
        """Whether to leave the next read for the next page: the deadline has passed (then
        remembered in ``stopped``), unless the read is one of the ``first`` the answer needs to
        move its cursor on and it has not moved on yet."""
        if first and not self.moved_on:
            return False
        if self.clock() >= self.at:
            self.stopped = True
        return self.stopped
