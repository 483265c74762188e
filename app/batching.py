"""Cross-request batching for /v1/candidates: requests that arrive together are computed together.

With a window of w milliseconds, the first request waits up to w for others (up to ``max_batch``),
then one thread scores them all with ``LanguageModel.score_candidates_batch``: the contexts'
new tokens run as one batch through the network and the output layer is one matrix product.
Under concurrent load (a beam search sends its hypotheses at once) this trades up to w of latency
for throughput; with the window at 0 (the default) every request is scored on its own, at once.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future

from model.inference.language_model import CandidateScore, LanguageModel

Request = tuple[list[str], list[list[str]]]
Job = tuple[Request, Future[list[CandidateScore]]]  # a request and where its answer goes


class CandidateBatcher:
    """One per model; ``submit`` runs in FastAPI's worker threads and blocks for the answer."""

    def __init__(
        self, lm: LanguageModel, window_ms: float, max_batch: int = 64, timeout_s: float = 120
    ) -> None:
        self.lm, self.window, self.max_batch, self.timeout = (
            lm,
            window_ms / 1000,
            max_batch,
            timeout_s,
        )
        self._queue: queue.Queue[Job | None] = queue.Queue()  # None: the thread is to finish
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches = 0  # how many batches ran, and how many requests they held (for tests)
        self.requests = 0

    def submit(self, context: list[str], candidates: list[list[str]]) -> list[CandidateScore]:
        future: Future[list[CandidateScore]] = Future()
        with self._lock:
            batching = self.window > 0 and not self._closed  # closed: its model was replaced
            if batching:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="nextword-batcher", daemon=True
                    )
                    self._thread.start()
                self._queue.put(((context, candidates), future))
        if not batching:  # a request that picked up the old model finishes on it, alone
            return self.lm.score_candidates(context, candidates)
        return future.result(timeout=self.timeout)

    def close(self) -> None:
        """Stop the batching thread after the requests already queued (a reload replaced us)."""
        with self._lock:
            self._closed = True
            if self._thread is not None:
                self._queue.put(None)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            deadline = time.monotonic() + self.window
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._score(batch)

    def _score(self, batch: list[Job]) -> None:
        """Answer every request of the batch; if the batch fails, each request is tried alone."""
        self.batches += 1
        self.requests += len(batch)
        try:
            results = self.lm.score_candidates_batch([request for request, _ in batch])
        except Exception:
            for (context, candidates), future in batch:
                try:
                    future.set_result(self.lm.score_candidates(context, candidates))
                except Exception as e:
                    future.set_exception(e)
            return
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)
