"""A back-off n-gram model (Kneser-Ney estimated, or read from an ARPA file) as a servable kind.

Every call is answered from the tables with vectorised lookups (``kneser_ney.log10_probs``):
each scored token is one row, its history the previous N−1 tokens (``<s>`` included, nothing
before it). Probabilities are normalised over the vocabulary, so scores compare with the RNN's;
they are natural logs like every other kind's (the tables hold log10, as ARPA does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from model.inference.language_model import (
    Call,
    CandidateScore,
    Evaluation,
    LanguageModel,
    SentenceScore,
    Text,
)
from model.ngram.checks import check_model
from model.ngram.kneser_ney import Order, as_keys, log10_distribution, log10_probs
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

LN10 = math.log(10.0)


class NgramLM(LanguageModel):
    """Left to right, from the last N−1 tokens: every call, the state being the history itself."""

    task = "next-word"
    calls = frozenset(Call)

    def __init__(
        self,
        tables: list[Order],
        vocab: Vocabulary,
        tokenizer: Tokenizer,
        metadata: dict[str, Any] | None = None,
        checksum: str | None = None,
    ) -> None:
        super().__init__(vocab, tokenizer, metadata, checksum)
        check_model(tables, len(vocab))  # the same checks for estimated, imported and loaded
        self.tables = tables
        self.order = len(tables)

    # ------------------------------------------------------------ what it is
    def architecture(self) -> dict[str, Any]:
        return {"kind": "ngram", "order": self.order, "vocab_size": len(self.vocab)}

    def num_parameters(self) -> int:
        return sum(2 * len(t.keys) for t in self.tables)

    def check_parameters(self) -> None:
        for t in self.tables:
            if not (np.isfinite(t.log10_prob).all() and np.isfinite(t.log10_backoff).all()):
                raise FloatingPointError(f"the {t.order}-gram table holds non-finite values")

    def tensors(self) -> dict[str, np.ndarray]:
        """The tables as named arrays (what a checkpoint stores)."""
        out = {}
        for t in self.tables:
            out[f"{t.order}.ids"] = t.ids().astype(np.int32)
            out[f"{t.order}.log10_prob"] = t.log10_prob.astype(np.float32)
            out[f"{t.order}.log10_backoff"] = t.log10_backoff.astype(np.float32)
        return out

    @classmethod
    def tables_from(cls, tensors: dict[str, np.ndarray], order: int) -> list[Order]:
        """The inverse of ``tensors``, checked: shapes and lengths (the rest is ``check_model``'s,
        which the constructor runs)."""
        tables = []
        for k in range(1, order + 1):
            ids = tensors[f"{k}.ids"]
            if ids.ndim != 2 or ids.shape[1] != k:
                raise ValueError(f"tensor '{k}.ids' has shape {ids.shape}, expected (n, {k})")
            keys = as_keys(ids)
            prob = tensors[f"{k}.log10_prob"].astype(np.float64)
            backoff = tensors[f"{k}.log10_backoff"].astype(np.float64)
            if prob.shape != (len(keys),) or backoff.shape != (len(keys),):
                raise ValueError(f"the {k}-gram tensors differ in length")
            by_key = np.argsort(keys, kind="stable")  # as written already, unless edited
            keys, prob, backoff = keys[by_key], prob[by_key], backoff[by_key]
            tables.append(Order(keys, prob, backoff))
        return tables

    # ------------------------------------------------------------ lookups
    def _log_probs(self, sequences: Sequence[np.ndarray], first: Sequence[int]) -> list[np.ndarray]:
        """Natural-log probabilities of ``seq[first:]`` of each id sequence (``<s>`` first)."""
        h = self.order - 1
        rows, words = [], []
        for seq, start in zip(sequences, first, strict=True):
            padded = np.concatenate([np.full(h, -1), seq]).astype(np.int64)
            positions = np.arange(start, len(seq))
            if h:
                rows.append(padded[positions[:, None] + np.arange(h)])
            words.append(seq[positions])
        contexts = np.concatenate(rows) if h else np.zeros((sum(map(len, words)), 0), np.int64)
        flat = log10_probs(self.tables, contexts, np.concatenate(words)) * LN10
        return np.split(flat, np.cumsum([len(w) for w in words])[:-1])

    def _ids(self, tokens: Sequence[str]) -> np.ndarray:
        return np.concatenate([[self.vocab.bos_id], self.vocab.encode(tokens)]).astype(np.int64)

    def _context_ids(self, context: Text) -> np.ndarray:
        """``<s> context`` from its last ``<s>``: a context holding the sentences before its own
        (``history``) starts at its own sentence's ``<s>``, as the tables were estimated (KenLM's
        begin-of-sentence state)."""
        ids = self._ids(self.tokenize(context))
        return ids[int(np.flatnonzero(ids == self.vocab.bos_id)[-1]) :]

    # ------------------------------------------------------------ the calls
    def score_sentences(
        self,
        sentences: Sequence[Text],
        bos: bool = True,
        eos: bool = True,
        batch_size: int = 64,
        prefix: Sequence[str] = (),
    ) -> list[SentenceScore]:
        """Each sentence from its ``<s>``: nothing before it is in an n-gram's context, so
        ``prefix`` changes nothing."""
        token_lists = [self.tokenize(s) for s in sentences]
        self.check_scorable(token_lists, bos, eos)
        # without bos the first token is the given context, read without <s> (as the RNN does)
        seqs = [
            np.concatenate(
                [self._ids(t) if bos else self.vocab.encode(t), [self.vocab.eos_id] if eos else []]
            ).astype(np.int64)
            for t in token_lists
        ]
        per = self._log_probs(seqs, [1] * len(seqs))
        return [
            self.sentence_score(t, lps.tolist(), bos, eos)
            for t, lps in zip(token_lists, per, strict=True)
        ]

    def score_candidates_batch(
        self, requests: Sequence[tuple[Text, Sequence[Text]]]
    ) -> list[list[CandidateScore]]:
        """Every candidate token of every request is one row of a single ``log10_probs`` call;
        the rows are built in Python (a query holds a handful, where NumPy's per-call cost
        would dominate)."""
        h, encode = self.order - 1, self.vocab.encode
        contexts: list[list[int]] = []
        words: list[int] = []
        owners: list[tuple[int, list[str], int]] = []  # request, tokens, number of rows
        for r, (context, texts) in enumerate(requests):
            history = ([-1] * h + self._context_ids(context).tolist())[-h:] if h else []
            for tokens in self.tokenize_all("candidates", texts):
                ids = encode(tokens).tolist()
                window = history + ids
                contexts.extend(window[j : j + h] for j in range(len(ids)))
                words.extend(ids)
                owners.append((r, tokens, len(ids)))
        scores: list[list[CandidateScore]] = [[] for _ in requests]
        if not owners:
            return scores
        rows = np.array(contexts, dtype=np.int64).reshape(len(words), h)
        flat = (log10_probs(self.tables, rows, np.array(words, dtype=np.int64)) * LN10).tolist()
        at = 0
        for r, tokens, n in owners:
            values = flat[at : at + n]
            at += n
            oov = self.oov_indices(tokens)
            scores[r].append(CandidateScore(tokens, math.fsum(values), values, bool(oov), oov))
        return scores

    def next_log_probs(self, context: Text) -> np.ndarray:
        """log P(w | <s> context) for every vocabulary id, shape (V,); <s> gets -inf. From the
        back-off structure (``log10_distribution``): the unigram row plus the few n-grams that
        extend the history, not V lookups."""
        h = self.order - 1
        history = self._context_ids(context)  # <s> context
        lp = log10_distribution(
            self.tables, history[max(len(history) - h, 0) :] if h else history[:0]
        )
        lp *= LN10
        lp[self.vocab.bos_id] = -np.inf
        return lp

    def evaluate(self, sentences: list[list[str]], batch_size: int = 1) -> Evaluation:
        """Every word and each ``</s>``, each sentence from ``<s>`` (an n-gram keeps no state
        across sentences, so the stream and isolated-sentence conventions agree)."""
        scores = self.score_sentences(sentences) if sentences else []
        tokens = sum(len(s.targets) for s in scores)
        total = -math.fsum(s.log_prob for s in scores)
        oov = sum(token not in self.vocab for s in sentences for token in s)
        cross_entropy = total / max(tokens, 1)
        return Evaluation(self.task, tokens, cross_entropy, oov / max(tokens, 1), cross_entropy)
