"""A bounded LRU cache of network states after context prefixes.

A decoder's beam search extends each hypothesis one word at a time, so consecutive requests share
all but their last word. With the state after ``<s> w_1 … w_k`` cached, a request for
``<s> w_1 … w_k w_{k+1}`` runs the network over one token instead of k + 1. The arithmetic is
the same either way; results agree to float32 rounding.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from model.network import NetworkState


@dataclass(frozen=True)
class CachedPrefix:
    state: NetworkState  # per layer, arrays of shape (1, H): the state after the prefix
    hidden: np.ndarray  # (H,) the top layer's output after the prefix's last token

    @property
    def nbytes(self) -> int:
        return self.hidden.nbytes + sum(t.nbytes for layer in self.state for t in layer)


class PrefixCache:
    """Id prefix → ``CachedPrefix``, least recently used evicted first; thread-safe.

    Bounded both by entries and by bytes. ``observer(hit, steps_saved)`` is called on each
    lookup, e.g. to count hits and misses in metrics.
    """

    def __init__(
        self,
        max_entries: int = 4096,
        max_bytes: int = 64 << 20,
        observer: Callable[[bool, int], None] | None = None,
    ) -> None:
        self.max_entries, self.max_bytes, self.observer = max_entries, max_bytes, observer
        self._entries: OrderedDict[tuple[int, ...], CachedPrefix] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def longest(self, ids: Sequence[int]) -> tuple[int, CachedPrefix | None]:
        """The longest cached prefix of ``ids``: (its length, entry), or (0, None)."""
        key = tuple(int(i) for i in ids)
        n, entry = len(key), None
        while n > 0 and entry is None:
            prefix = key[:n]  # sliced and hashed outside the lock
            with self._lock:
                entry = self._entries.get(prefix)
                if entry is not None:
                    self._entries.move_to_end(prefix)
            n -= entry is None
        with self._lock:
            if entry is not None:
                self.hits += 1
            else:
                self.misses += 1
        if self.observer is not None:
            self.observer(entry is not None, n)
        return n, entry

    def put(self, ids: Sequence[int], entry: CachedPrefix) -> None:
        key = tuple(int(i) for i in ids)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._entries[key] = entry
            self.bytes += entry.nbytes
            while self._entries and (
                len(self._entries) > self.max_entries or self.bytes > self.max_bytes
            ):
                _, evicted = self._entries.popitem(last=False)
                self.bytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.bytes = 0
