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
   cost), else the one that has had the fewest slices (a client's requests share its turns, so
   a small one finishes in a few and a large one is never starved by a stream of small ones).

A slice is sized to take about ``SLICE_SECONDS`` at the rate measured for its kind of work (a
model and an endpoint: an n-gram's positions and an LSTM's differ a thousandfold), so a small
request waits for about one slice, whoever else is busy. A client whose queued work would take
longer than ``max_queue_s`` at those rates is refused with 503 and ``Retry-After`` at once,
without waiting in line. A request whose client disconnects is dropped before its next slice.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
# A request's work: yields its estimated cost first (after validating), then the cost left after
# each slice; returns the response. Cost units: scored positions × output rows (``work_cost``).
Work = Generator[float, None, T]

INITIAL_RATE = 2e10  # cost units a second assumed for a kind of work before it is measured
SLICE_SECONDS = 0.015  # the time a slice aims at
DECAY = 0.9  # weight of the past in a kind's measured rate (sums of work and time)
log = logging.getLogger("nextword")


class ClientGone(Exception):  # noqa: N818 - named for what happened
    """The client disconnected before its answer was ready: the work was dropped."""


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
    kind: str = ""  # what kind of work (model and endpoint): its measured rate applies
    started: bool = False
    runs: int = 0  # slices run


@dataclass
class Client:
    vtime: float = 0.0  # compute seconds had, offset so newcomers start level (fair queueing)
    jobs: list[Job] = field(default_factory=list)


class FairScheduler:
    """The compute thread of one worker, and the fair queue in front of it."""

    def __init__(self, max_queue_s: float) -> None:
        self.max_queue_s = max_queue_s
        # per kind of work: decayed sums of the cost done and the seconds it took
        self.measured: dict[str, tuple[float, float]] = {}
        self.clients: dict[str, Client] = {}
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.seq = 0
        self.closed = False
        self.slices = 0  # slices run (for tests and metrics)

    # ------------------------------------------------------------ the event loop's side
    def rate(self, kind: str) -> float:
        """Cost units a second measured for ``kind`` (``INITIAL_RATE`` before any)."""
        work, seconds = self.measured.get(kind, (0.0, 0.0))
        return work / seconds if seconds > 1e-3 else INITIAL_RATE

    def slice_cost(self, kind: str) -> float:
        """The cost a slice of ``kind`` may have: about ``SLICE_SECONDS`` of compute."""
        return self.rate(kind) * SLICE_SECONDS

    async def run(
        self,
        client: str,
        work: Work[T],
        kind: str = "",
        disconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> T:
        """The result of ``work``, computed in turn; raises what the work raises, ``Busy``, or
        ``ClientGone`` when ``disconnected`` (awaited beside the work) returns first."""
        future: Future[T] = Future()
        with self.cond:
            self._start_thread()
            self.seq += 1
            job = Job(client, work, future, math.inf, self.seq, kind)
            entry = self.clients.get(client)
            if entry is None or not entry.jobs:  # (re)joining: level with the least time waiting
                waiting = [c.vtime for c in self.clients.values() if c.jobs]
                entry = self.clients.setdefault(client, Client())
                entry.vtime = max(entry.vtime, min(waiting, default=entry.vtime))
            # level with the client's least-served request: a stream of new small requests
            # takes turns with an old large one instead of always going first
            job.runs = min((j.runs for j in entry.jobs), default=0)
            entry.jobs.append(job)
            self.cond.notify()
        answer = asyncio.wrap_future(future)
        if disconnected is None:
            return await answer
        gone: asyncio.Future[Any] = asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait([answer, gone], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:  # the request itself cancelled: so is its work
            answer.cancel()
            raise
        finally:
            gone.cancel()
        if answer.done():
            return answer.result()
        answer.cancel()  # cancels the job's future: dropped before its next slice
        raise ClientGone

    def queued_seconds(self, client: str) -> float:
        """The estimated compute time of the client's queued work, at the measured rate."""
        with self.cond:
            entry = self.clients.get(client)
            jobs = entry.jobs if entry else []
            return sum(j.left / self.rate(j.kind) for j in jobs if math.isfinite(j.left))

    def admit(self, client: str) -> None:
        """Refuse at once (``Busy``) when the client's queued work is already over the limit."""
        queued = self.queued_seconds(client)
        if queued > self.max_queue_s:
            raise self._busy(queued)

    def _busy(self, seconds: float) -> Busy:
        """The refusal of a client whose queued work would take ``seconds``."""
        return Busy(
            f"busy: this client's queued work would take about {seconds:.0f} s (the limit is "
            f"{self.max_queue_s:g} s); send fewer or smaller requests at once, or retry",
            retry_after=max(1, math.ceil(seconds - self.max_queue_s)),
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
        # a job not yet started goes first (its first slice only validates and gives its
        # cost), then the one that has had the fewest slices: the client's requests take turns
        return min(client.jobs, key=lambda j: (j.started, j.runs, j.seq))

    def _loop(self) -> None:
        while True:
            try:
                if not self._step():
                    return
            except BaseException:  # the thread must outlive any one failure
                log.exception("the compute thread's bookkeeping failed; it goes on")

    def _step(self) -> bool:
        """Run one slice; False when the scheduler is closed and idle (the thread ends)."""
        with self.cond:
            job = self._next()
            while job is None and not self.closed:
                self.cond.wait()
                job = self._next()
            if job is None:  # closed, and nothing left: the next ``run`` starts anew
                self.thread = None
                return False
        before, started = job.left, time.perf_counter()
        done = self._slice(job)
        took = time.perf_counter() - started
        with self.cond:
            self.slices += 1
            job.runs += 1
            entry = self.clients.get(job.client)
            if entry is not None:
                entry.vtime += took
                if done and job in entry.jobs:
                    entry.jobs.remove(job)
                if not entry.jobs:  # idle: forgotten (a returning client starts level)
                    del self.clients[job.client]
            if math.isfinite(before):  # a computing slice (not the first): the rate
                work = before - (0.0 if done else job.left)
                if work > 0 and took > 0:
                    w, t = self.measured.get(job.kind, (0.0, 0.0))
                    self.measured[job.kind] = (DECAY * w + work, DECAY * t + took)
        return True

    def _slice(self, job: Job) -> bool:
        """Run one slice of ``job``; True when the job is finished (answered, failed or given up).

        A request given up (its future cancelled: its client disconnected, or the request was
        cancelled) is dropped before its next slice: no compute for an answer nobody reads.
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
        with self.cond:
            jobs = list(self.clients[job.client].jobs)
        ahead = sum(j.left / self.rate(j.kind) for j in jobs
                    if j is not job and math.isfinite(j.left))  # fmt: skip
        seconds = ahead + job.left / self.rate(job.kind)
        if seconds <= self.max_queue_s or ahead == 0:  # a lone request always gets its turn
            return False
        job.work.close()
        _settle(
            job.future,
            error=self._busy(seconds),
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
