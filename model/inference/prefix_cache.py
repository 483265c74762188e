"""A bounded LRU cache of network states after context prefixes.

A decoder's beam search extends each hypothesis one word at a time, so consecutive requests share
all but their last word. With the state after ``<s> w_1 … w_k`` cached, a request for
``<s> w_1 … w_k w_{k+1}`` runs the network over one token instead of k + 1. The arithmetic is
the same either way; results agree to float32 rounding.

An entry also keeps the log-normaliser of the distribution after its prefix once a call has
computed it (``log_norm``): competing words after one prefix, the common case in a beam search,
then cost a dot product each instead of the full output layer (a class-factored output: each
its own class's rows, the class softmax's normaliser being the one kept).

The state after ``<s>`` alone is the same for every request: it is kept apart (``start``), never
evicted, and a lookup that finds nothing longer counts as a miss, so the hit rate measures work
that was really reused. Keys are the ids packed as int32 bytes, and the byte bound counts the
keys and every Python object an entry holds, so ``max_bytes`` bounds the memory the cache takes.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model.inference.neural_cache import Memory
from model.network.recurrent import NetworkState

ID_BYTES = 4  # ids are packed as int32: a 256-token key is 1 KB, not a 10 KB tuple of ints
# what an entry costs besides its key and arrays: the CachedPrefix, its list and tuples, the
# OrderedDict's link and slot (measured with tracemalloc in tests/model/test_prefix_cache.py)
ENTRY_OVERHEAD = 400
CacheObserver = Callable[[bool, int], None]  # (hit, network steps saved), on each lookup


@dataclass(slots=True)
class CachedPrefix:
    state: NetworkState  # per layer, arrays of shape (1, H): the state after the prefix
    hidden: np.ndarray  # (H,) the top layer's output after the prefix's last token
    # log Σ_j exp(logit_j) of the next-token distribution (of a class-factored output, its
    # class softmax's: ``NetworkLM.log_normalisers``), once computed: set at most once,
    # always to the same value, so sharing an entry between threads needs no lock
    log_norm: float | None = None
    # the neural cache's memory of the prefix's positions (``RecurrentLM.history_memory``), on
    # the pinned states after a history only
    memory: Memory | None = None

    @property
    def nbytes(self) -> int:
        """Memory held by this entry's arrays (headers included), beside its key."""
        arrays = [self.hidden, *(t for layer in self.state for t in layer)]
        return sum(sys.getsizeof(a) if a.base is None else a.nbytes + 112 for a in arrays)


def pack(ids: Sequence[int] | np.ndarray) -> bytes:
    return np.asarray(ids, dtype=np.int32).tobytes()


class PrefixCache:
    """Id prefix → ``CachedPrefix``, least recently used evicted first; thread-safe.

    Bounded both by entries and by bytes (keys, arrays and per-entry objects). ``observer(hit,
    steps_saved)`` is called on each lookup, e.g. to count hits and misses in metrics.
    """

    def __init__(
        self,
        max_entries: int = 4096,
        max_bytes: int = 64 << 20,
        observer: CacheObserver | None = None,
    ) -> None:
        self.max_entries, self.max_bytes, self.observer = max_entries, max_bytes, observer
        self._entries: OrderedDict[bytes, tuple[CachedPrefix, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.start: CachedPrefix | None = None  # the state after <s>: shared by every context
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def stats(self) -> dict[str, int]:
        """Entries, bytes, hits and misses: what /v1/models reports."""
        return {"entries": len(self), "bytes": self.bytes, "hits": self.hits, "misses": self.misses}

    def longest(
        self,
        ids: Sequence[int] | np.ndarray,
        count: bool = True,
        probes: Sequence[int] | None = None,
    ) -> tuple[int, CachedPrefix | None]:
        """The longest cached prefix of ``ids`` (two ids or more): (its length, entry) or (0, None).

        Only prefixes of at least ``<s>`` and one word are stored, so a hit is reused work.
        ``probes``: the prefix lengths to look at, longest first (default: every length; a
        caller that knows where states are kept saves the rest). ``count=False`` looks without
        counting a hit or miss (an estimate of the work to come).
        """
        key = pack(ids)
        n, entry = 0, None
        for length in range(len(key) // ID_BYTES, 1, -1) if probes is None else probes:
            prefix = key[: length * ID_BYTES]  # sliced and hashed outside the lock
            with self._lock:
                found = self._entries.get(prefix)
                if found is not None:
                    self._entries.move_to_end(prefix)
                    n, entry = length, found[0]
            if entry is not None:
                break
        if not count:
            return n, entry
        with self._lock:
            if entry is not None:
                self.hits += 1
            else:
                self.misses += 1
        if self.observer is not None:
            self.observer(entry is not None, n)
        return n, entry

    def put(self, ids: Sequence[int] | np.ndarray, entry: CachedPrefix) -> None:
        """Keep the state after ``ids``; the state after ``<s>`` alone goes to ``start``."""
        key = pack(ids)
        if len(key) <= ID_BYTES:
            self.start = entry
            return
        size = sys.getsizeof(key) + entry.nbytes + ENTRY_OVERHEAD
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
            self._entries[key] = (entry, size)
            self.bytes += size
            while self._entries and (
                len(self._entries) > self.max_entries or self.bytes > self.max_bytes
            ):
                _, (_, evicted) = self._entries.popitem(last=False)
                self.bytes -= evicted

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.start = None
            self.bytes = 0
