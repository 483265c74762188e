"""Inference API: next-word distributions, candidate scores, top-k, and batched sentence scores.

All log-probabilities are natural logs under the model's full softmax over its vocabulary.
Conventions, stated once here and relied on by the service:

- A *context* always starts at a sentence start: it is read as ``<s> context…``, so an empty
  context asks for the first word of a sentence.
- A multi-token candidate (``"new york"``) is scored by the chain rule:
  log P(new | ctx) + log P(york | ctx, new).
- Sentence scoring with ``bos=True`` reads ``<s>`` first and scores every token; with
  ``bos=False`` the first token is given as context and only the following tokens are scored.
  ``eos=True`` also scores ``</s>`` after the last token.
- Tokens outside the vocabulary are scored as ``<unk>`` and reported as OOV.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from model.inference.prefix_cache import CachedPrefix, PrefixCache
from model.network.layers import log_softmax
from model.network.recurrent import RNNLM, NetworkState
from model.text.tokenize import Tokenizer
from model.text.vocab import SPECIALS, Vocabulary

Text = str | Sequence[str]  # a string to tokenise, or tokens already split
OUTPUT_CHUNK_ROWS = 2048  # rows of (rows, V) logits computed at once, bounding memory
CONTINUATION_BATCH = 64  # multi-token candidates continued in one batch (bounds memory)
FEW_ROWS = 16  # up to this many output rows, W hᵀ beats h Wᵀ (see _output_rows)


@dataclass
class CandidateScore:
    tokens: list[str]  # the candidate's tokens
    log_prob: float  # log P(candidate | context), chain rule over its tokens
    token_log_probs: list[float]
    oov: bool  # any token outside the vocabulary (scored as <unk>)


@dataclass
class SentenceScore:
    tokens: list[str]  # the sentence's tokens, without <s> and </s>
    targets: list[str]  # the tokens that were scored, in order ("</s>" last when eos)
    token_log_probs: list[float]  # one per target
    log_prob: float  # sum of token_log_probs
    perplexity: float  # exp(-log_prob / len(targets))
    oov_positions: list[int] = field(default_factory=list)  # indices into tokens


class ModelKindError(ValueError):
    """A left-to-right call on a gap-filling model (or the reverse)."""


class LanguageModel:
    """A trained network with the vocabulary and tokenizer it was trained with."""

    def __init__(
        self,
        net: RNNLM,
        vocab: Vocabulary,
        tokenizer: Tokenizer,
        metadata: dict[str, Any] | None = None,
        checksum: str | None = None,
    ) -> None:
        if net.config.vocab_size != len(vocab):
            raise ValueError(
                f"network has {net.config.vocab_size} outputs, vocabulary {len(vocab)} tokens"
            )
        self.net, self.vocab, self.tokenizer = net, vocab, tokenizer
        self.metadata = dict(metadata or {})  # training metadata and metrics from the checkpoint
        self.checksum = checksum  # sha256 of the weights file it was loaded from
        self._special_ids = np.array([vocab.id(t) for t in SPECIALS])
        self.cache: PrefixCache | None = None  # states after recent context prefixes, when set
        self.steps_run = 0  # network time steps computed for contexts and candidates (for metrics)
        self._steps_lock = threading.Lock()  # requests run in several threads

    # ------------------------------------------------------------ helpers
    @property
    def bidirectional(self) -> bool:
        """A gap-filling model: it serves ``fill`` only."""
        return self.net.config.bidirectional

    def _require_left_to_right(self) -> None:
        if self.bidirectional:
            raise ModelKindError("this is a bidirectional gap-filling model: it serves fill() only")

    def tokenize(self, text: Text) -> list[str]:
        """A string goes through the model's tokenizer; a list of tokens is taken as it is."""
        return self.tokenizer(text) if isinstance(text, str) else [str(t) for t in text]

    def is_oov(self, token: str) -> bool:
        return token not in self.vocab

    def _output_rows(self, hidden: np.ndarray) -> np.ndarray:
        """Logits (m, V) of top-layer outputs hidden (m, H): ``h Wᵀ + b``.

        For a few rows (a single request) the product is taken as ``W hᵀ``: BLAS then streams W
        in its own row order, about twice as fast as ``h Wᵀ`` there (bench/RESULTS.md).
        """
        W = self.net.output_weight
        few = len(hidden) <= FEW_ROWS
        logits = np.ascontiguousarray((W @ hidden.T).T) if few else hidden @ W.T
        logits += self.net.params["output.b"]  # in place: no second (m, V) array
        return logits

    def _log_probs_at(self, hidden: np.ndarray, rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """log P(tokens[k]) under the distribution of output row rows[k] of hidden (M, H).

        One output product per chunk of rows, any number of tokens per row; only the normaliser
        and the wanted logits are formed, not every log-probability.
        """
        out = np.empty(len(tokens), dtype=np.float64)
        for start in range(0, len(hidden), OUTPUT_CHUNK_ROWS):
            logits = self._output_rows(hidden[start : start + OUTPUT_CHUNK_ROWS])  # (m, V)
            logits -= logits.max(axis=1, keepdims=True)  # each row's max is 0: exp cannot overflow
            mine = (rows >= start) & (rows < start + len(logits))
            local = rows[mine] - start
            wanted = logits[local, tokens[mine]]
            np.exp(logits, out=logits)
            log_norm = np.log(logits @ np.ones(logits.shape[1], dtype=logits.dtype))  # row sums
            out[mine] = wanted - log_norm[local]
        return out

    def next_log_probs_from(self, hidden: np.ndarray) -> np.ndarray:
        """log P(next token) from top-layer outputs hidden (M, H): shape (M, V)."""
        return log_softmax(self._output_rows(hidden))

    def context_state(self, context: Text) -> tuple[NetworkState, np.ndarray]:
        """Read ``<s> context`` and return the state after it and log P(next token), shape (V,)."""
        (read,) = self.read_contexts([self.tokenize(context)])
        return read.state, self.next_log_probs_from(read.hidden[None])[0]

    # ------------------------------------------------------------ next word
    def next_log_probs(self, context: Text) -> np.ndarray:
        """log P(w | <s> context) for every vocabulary id, shape (V,)."""
        return self.context_state(context)[1]

    def next_distribution(self, context: Text) -> np.ndarray:
        """P(w | <s> context) for every vocabulary id, shape (V,); sums to 1."""
        return np.exp(self.next_log_probs(context).astype(np.float64))

    def top_k(
        self, context: Text, k: int = 10, include_special: bool = False
    ) -> list[tuple[str, float]]:
        """The k most probable next tokens with their log-probabilities, most probable first."""
        lp = self.next_log_probs(context).astype(np.float64)
        if not include_special:
            lp[self._special_ids] = -np.inf
        k = max(0, min(k, int(np.isfinite(lp).sum())))
        best = np.argpartition(-lp, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
        best = best[np.argsort(-lp[best], kind="stable")]
        return [(self.vocab.tokens[i], float(lp[i])) for i in best]

    def score_candidates(self, context: Text, candidates: Sequence[Text]) -> list[CandidateScore]:
        """log P(candidate | <s> context) for each candidate in order; chain rule over its tokens.

        The context is read once; all multi-token candidates continue from its state in one batch.
        """
        return self.score_candidates_batch([(context, candidates)])[0]

    def score_candidates_batch(
        self, requests: Sequence[tuple[Text, Sequence[Text]]]
    ) -> list[list[CandidateScore]]:
        """``score_candidates`` for several (context, candidates) requests, computed together.

        Contexts are read in batches (cached prefixes reused), every first token's distribution
        comes from one output product, and every multi-token continuation runs in one batch.
        """
        token_lists = [[self.tokenize(c) for c in candidates] for _, candidates in requests]
        for r, lists in enumerate(token_lists):
            for i, tokens in enumerate(lists):
                if not tokens:
                    raise ValueError(f"candidate {i} ({requests[r][1][i]!r}) has no tokens")
        contexts = self.read_contexts([self.tokenize(context) for context, _ in requests])
        ids = [[self.vocab.encode(tokens) for tokens in lists] for lists in token_lists]
        # One output product serves everything: row r (a context's last output) predicts the first
        # token of each of its candidates; each continuation output predicts its next token.
        rows = [np.stack([c.hidden for c in contexts])]  # (R, H), then continuation rows
        row_of, token_of = [], []  # for each scored token: its output row and its id
        for r, seqs in enumerate(ids):
            for seq in seqs:
                row_of.append(r)
                token_of.append(seq[0])
        longer = [
            (r, i) for r, seqs in enumerate(ids) for i, seq in enumerate(seqs) if len(seq) > 1
        ]
        longer.sort(key=lambda ri: len(ids[ri[0]][ri[1]]))  # similar lengths share a batch
        next_row = len(contexts)
        continuation: dict[tuple[int, int], np.ndarray] = {}  # (r, i) → its rows
        for start in range(0, len(longer), CONTINUATION_BATCH):
            chunk = longer[start : start + CONTINUATION_BATCH]  # bounds memory: rows × tokens
            inputs, _, mask = _pad([ids[r][i] for r, i in chunk], bos=False, eos_id=None)
            state = concat_states([contexts[r].state for r, _ in chunk])
            hidden, _, _ = self.net.forward(inputs, state, keep_cache=False)  # (T, M, H)
            self._count_steps(int(mask.sum()))
            where = np.nonzero(mask.T)  # candidate-major, matching the walk below
            rows.append(hidden.transpose(1, 0, 2)[where])
            for (r, i), n in zip(chunk, mask.sum(axis=0), strict=True):
                continuation[(r, i)] = np.arange(next_row, next_row + n)
                next_row += n
        for (r, i), seq_rows in continuation.items():
            row_of.extend(seq_rows)
            token_of.extend(ids[r][i][1:])
        rows_at, tokens = np.array(row_of, dtype=np.int64), np.array(token_of, dtype=np.int64)
        picked = self._log_probs_at(np.concatenate(rows), rows_at, tokens)
        per_token: list[list[list[float]]] = []
        k = 0
        for seqs in ids:  # first tokens, in request order
            per_token.append([[float(picked[k + j])] for j in range(len(seqs))])
            k += len(seqs)
        for (r, i), seq_rows in continuation.items():  # then the continuations, in the same order
            per_token[r][i].extend(float(x) for x in picked[k : k + len(seq_rows)])
            k += len(seq_rows)
        return [
            [
                CandidateScore(tokens, math.fsum(lps), lps, any(map(self.is_oov, tokens)))
                for tokens, lps in zip(lists, per_tok, strict=True)
            ]
            for lists, per_tok in zip(token_lists, per_token, strict=True)
        ]

    def _count_steps(self, steps: int) -> None:
        with self._steps_lock:
            self.steps_run += steps

    def read_contexts(self, contexts: Sequence[list[str]]) -> list[CachedPrefix]:
        """The network state and top output after ``<s> context`` for each context.

        With a prefix cache, each context starts from its longest cached prefix; the uncached
        suffixes of equal length run as one batch (a beam search's requests all add one word).
        """
        self._require_left_to_right()
        id_lists = [
            np.concatenate([[self.vocab.bos_id], self.vocab.encode(c)]).astype(np.int64)
            for c in contexts
        ]
        results: list[CachedPrefix | None] = [None] * len(id_lists)
        groups: dict[int, list[tuple[int, CachedPrefix | None, np.ndarray]]] = {}
        for r, ids in enumerate(id_lists):
            n, entry = self._cached_prefix(ids)
            if entry is not None and n == len(ids):
                results[r] = entry
            else:
                groups.setdefault(len(ids) - n, []).append((r, entry, ids[n:]))
        for length, items in groups.items():
            zero = self.net.init_state(1)
            state = concat_states([entry.state if entry else zero for _, entry, _ in items])
            inputs = np.stack([suffix for _, _, suffix in items], axis=1)  # (length, N)
            hidden, final, _ = self.net.forward(inputs, state, keep_cache=False)
            self._count_steps(length * len(items))
            for k, (r, _, _) in enumerate(items):
                row = [tuple(t[k : k + 1].copy() for t in layer) for layer in final]
                results[r] = CachedPrefix(row, hidden[-1, k].copy())
                if self.cache is not None:
                    self.cache.put(id_lists[r], results[r])
        return results  # type: ignore[return-value]

    def _cached_prefix(self, ids: np.ndarray) -> tuple[int, CachedPrefix | None]:
        """The longest prefix of ``ids`` (``<s>`` first) whose state is known, and that state."""
        if self.cache is None:
            return 0, None
        n, entry = self.cache.longest(ids) if len(ids) > 1 else (0, None)
        if entry is None and self.cache.start is not None:
            return 1, self.cache.start  # after <s>: the same for every context, not a "hit"
        return n, entry

    # ------------------------------------------------------------ sentences
    def score_sentences(
        self, sentences: Sequence[Text], bos: bool = True, eos: bool = True, batch_size: int = 64
    ) -> list[SentenceScore]:
        """Score whole sentences, computed in padded batches; equal to scoring each alone.

        Sentences are grouped by length (longest first) to keep padding small; results come back
        in request order.
        """
        self._require_left_to_right()
        token_lists = [self.tokenize(s) for s in sentences]
        seqs = []
        for i, tokens in enumerate(token_lists):
            seq = self.vocab.encode(tokens)
            if len(seq) + int(bos) + int(eos) < 2:
                raise ValueError(f"sentence {i} has nothing to score (bos={bos}, eos={eos})")
            seqs.append(seq)
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
        results: list[SentenceScore | None] = [None] * len(seqs)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            inputs, targets, mask = _pad(
                [seqs[i] for i in batch],
                bos=bos,
                eos_id=self.vocab.eos_id if eos else None,
                bos_id=self.vocab.bos_id,
            )
            hidden, _, _ = self.net.forward(
                inputs, self.net.init_state(len(batch)), keep_cache=False
            )
            rows = np.nonzero(mask.T)  # sentence-major
            flat = hidden.transpose(1, 0, 2)[rows]  # (M, H), sentence-major
            picked = self._log_probs_at(flat, np.arange(len(flat)), targets.T[rows])
            lengths = mask.sum(axis=0)
            for i, lps in zip(batch, np.split(picked, np.cumsum(lengths)[:-1]), strict=True):
                results[i] = self._sentence_score(token_lists[i], lps.tolist(), bos, eos)
        return [r for r in results if r is not None]

    def self_check(self) -> None:
        """Finite parameters and one tiny forward pass (either kind of model): warms caches and
        proves that the model answers with numbers (an inf weight would answer null or nothing)."""
        for name, value in self.net.params.items():
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            if bad:
                raise FloatingPointError(f"parameter {name!r} has {bad} non-finite values")
        method, (score,) = self.fill([], [], [[self.vocab.tokens[-1]]])
        if not math.isfinite(score.log_prob):
            raise FloatingPointError(f"the model answers {score.log_prob} ({method})")

    # ------------------------------------------------------------ gaps
    def fill(
        self, left: Text, right: Text, candidates: Sequence[Text]
    ) -> tuple[str, list[CandidateScore]]:
        """Score candidates for the gap between ``left`` and ``right``; returns (method, scores).

        - ``bidirectional`` (a gap-filling model): a one-token candidate gets the exact
          log P(c | left, right); a longer one the sum over its tokens of log P(token | everything
          else), its pseudo-log-likelihood.
        - ``sentence`` (a left-to-right model): each candidate's score is the log-probability of
          the whole sentence ``<s> left candidate right </s>``; ``token_log_probs`` are that
          sentence's. Comparing candidates this way uses the right context too.
        """
        left_tokens, right_tokens = self.tokenize(left), self.tokenize(right)
        token_lists = [self.tokenize(c) for c in candidates]
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise ValueError(f"candidate {i} ({candidates[i]!r}) has no tokens")
        oov = [any(map(self.is_oov, tokens)) for tokens in token_lists]
        if self.bidirectional:
            encode = self.vocab.encode
            per_token = self.net.fill_scores(
                encode(left_tokens), encode(right_tokens), [encode(t) for t in token_lists]
            )
            scores = [
                CandidateScore(t, math.fsum(lps), lps.tolist(), o)
                for t, lps, o in zip(token_lists, per_token, oov, strict=True)
            ]
            return "bidirectional", scores
        sentences = self.score_sentences([left_tokens + t + right_tokens for t in token_lists])
        return "sentence", [
            CandidateScore(t, s.log_prob, s.token_log_probs, o)
            for t, s, o in zip(token_lists, sentences, oov, strict=True)
        ]

    def _sentence_score(
        self, tokens: list[str], lps: list[float], bos: bool, eos: bool
    ) -> SentenceScore:
        targets = (tokens if bos else tokens[1:]) + (["</s>"] if eos else [])
        total = math.fsum(lps)
        oov = [i for i, t in enumerate(tokens) if self.is_oov(t)]
        per_token = -total / len(lps)
        perplexity = math.exp(per_token) if per_token < 709 else math.inf  # no OverflowError
        return SentenceScore(tokens, targets, lps, total, perplexity, oov)


def concat_states(states: Sequence[NetworkState]) -> NetworkState:
    """Per-sequence states (batch 1 or more each) stacked into one batch, layer by layer."""
    return [
        tuple(np.concatenate(ts, axis=0) for ts in zip(*layers, strict=True))
        for layers in zip(*states, strict=True)
    ]


def _pad(
    seqs: Sequence[np.ndarray], bos: bool, eos_id: int | None, bos_id: int = 1
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Time-major (inputs, targets, mask), each (T, N), from id sequences of different lengths.

    Each sequence is framed as ``[<s>] ids [</s>]``; inputs are all but its last id, targets all
    but its first. Padding sits after the end of each sequence, so it never influences the
    positions before it (the network is causal), and the mask excludes it.
    """
    framed = [
        np.concatenate([[bos_id] if bos else [], s, [eos_id] if eos_id is not None else []]).astype(
            np.int64
        )
        for s in seqs
    ]
    T = max(len(f) for f in framed) - 1
    inputs = np.zeros((T, len(framed)), dtype=np.int64)
    targets = np.zeros((T, len(framed)), dtype=np.int64)
    mask = np.zeros((T, len(framed)), dtype=bool)
    for j, f in enumerate(framed):
        n = len(f) - 1
        inputs[:n, j], targets[:n, j], mask[:n, j] = f[:-1], f[1:], True
    return inputs, targets, mask
