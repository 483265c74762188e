"""One worker's compute, shared fairly: requests run as slices on one thread, clients take turns.

Why: a worker has one core (one BLAS thread). Run in a thread pool, 48 large requests from one
client shared that core with everything else, so another client's 8 ms request took 40 s; and
each held its whole working set at once, so a dozen of them filled a 2 GiB container. Here each
request is a *work* generator (``app.service``): it validates, yields its estimated cost, then
computes in slices of bounded size, yielding the cost still to do after each. One thread runs
one slice at a time, so only one slice's arrays are alive, and between two slices it picks:

1. the client (by peer address) that has had the least compute time lately (start-time fair
   queueing: a client that becomes active starts at the least time of those already waiting,
   so it gets no credit for having been idle);
2. within that client, a request not yet started (its first slice validates it and gives its
   cost), else the one with the least estimated work left (the shortest first).

A small request therefore waits for at most the slice in progress, whoever else is busy. A
client whose queued work would take longer than ``max_queue_s`` (at the throughput measured on
this worker) is refused with 503 and ``Retry-After`` at once, without waiting in line.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Generator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
# A request's work: yields its estimated cost first (after validating), then the cost left after
# each slice; returns the response. Cost units: scored positions × output rows (``work_cost``).
Work = Generator[float, None, T]

INITIAL_RATE = 2e9  # cost units a second assumed before any slice is measured (order: 1 core)


class Busy(Exception):  # noqa: N818 - the name the middleware and handlers speak of
    """The client's queued work is over the limit: 503 with ``retry_after`` seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.detail, self.retry_after = detail, retry_after


@dataclass
class Job:
    client: str
    work: Work[Any]
    future: Future[Any]
    left: float  # estimated cost still to do
    seq: int  # arrival order: ties go to the older
    started: bool = False


@dataclass
class Client:
    vtime: float = 0.0  # compute seconds had, offset so newcomers start level (fair queueing)
    jobs: list[Job] = field(default_factory=list)


class FairScheduler:
    """The compute thread of one worker, and the fair queue in front of it."""

    def __init__(self, max_queue_s: float) -> None:
        self.max_queue_s = max_queue_s
        self.rate = INITIAL_RATE  # cost units a second, a moving average of slices measured
        self.clients: dict[str, Client] = {}
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.seq = 0
        self.closed = False
        self.slices = 0  # slices run (for tests and metrics)

    # ------------------------------------------------------------ the event loop's side
    async def run(self, client: str, work: Work[T]) -> T:
        """The result of ``work``, computed in turn; raises what the work raises, or ``Busy``."""
        future: Future[T] = Future()
        with self.cond:
            self._start_thread()
            self.seq += 1
            job = Job(client, work, future, math.inf, self.seq)
            entry = self.clients.get(client)
            if entry is None or not entry.jobs:  # (re)joining: level with the least time waiting
                waiting = [c.vtime for c in self.clients.values() if c.jobs]
                entry = self.clients.setdefault(client, Client())
                entry.vtime = max(entry.vtime, min(waiting, default=entry.vtime))
            entry.jobs.append(job)
            self.cond.notify()
        return await asyncio.wrap_future(future)

    def queued_seconds(self, client: str) -> float:
        """The estimated compute time of the client's queued work, at the measured rate."""
        with self.cond:
            entry = self.clients.get(client)
            jobs = entry.jobs if entry else []
            return sum(j.left for j in jobs if math.isfinite(j.left)) / self.rate

    def admit(self, client: str) -> None:
        """Refuse at once (``Busy``) when the client's queued work is already over the limit."""
        queued = self.queued_seconds(client)
        if queued > self.max_queue_s:
            raise Busy(
                f"busy: this client's queued work would take about {queued:.0f} s (the limit is "
                f"{self.max_queue_s:g} s); send fewer or smaller requests at once, or retry",
                retry_after=max(1, math.ceil(queued - self.max_queue_s)),
            )

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    # ------------------------------------------------------------ the compute thread
    def _start_thread(self) -> None:
        """Start the compute thread (the lock held), again after a ``close`` (a new lifespan)."""
        if self.thread is None:
            self.closed = False
            self.thread = threading.Thread(target=self._loop, name="nextword-compute", daemon=True)
            self.thread.start()

    def _next(self) -> Job | None:
        """The job whose slice runs next (the lock held), or None when there is none."""
        for name, entry in list(self.clients.items()):  # requests given up: dropped unrun
            for gone in [j for j in entry.jobs if j.future.cancelled()]:
                gone.work.close()
                entry.jobs.remove(gone)
            if not entry.jobs:
                del self.clients[name]
        waiting = list(self.clients.values())
        if not waiting:
            return None
        client = min(waiting, key=lambda c: c.vtime)
        # a job not yet started goes first: its first slice only validates and gives its cost
        return min(client.jobs, key=lambda j: (j.left if j.started else -1.0, j.seq))

    def _loop(self) -> None:
        while True:
            with self.cond:
                job = self._next()
                while job is None and not self.closed:
                    self.cond.wait()
                    job = self._next()
                if job is None:  # closed, and nothing left: the next ``run`` starts anew
                    self.thread = None
                    return
            before, started = job.left, time.perf_counter()
            done = self._slice(job)
            took = time.perf_counter() - started
            with self.cond:
                self.slices += 1
                self.clients[job.client].vtime += took
                if done:
                    entry = self.clients[job.client]
                    entry.jobs.remove(job)
                    if not entry.jobs:  # idle: forgotten (a returning client starts level)
                        del self.clients[job.client]
                if math.isfinite(before):  # a computing slice (not the first): the rate
                    work = before - (0.0 if done else job.left)
                    if work > 0 and took > 0:
                        self.rate = 0.8 * self.rate + 0.2 * (work / took)

    def _slice(self, job: Job) -> bool:
        """Run one slice of ``job``; True when the job is finished (answered, failed or given up).

        A request whose client went away (its future cancelled: a disconnect, a timeout) is
        dropped before its next slice, so nobody's compute is spent on an answer nobody reads.
        """
        if job.future.cancelled():
            job.work.close()
            return True
        try:
            left = next(job.work)
        except StopIteration as stop:
            _settle(job.future, result=stop.value)
            return True
        except Exception as e:  # the work's own errors (a 4xx) go to the request
            _settle(job.future, error=e)
            return True
        if not job.started:  # the first yield: validated, and its whole estimated cost
            job.started, job.left = True, float(left)
            return self._over_limit(job)
        job.left = float(left)
        return False

    def _over_limit(self, job: Job) -> bool:
        """After the first slice: refuse a job that would put its client over the limit."""
        entry = self.clients[job.client]
        ahead = sum(j.left for j in entry.jobs if j is not job and math.isfinite(j.left))
        seconds = (ahead + job.left) / self.rate
        if seconds <= self.max_queue_s or ahead == 0:  # a lone request always gets its turn
            return False
        job.work.close()
        _settle(
            job.future,
            error=Busy(
                f"busy: this client's queued work would take about {seconds:.0f} s (the limit is "
                f"{self.max_queue_s:g} s); send fewer or smaller requests at once, or retry",
                retry_after=max(1, math.ceil(seconds - self.max_queue_s)),
            ),
        )
        return True


def _settle(future: Future[Any], *, result: Any = None, error: BaseException | None = None) -> None:
    """Answer a request unless it was given up meanwhile (a cancelled future takes no answer)."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass
