"""The left-to-right recurrent language model: next-word distributions, candidates, top-k,
sentence scores (conventions in ``model.inference.language_model``).

Requests are computed in batches: contexts share a prefix cache and run together when their
uncached suffixes have the same length, and every output row a call needs goes through one
output product (``NetworkLM.log_probs_at``).
"""

from __future__ import annotations

import copy
import math
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from model.inference.bias import Bias
from model.inference.evaluation import (
    isolated_cross_entropy,
    stream_cross_entropy,
    stream_token_log_probs,
)
from model.inference.history import split_context
from model.inference.language_model import (
    Call,
    CandidateScore,
    Evaluation,
    InputError,
    SentenceScore,
    Text,
)
from model.inference.network_lm import NetworkLM
from model.inference.neural_cache import (
    CacheSettings,
    Memory,
    PhraseMemory,
    cache_distribution,
    cache_pointer,
    mix_pointers,
    mixed_log_probs,
    phrase_distribution,
    phrase_pointer,
    word_codes,
)
from model.inference.prefix_cache import ID_BYTES, CachedPrefix, CacheObserver, PrefixCache, pack
from model.network.class_softmax import class_top_k
from model.network.layers import log_softmax
from model.network.recurrent import RNNLM, NetworkState, repeat_state
from model.text.batches import pad_ids, sentence_stream, target_mask
from model.text.tokenize import Tokenizer
from model.text.vocab import SPECIALS, Vocabulary

CONTINUATION_BATCH = 64  # multi-token candidates continued in one batch (bounds memory)
# history states kept apart from the prefix cache: a few kilobytes each, or with a neural
# cache's memory size × hidden × 4 bytes (500 × 200: 400 KB)
PINNED = 16
CODE_BYTES = 8  # a history's word codes are packed as int64 (negative: outside the vocabulary)


class StreamOutputs(NamedTuple):
    """A text read as one stream: per counted position, what the softmax read and predicted."""

    hidden: np.ndarray  # (n, H) float32
    log_probs: np.ndarray  # (n,) float64: log P_model of each target
    targets: np.ndarray  # (n,) int64


@dataclass
class Candidate:
    """One candidate of a ``score_candidates_batch`` call, and where its tokens are predicted."""

    request: int  # its request's index, which is also its context's output row
    tokens: list[str]
    ids: np.ndarray  # (n,)
    rows: list[int] = field(default_factory=list)  # the output row predicting each token


class OutputRows:
    """Top-layer outputs collected for one output product; each block gets the next row numbers."""

    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []
        self.count = 0

    def add(self, block: np.ndarray) -> range:
        """Append ``block`` (m, H); returns its row numbers."""
        self.blocks.append(block)
        self.count += len(block)
        return range(self.count - len(block), self.count)

    def stacked(self) -> np.ndarray:
        return np.concatenate(self.blocks)


class RecurrentLM(NetworkLM[RNNLM]):
    """A left-to-right RNN/LSTM/GRU model: every call but gap filling's exact method."""

    task = "next-word"
    calls = frozenset(Call)

    def __init__(
        self,
        net: RNNLM,
        vocab: Vocabulary,
        tokenizer: Tokenizer,
        metadata: dict[str, Any] | None = None,
        checksum: str | None = None,
    ) -> None:
        super().__init__(net, vocab, tokenizer, metadata, checksum)
        self.cache: PrefixCache | None = None  # states after recent context prefixes, when set
        # the states after the last few histories read (their last </s>), kept apart from the
        # prefix cache: a request's later slices and a client's next call start from there
        # even with the cache off or after it evicted them
        self._pins: OrderedDict[bytes, CachedPrefix] = OrderedDict()
        self._pins_lock = threading.Lock()
        # the states after recent histories with the cache's memory of them, keyed by the
        # histories' word codes (two histories differing only in words outside the
        # vocabulary read alike but remember different words)
        self._memories: OrderedDict[bytes, CachedPrefix] = OrderedDict()
        self._cache_settings: CacheSettings | None = None  # mixed into every score when set
        self._bias: Bias | None = None  # phrases expected, mixed into every score when set
        # the last few biases' phrases as read (keyed by phrases and boosts: weight and theta
        # do not change the reading)
        self._bias_memories: OrderedDict[tuple[object, ...], PhraseMemory] = OrderedDict()

    def caches_history(self) -> bool:
        return True

    def neural_cache(self) -> CacheSettings | None:
        return self._cache_settings

    def use_neural_cache(self, settings: CacheSettings | None) -> None:
        """Mix a neural cache over the text read so far (``model.inference.neural_cache``)
        into every score from now on; None: the model alone."""
        self._cache_settings = settings

    def with_cache(self, settings: CacheSettings | None) -> RecurrentLM:
        if settings == self._cache_settings:
            return self
        other = copy.copy(self)  # shares the network, caches, pins and step count
        other._cache_settings = settings
        return other

    def bias(self) -> Bias | None:
        return self._bias

    def with_bias(self, bias: Bias | None) -> RecurrentLM:
        if bias == self._bias:
            return self
        other = copy.copy(self)  # shares the network, caches, pins and step count
        other._bias = bias
        return other

    def _pointers_on(self) -> bool:
        """Whether a cache or a bias is mixed in (every call then goes through the mixture)."""
        return self._cache_settings is not None or self._bias is not None

    def _share_check(self) -> None:
        cache = 0.0 if self._cache_settings is None else self._cache_settings.weight
        bias = 0.0 if self._bias is None else self._bias.weight
        if cache + bias >= 1:
            raise InputError(
                "bias", None, f"weight {bias:g} and the cache's weight {cache:g} must add up to "
                "less than 1 (the model keeps the rest)",
            )  # fmt: skip

    def phrase_memory(self, bias: Bias) -> PhraseMemory:
        """Each phrase read alone from the start state: every word with the output before it
        (``model.inference.bias``); the last few kept, so a client's repeated bias is read
        once."""
        key = (bias.phrases, bias.boosts)
        with self._pins_lock:
            found = self._bias_memories.get(key)
            if found is not None:
                self._bias_memories.move_to_end(key)
                return found
        lists = [list(phrase) for phrase in bias.phrases]
        inputs, _, mask = pad_ids([self.vocab.encode(t) for t in lists], bos=True, eos_id=None,
                                  bos_id=self.vocab.bos_id)  # fmt: skip
        hidden, _, _ = self.net.forward(inputs, self.net.start_state(len(lists)), keep_cache=False)
        self._count_steps(int(mask.sum()))
        entries = bias.entries()
        keys = np.stack([hidden[k, i] for i, k, _ in entries]).astype(np.float32)
        codes = np.concatenate([word_codes(self.vocab, t) for t in lists])
        prior = np.array([lp for _, _, lp in entries])
        memory = PhraseMemory(keys, codes, prior)
        with self._pins_lock:
            self._bias_memories[key] = memory
            while len(self._bias_memories) > PINNED:
                self._bias_memories.popitem(last=False)
        return memory

    def unread_phrases(self) -> int:
        """Positions reading the bias's phrases would compute now (0 once they are kept)."""
        bias = self._bias
        if bias is None:
            return 0
        with self._pins_lock:
            if (bias.phrases, bias.boosts) in self._bias_memories:
                return 0
        return sum(len(phrase) + 1 for phrase in bias.phrases)

    def position_cost(self) -> float:
        """The network's, plus the pointers' dot products: a cache's window and the bias's
        remembered words, one H-dimensional product each."""
        window = 0 if self._cache_settings is None else self._cache_settings.size
        phrases = 0 if self._bias is None else sum(len(p) for p in self._bias.phrases)
        return super().position_cost() + float(self.net.config.hidden_size * (window + phrases))

    def use_prefix_cache(
        self, entries: int, max_bytes: int, observer: CacheObserver | None
    ) -> None:
        self.cache = PrefixCache(entries, max_bytes, observer)

    def cache_stats(self) -> dict[str, int] | None:
        return None if self.cache is None else self.cache.stats()

    def reads_history(self) -> bool:
        return True

    def unread_positions(self, tokens: Sequence[str]) -> int:
        """With a cache, a history is read by ``history_memory`` (its kept memories); else
        through the prefix cache and the pinned states."""
        ids = self._ids(tokens)
        if self._cache_settings is not None:
            start, _ = self._memory_base(self._codes(tokens).tobytes(), self._cache_settings.size)
            return len(ids) - start
        return len(ids) - self._cached_prefix(ids, count=False)[0]

    # ------------------------------------------------------------ next word
    def next_log_probs_from(self, hidden: np.ndarray) -> np.ndarray:
        """log P(next token) from top-layer outputs hidden (M, H): shape (M, V)."""
        if self.net.classes is not None:
            return self.net.output_log_probs(hidden)
        return log_softmax(self.output_rows(hidden))

    def context_state(self, context: Text) -> tuple[NetworkState, np.ndarray]:
        """Read ``<s> context`` and return the state after it and log P(next token), shape (V,)."""
        (read,) = self.read_contexts([self.tokenize(context)])
        return read.state, self.next_log_probs_from(read.hidden[None])[0]

    def next_log_probs(self, context: Text) -> np.ndarray:
        """log P(w | <s> context) for every vocabulary id, shape (V,); with a neural cache, the
        model's distribution mixed with the cache's over the text read so far."""
        if self._pointers_on():
            return self._mixed_next_log_probs(self.tokenize(context))
        return self.context_state(context)[1]

    def _mixed_next_log_probs(self, tokens: list[str]) -> np.ndarray:
        """The next-word distribution after ``tokens`` (a history's ``… </s> <s>`` then the
        sentence so far) mixed with the cache over every position read and the bias:
        (1 − λ − β) P + λ P_cache + β P_bias, summing to 1 over the vocabulary."""
        self._share_check()
        cache, bias = self._cache_settings, self._bias
        _, outputs, memory = self._read_sentence(tokens)
        log_p: np.ndarray = self.next_log_probs_from(outputs[-1:])[0].astype(np.float64)
        size, unk = len(self.vocab), self.vocab.unk_id
        share = 1.0
        parts: list[np.ndarray] = []
        if cache is not None:
            p_cache = cache_distribution(memory, outputs[-1], size, cache, unk)
            if p_cache is not None:
                share -= cache.weight
                parts.append(cache.weight * p_cache)
        if bias is not None:
            phrases = self.phrase_memory(bias)
            share -= bias.weight
            parts.append(bias.weight * phrase_distribution(
                phrases.keys, phrases.codes, phrases.log_prior, outputs[-1], size, bias.theta, unk
            ))  # fmt: skip
        if not parts:
            return log_p
        with np.errstate(divide="ignore"):
            mixed: np.ndarray = np.logaddexp(np.log(share) + log_p, np.log(np.sum(parts, axis=0)))
        return mixed

    def next_distribution(self, context: Text) -> np.ndarray:
        """P(w | <s> context) for every vocabulary id, shape (V,); sums to 1."""
        return np.exp(self.next_log_probs(context).astype(np.float64))

    def top_k(
        self, context: Text, k: int = 10, include_special: bool = False
    ) -> list[tuple[str, float]]:
        """The k most probable next tokens, most probable first. A class-factored output opens
        its classes from the most probable down and stops when no class left can hold a better
        word (``class_top_k``): the exact top k, without forming the whole distribution."""
        classes = self.net.classes
        if classes is None or self._pointers_on():  # from the whole distribution
            return super().top_k(context, k, include_special)
        (read,) = self.read_contexts([self.tokenize(context)])
        p = self.net.params
        excluded = [] if include_special else [self.vocab.id(t) for t in SPECIALS]
        ids, lps, _ = class_top_k(
            read.hidden, self.net.output_weight, p["output.b"],
            p["output.class.W"], p["output.class.b"], classes, k, excluded,
        )  # fmt: skip
        return [(self.vocab.tokens[i], float(lp)) for i, lp in zip(ids.tolist(), lps, strict=True)]

    def score_candidates_batch(
        self, requests: Sequence[tuple[Text, Sequence[Text]]]
    ) -> list[list[CandidateScore]]:
        """Contexts are read in batches (cached prefixes reused); row r of the outputs is request
        r's context, then come the continuations of multi-token candidates. One output product
        gives the normaliser of every row whose normaliser is not yet known; a cached context
        keeps its own, so competing words after one prefix (a beam search) cost a dot product
        each after the first call (a class-factored output: their own classes' rows)."""
        if self._pointers_on():
            return [self._cached_candidates(c, texts) for c, texts in requests]
        candidates = [
            Candidate(r, tokens, self.vocab.encode(tokens))
            for r, (_, texts) in enumerate(requests)
            for tokens in self.tokenize_all("candidates", texts)
        ]
        if not candidates:
            return [[] for _ in requests]
        contexts = self.read_contexts([self.tokenize(context) for context, _ in requests])
        outputs = OutputRows()
        first = outputs.add(np.stack([c.hidden for c in contexts]))
        for candidate in candidates:
            candidate.rows.append(first[candidate.request])
        self._continue(candidates, contexts, outputs)
        hidden = outputs.stacked()
        norms = np.full(len(hidden), np.nan)
        norms[: len(contexts)] = [np.nan if c.log_norm is None else c.log_norm for c in contexts]
        unknown = np.isnan(norms)
        norms[unknown] = self.log_normalisers(hidden[unknown])
        for context, norm in zip(contexts, norms[: len(contexts)].tolist(), strict=True):
            context.log_norm = norm  # kept in the cache with the state
        rows = np.array([row for c in candidates for row in c.rows], dtype=np.int64)
        tokens = np.concatenate([c.ids for c in candidates]).astype(np.int64)
        flat = self.log_probs_given_norms(hidden[rows], tokens, norms[rows]).tolist()
        scores: list[list[CandidateScore]] = [[] for _ in requests]
        start = 0
        for candidate in candidates:
            lps, start = flat[start : start + len(candidate.ids)], start + len(candidate.ids)
            oov = self.oov_indices(candidate.tokens)
            score = CandidateScore(candidate.tokens, math.fsum(lps), lps, bool(oov), oov)
            scores[candidate.request].append(score)
        return scores

    def _read_sentence(self, tokens: list[str]) -> tuple[NetworkState, np.ndarray, Memory]:
        """Read a context (a history's ``… </s> <s>`` then the sentence so far): the state
        after it, outputs whose last predicts what follows and, with a cache, the memory of
        every position read (the history's from ``history_memory``, then the sentence's own
        pairs). Without a cache only the last output is needed, and the prefix cache gives it
        (a beam search's contexts, one word longer each, cost a step each)."""
        cache = self._cache_settings
        memory = Memory.empty(self.net.config.hidden_size)
        if cache is None:  # only the last output is needed: the prefix cache serves it
            (read,) = self.read_contexts([tokens])
            return read.state, read.hidden[None], memory
        prefix, sentence = split_context(tokens)
        if prefix:
            read = self.history_memory(prefix, cache.size)
            state, memory = read.state, read.memory or memory
        else:
            state = self.net.start_state(1)
        ids = self._ids(sentence)
        hidden, final, _ = self.net.forward(ids[:, None], state, keep_cache=False)
        self._count_steps(len(ids))
        outputs = hidden[:, 0]
        memory = memory.extended(outputs[:-1], word_codes(self.vocab, sentence), cache.size)
        return final, outputs, memory

    def _cached_candidates(self, context: Text, texts: Sequence[Text]) -> list[CandidateScore]:
        """With a cache or a bias: the context is read once; each candidate runs on from its
        state, and its tokens are scored with the pointers over everything before them (the
        memory, then the candidate's own earlier tokens): their log P given all before them."""
        self._share_check()
        cache, bias = self._cache_settings, self._bias
        token_lists = self.tokenize_all("candidates", texts)
        state, outputs, memory = self._read_sentence(self.tokenize(context))
        phrases = None if bias is None else self.phrase_memory(bias)
        rows = [outputs[-1:] for _ in token_lists]  # the output before each first token
        longer = [k for k, t in enumerate(token_lists) if len(t) > 1]
        for start in range(0, len(longer), CONTINUATION_BATCH):
            chunk = longer[start : start + CONTINUATION_BATCH]
            # each candidate's tokens but the last as inputs (pad_ids: inputs, then targets)
            inputs, _, mask = pad_ids([self.vocab.encode(token_lists[k]) for k in chunk],
                                      bos=False, eos_id=None)  # fmt: skip
            hidden, _, _ = self.net.forward(inputs, repeat_state(state, len(chunk)),
                                            keep_cache=False)  # fmt: skip
            self._count_steps(int(mask.sum()))
            for m, k in enumerate(chunk):
                rows[k] = np.concatenate([rows[k], hidden[: len(token_lists[k]) - 1, m]])
        out = []
        for tokens, hidden_rows in zip(token_lists, rows, strict=True):
            ids = self.vocab.encode(tokens).astype(np.int64)
            model = np.asarray(self.log_probs_at(hidden_rows, np.arange(len(ids)), ids))
            codes = word_codes(self.vocab, tokens)
            pointers = []
            if cache is not None:
                pointers.append((cache_pointer(memory, hidden_rows, codes, cache.theta,
                                               cache.size), cache.weight))  # fmt: skip
            if phrases is not None and bias is not None:
                found = phrase_pointer(phrases.keys, phrases.codes, phrases.log_prior,
                                       hidden_rows, codes, bias.theta)  # fmt: skip
                pointers.append((found, bias.weight))
            mixed = mix_pointers(model, codes, pointers)
            lps = mixed.log_probs.tolist()
            oov = self.oov_indices(tokens)
            out.append(CandidateScore(tokens, math.fsum(lps), lps, bool(oov), oov,
                                      pointer_parts=mixed.parts or None))  # fmt: skip
        return out

    def _continue(
        self, candidates: list[Candidate], contexts: list[CachedPrefix], outputs: OutputRows
    ) -> None:
        """Run every multi-token candidate on from its context's state, in batches of similar
        lengths; the outputs after its tokens but the last predict its tokens but the first."""
        longer = sorted((c for c in candidates if len(c.ids) > 1), key=lambda c: len(c.ids))
        for start in range(0, len(longer), CONTINUATION_BATCH):
            chunk = longer[start : start + CONTINUATION_BATCH]  # bounds memory: rows × tokens
            inputs, _, mask = pad_ids([c.ids for c in chunk], bos=False, eos_id=None)
            state = concat_states([contexts[c.request].state for c in chunk])
            hidden, _, _ = self.net.forward(inputs, state, keep_cache=False)  # (T, M, H)
            self._count_steps(int(mask.sum()))
            rows = iter(outputs.add(hidden.transpose(1, 0, 2)[np.nonzero(mask.T)]))
            for c in chunk:  # candidate-major, like the rows
                c.rows.extend(next(rows) for _ in range(len(c.ids) - 1))

    def read_contexts(self, contexts: Sequence[list[str]]) -> list[CachedPrefix]:
        """The network state and top output after ``<s> context`` for each context.

        With a prefix cache, each context starts from its longest cached prefix; the uncached
        suffixes of equal length run as one batch (a beam search's requests all add one word).
        A context that holds earlier sentences (a ``history``: ``… </s> <s> context``) is read
        in two steps, so that the state at its last sentence boundary is cached too: the next
        call, whose history has grown by this sentence, starts from there.
        """
        return self._read_with_boundaries([self._ids(c) for c in contexts])

    def _ids(self, tokens: Sequence[str]) -> np.ndarray:
        """``<s> tokens`` as ids."""
        return np.concatenate([[self.vocab.bos_id], self.vocab.encode(tokens)]).astype(np.int64)

    def _codes(self, tokens: Sequence[str]) -> np.ndarray:
        """``<s> tokens`` as word codes (``neural_cache.word_codes``): what a memory is keyed by."""
        codes = np.concatenate([[self.vocab.bos_id], word_codes(self.vocab, tokens)])
        return codes.astype(np.int64)

    def _read_with_boundaries(self, id_lists: list[np.ndarray]) -> list[CachedPrefix]:
        """``read_contexts`` on ids: the state at each one's last sentence boundary first
        (read, cached and pinned), then the rest."""
        boundaries = {}
        for ids in id_lists:
            starts = np.flatnonzero(ids == self.vocab.bos_id)
            if len(starts) > 1:  # the state before the last <s> (after a </s>)
                boundaries[pack(ids[: starts[-1]])] = ids[: starts[-1]]
        if boundaries:
            read = self._read_ids(list(boundaries.values()))
            for key, entry in zip(boundaries, read, strict=True):
                self._pin(key, entry)
        return self._read_ids(id_lists)

    def history_memory(self, prefix: Sequence[str], size: int) -> CachedPrefix:
        """The state after ``<s> prefix`` (a history: it ends with ``</s>``) with the neural
        cache's memory of its positions (the last ``size``), read on from the longest pinned
        history that has one (a growing history reads its new sentence only), and pinned."""
        ids = self._ids(prefix)
        codes = self._codes(prefix)
        key = codes.tobytes()
        start, base = self._memory_base(key, size)
        if base is not None and start == len(ids):
            self._keep_memory(key, base)  # used again: the newest
            return base
        hidden_size = self.net.config.hidden_size
        rest = ids[start:]
        memory = Memory.empty(hidden_size) if base is None else base.memory
        assert memory is not None  # a base is chosen for its memory
        if base is None:  # from the start: the first input is <s>, after no output
            state, before = self.net.start_state(1), None
        else:  # the base's last output predicts the first token read here
            state, before = base.state, base.hidden[None]
        hidden, final, _ = self.net.forward(rest[:, None], state, keep_cache=False)
        self._count_steps(len(rest))
        hidden = hidden[:, 0]
        keys = hidden[:-1] if before is None else np.concatenate([before, hidden[:-1]])
        rest_codes = codes[start:]
        targets = rest_codes[1:] if before is None else rest_codes  # what each output predicts
        keep = targets != self.vocab.bos_id  # given, not predicted: never remembered
        memory = memory.extended(keys[keep], targets[keep], size)
        read = CachedPrefix([tuple(t.copy() for t in layer) for layer in final],
                            hidden[-1].copy(), memory=memory)  # fmt: skip
        self._keep_memory(key, read)
        return read

    def _memory_base(self, key: bytes, size: int) -> tuple[int, CachedPrefix | None]:
        """The longest kept history (its word codes packed) that ``key`` starts with and whose
        memory holds ``size`` positions, and its length; (0, None) if none."""
        with self._pins_lock:
            pins = list(self._memories.items())
        start, base = 0, None
        for pin, entry in pins:
            length = len(pin) // CODE_BYTES
            usable = entry.memory is not None and entry.memory.holds(size)
            if usable and length > start and key.startswith(pin):
                start, base = length, entry
        return start, base

    def _keep_memory(self, key: bytes, entry: CachedPrefix) -> None:
        """Keep a history's state and memory (word codes packed as ``key``)."""
        with self._pins_lock:
            self._memories[key] = entry
            self._memories.move_to_end(key)
            while len(self._memories) > PINNED:
                self._memories.popitem(last=False)

    def _pin(self, key: bytes, entry: CachedPrefix) -> None:
        """Keep the state after a history (ids packed as ``key``) among the pinned ones."""
        with self._pins_lock:
            self._pins[key] = entry
            self._pins.move_to_end(key)
            while len(self._pins) > PINNED:
                self._pins.popitem(last=False)

    def _read_ids(self, id_lists: list[np.ndarray]) -> list[CachedPrefix]:
        """``read_contexts`` on id sequences (``<s>`` first), each from its longest cached
        prefix; every state read is cached."""
        results: list[CachedPrefix | None] = [None] * len(id_lists)
        groups: dict[int, list[tuple[int, CachedPrefix | None, np.ndarray]]] = {}
        for r, ids in enumerate(id_lists):
            n, entry = self._cached_prefix(ids)
            if entry is not None and n == len(ids):
                results[r] = entry
            else:
                groups.setdefault(len(ids) - n, []).append((r, entry, ids[n:]))
        for length, items in groups.items():
            fresh = self.net.start_state(1)
            state = concat_states([entry.state if entry else fresh for _, entry, _ in items])
            inputs = np.stack([suffix for _, _, suffix in items], axis=1)  # (length, N)
            hidden, final, _ = self.net.forward(inputs, state, keep_cache=False)
            self._count_steps(length * len(items))
            for k, (r, _, _) in enumerate(items):
                row = [tuple(t[k : k + 1].copy() for t in layer) for layer in final]
                results[r] = read = CachedPrefix(row, hidden[-1, k].copy())
                if self.cache is not None:
                    self.cache.put(id_lists[r], read)
        done = [r for r in results if r is not None]
        assert len(done) == len(results)  # every context was found or read
        return done

    def _cached_prefix(
        self, ids: np.ndarray, count: bool = True
    ) -> tuple[int, CachedPrefix | None]:
        """The longest prefix of ``ids`` (``<s>`` first) whose state is known, and that state:
        from the prefix cache, which is probed at the lengths where states are kept (every
        length within the last sentence, and each earlier sentence boundary: a long history
        is not probed token by token; a state cached inside an earlier sentence is missed,
        which costs at most that sentence's reading), or from the pinned history states."""
        n, entry = 0, None
        if self.cache is not None and len(ids) > 1:
            starts = np.flatnonzero(ids == self.vocab.bos_id)
            last = int(starts[-1]) if len(starts) else 0
            probes = [*range(len(ids), last, -1), *starts[::-1].tolist()]
            n, entry = self.cache.longest(ids, count, probes=[k for k in probes if k > 1])
        if self._pins:
            key = pack(ids)
            with self._pins_lock:
                pins = list(self._pins.items())
            for pin, state in pins:
                length = len(pin) // ID_BYTES
                if length > n and key.startswith(pin):
                    n, entry = length, state
        if entry is None and self.cache is not None and self.cache.start is not None:
            return 1, self.cache.start  # after <s>: the same for every context, not a "hit"
        return n, entry

    # ------------------------------------------------------------ sentences
    def score_sentences(
        self,
        sentences: Sequence[Text],
        bos: bool = True,
        eos: bool = True,
        batch_size: int = 64,
        prefix: Sequence[str] = (),
    ) -> list[SentenceScore]:
        """Score whole sentences, computed in padded batches; equal to scoring each alone.

        Sentences are grouped by length (longest first) to keep padding small; results come back
        in request order. Each starts from the state after ``<s> prefix`` (read once, through
        the prefix cache), or with no prefix from the start state.
        """
        token_lists = [self.tokenize(s) for s in sentences]
        self.check_scorable(token_lists, bos, eos)
        self._share_check()
        cache, bias = self._cache_settings, self._bias
        phrases = None if bias is None else self.phrase_memory(bias)
        after, memory = None, Memory.empty(self.net.config.hidden_size)
        if prefix and cache is not None:  # the history's state and its positions' memory
            read = self.history_memory(prefix, cache.size)
            after, memory = read.state, read.memory or memory
        elif prefix:  # a history: its state is read once, and pinned for the next slice or call
            ids = self._ids(prefix)
            (read,) = self._read_with_boundaries([ids])
            self._pin(pack(ids), read)
            after = read.state
        seqs = [self.vocab.encode(tokens) for tokens in token_lists]
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        results: list[SentenceScore | None] = [None] * len(seqs)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs, targets, mask = pad_ids(
                [seqs[i] for i in batch],
                bos=bos,
                eos_id=self.vocab.eos_id if eos else None,
                bos_id=self.vocab.bos_id,
            )
            state = (
                self.net.start_state(len(batch))
                if after is None
                else repeat_state(after, len(batch))
            )
            hidden, _, _ = self.net.forward(inputs, state, keep_cache=False)
            rows = np.nonzero(mask.T)  # sentence-major
            flat = hidden.transpose(1, 0, 2)[rows]  # (M, H), sentence-major
            wanted = targets.T[rows]
            picked = self.log_probs_at(flat, np.arange(len(flat)), wanted)
            cuts = np.cumsum(mask.sum(axis=0))[:-1]
            parts = zip(np.split(picked, cuts), np.split(flat, cuts), np.split(wanted, cuts),
                        strict=True)  # fmt: skip
            for i, (lps, outputs, ids) in zip(batch, parts, strict=True):
                mixed = None
                if cache is not None or phrases is not None:
                    codes = self._target_codes(token_lists[i], ids, bos)
                    pointers = []
                    if cache is not None:  # each sentence's own positions join the memory
                        pointers.append((cache_pointer(memory, outputs, codes, cache.theta,
                                                       cache.size), cache.weight))  # fmt: skip
                    if phrases is not None and bias is not None:
                        pointers.append((phrase_pointer(phrases.keys, phrases.codes,
                                                        phrases.log_prior, outputs, codes,
                                                        bias.theta), bias.weight))  # fmt: skip
                    mixed = mix_pointers(lps, codes, pointers)
                    lps = mixed.log_probs
                score = self.sentence_score(token_lists[i], lps.tolist(), bos, eos)
                score.pointer_parts = None if mixed is None else (mixed.parts or None)
                results[i] = score
        return [r for r in results if r is not None]

    def _target_codes(self, tokens: list[str], ids: np.ndarray, bos: bool) -> np.ndarray:
        """The word codes of a sentence's targets (``ids``: their vocabulary ids, ``</s>``
        last when scored): words outside the vocabulary by their strings."""
        codes = ids.astype(np.int64).copy()
        words = tokens if bos else tokens[1:]
        codes[: len(words)] = word_codes(self.vocab, words)
        return codes

    def text_log_probs(self, sentences: list[list[str]], stream: bool = False) -> np.ndarray:
        """With a neural cache, each target's probability mixes the cache over the positions
        before it: in the stream, every earlier one within its size (as the service reads a
        sentence after its history); alone, its own sentence's (``score_sentences``)."""
        if not stream:
            return super().text_log_probs(sentences)
        cache = self._cache_settings
        if cache is not None:
            outputs = self.stream_outputs(sentences)
            empty = Memory.empty(self.net.config.hidden_size)
            return mixed_log_probs(empty, outputs.hidden, outputs.targets, outputs.log_probs,
                                   cache)  # fmt: skip
        ids = sentence_stream(sentences, self.vocab)
        return stream_token_log_probs(self.net, ids, self.vocab) if len(ids) else np.zeros(0)

    def stream_outputs(self, sentences: list[list[str]], window: int = 1024) -> StreamOutputs:
        """The text read as one stream from the start state, as the service reads a sentence
        after its history: at every position whose next token is counted (not ``<s>``), the
        top-layer output, that token and the model's log P of it. What a cache is fitted on."""
        ids = sentence_stream(sentences, self.vocab)
        state = self.net.start_state(1)
        hidden, log_probs, targets = [], [], []
        for a in range(0, max(len(ids) - 1, 0), window):
            inputs = ids[a : min(a + window, len(ids) - 1)]
            following = ids[a + 1 : a + 1 + len(inputs)]
            out, state, _ = self.net.forward(inputs[:, None], state, keep_cache=False)
            rows = np.flatnonzero(following != self.vocab.bos_id)
            picked = out[rows, 0]
            hidden.append(picked.astype(np.float32))
            log_probs.append(np.asarray(
                self.log_probs_at(picked, np.arange(len(rows)), following[rows]), np.float64
            ))  # fmt: skip
            targets.append(following[rows].astype(np.int64))
        if not hidden:
            size = self.net.config.hidden_size
            return StreamOutputs(np.zeros((0, size), np.float32), np.zeros(0), np.zeros(0, int))
        return StreamOutputs(np.concatenate(hidden), np.concatenate(log_probs),
                             np.concatenate(targets))  # fmt: skip

    def evaluate(self, sentences: list[list[str]], batch_size: int = 1) -> Evaluation:
        """The Penn Treebank convention: one stream ``<s> w_1 … w_n </s>`` per sentence with the
        state running on across sentences; every word and each ``</s>`` is scored. Beside it, the
        same tokens with each sentence read on its own, from the start state
        (``isolated_cross_entropy``).

        With ``batch_size`` 1 the stream is one sequence, as published figures are computed;
        larger batches are faster and cut it into columns.
        """
        stream = sentence_stream(sentences, self.vocab)
        oov = sum(token not in self.vocab for s in sentences for token in s)  # </s> never is
        counted = int(target_mask(stream[1:], self.vocab).sum())
        if self._cache_settings is not None:  # the cache reads the stream position by position
            mixed = self.text_log_probs(sentences, stream=True)
            alone = self.text_log_probs(sentences)
            n = max(len(mixed), 1)
            return Evaluation(self.task, len(mixed), -math.fsum(mixed) / n, oov / max(counted, 1),
                              -math.fsum(alone) / n)  # fmt: skip
        columns = max(1, min(batch_size, len(stream) // 2))
        steps = len(stream) // columns
        data = stream[: steps * columns].reshape(columns, steps).T  # (T_total, N), like batchify
        cross_entropy, tokens = stream_cross_entropy(self.net, data, self.vocab)
        isolated, _ = isolated_cross_entropy(self.net, [self.vocab.encode(s) for s in sentences],
                                             self.vocab)  # fmt: skip
        return Evaluation(self.task, tokens, cross_entropy, oov / max(counted, 1), isolated)


def concat_states(states: Sequence[NetworkState]) -> NetworkState:
    """Per-sequence states (batch 1 or more each) stacked into one batch, layer by layer."""
    return [
        tuple(np.concatenate(ts, axis=0) for ts in zip(*layers, strict=True))
        for layers in zip(*states, strict=True)
    ]
