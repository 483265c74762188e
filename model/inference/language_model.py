"""What every servable model is: the one interface the service calls, whatever the kind.

A kind (a left-to-right recurrent model, a gap-filling one; soon an n-gram model and an
interpolation of several) subclasses ``LanguageModel`` and implements the calls it serves. The
server never asks which kind it holds: it makes the call, and a kind that does not serve it
raises ``UnsupportedCallError``. ``calls`` says in advance what a model serves.

Conventions, stated once here and relied on by the service:

- All log-probabilities are natural logs of normalised probabilities over the vocabulary.
- A *context* always starts at a sentence start: it is read as ``<s> context…``, so an empty
  context asks for the first word of a sentence.
- A multi-token candidate (``"new york"``) is scored by the chain rule:
  log P(new | ctx) + log P(york | ctx, new).
- Sentence scoring with ``bos=True`` reads ``<s>`` first and scores every token; with
  ``bos=False`` the first token is given as context and only the following tokens are scored.
  ``eos=True`` also scores ``</s>`` after the last token.
- Tokens outside the vocabulary are scored as ``<unk>``; every score says which of its targets
  were (``oov_targets``, ``oov_words()``), so a caller can add their spelling's share
  (``spelling``: the open vocabulary) or replace them with a penalty.
- Bad arguments raise ``InputError`` naming the argument and item; these errors know nothing of
  HTTP (the service maps them to 422 answers in one place).
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal, NamedTuple

import numpy as np

from model.inference.bias import DEFAULT_THETA as DEFAULT_BIAS_THETA
from model.inference.bias import DEFAULT_WEIGHT as DEFAULT_BIAS_WEIGHT
from model.inference.bias import MAX_PHRASE_TOKENS, Bias
from model.inference.neural_cache import CacheSettings
from model.inference.prefix_cache import CacheObserver
from model.inference.rerank_weights import RerankWeights
from model.inference.spelling import SpellingModel
from model.text.tokenize import Tokenizer
from model.text.vocab import SPECIALS, UNK, Vocabulary

Text = str | Sequence[str]  # a string to tokenise, or tokens already split
# how fill() scored: "bidirectional" (a gap-filling model), "sentence" (whole sentences)
FillMethod = Literal["bidirectional", "sentence"]


class Call(StrEnum):
    """The questions a model can be asked (the service has one endpoint for each)."""

    CANDIDATES = "candidates"  # log P(candidate | context) for given candidates
    PREDICT = "predict"  # the k most probable next tokens
    SCORE = "score"  # whole-sentence log-probabilities (N-best rescoring)
    FILL = "fill"  # candidates for a gap between a left and a right context


@dataclass
class CandidateScore:
    tokens: list[str]  # the candidate's tokens
    log_prob: float  # log P(candidate | context): the sum of token_log_probs
    token_log_probs: list[float]  # one per scored target (see the call for which they are)
    oov: bool  # any of the candidate's tokens is outside the vocabulary (scored as <unk>)
    oov_targets: list[int]  # indices into token_log_probs whose target is outside it
    # the targets token_log_probs score, when they are not the candidate's tokens (the
    # sentence method of fill scores the whole sentence)
    targets: list[str] | None = None
    # with a cache or a bias, for each target outside the vocabulary: (log of the model's share
    # of <unk>, log of the pointers' mass on the word's own string); see LanguageModel.spelled
    pointer_parts: dict[int, tuple[float, float]] | None = None

    def oov_words(self) -> list[str]:
        """The words of the OOV targets, in the order of ``oov_targets``."""
        targets = self.tokens if self.targets is None else self.targets
        return [targets[i] for i in self.oov_targets]


@dataclass
class SentenceScore:
    tokens: list[str]  # the sentence's tokens, without <s> and </s>
    targets: list[str]  # the tokens that were scored, in order ("</s>" last when eos)
    token_log_probs: list[float]  # one per target
    log_prob: float  # sum of token_log_probs
    perplexity: float  # exp(-log_prob / len(targets))
    oov_positions: list[int]  # indices into tokens
    oov_targets: list[int]  # indices into targets
    pointer_parts: dict[int, tuple[float, float]] | None = None  # as CandidateScore's

    def oov_words(self) -> list[str]:
        """The words of the OOV targets, in the order of ``oov_targets``."""
        return [self.targets[i] for i in self.oov_targets]


class GapScores(NamedTuple):
    """What ``fill`` returns: how the candidates were scored, and their scores."""

    method: FillMethod
    scores: list[CandidateScore]


@dataclass
class Evaluation:
    """A model's cross-entropy on a text, by the convention of its task."""

    task: str  # "next-word" or "gap-filling": their perplexities are not comparable
    tokens: int  # scored tokens
    cross_entropy: float  # nats per scored token
    oov_rate: float  # share of scored tokens outside the vocabulary
    # each sentence from a fresh state, as /v1/score and /v1/rerank read text: for a next-word
    # model whose state runs on across sentences this is another figure; None for gap filling
    isolated_cross_entropy: float | None = None


class InputError(ValueError):
    """An argument the model cannot score: ``argument`` names it, ``index`` the item in it."""

    def __init__(self, argument: str, index: int | None, problem: str) -> None:
        where = argument if index is None else f"{argument}[{index}]"
        super().__init__(f"{where} {problem}")
        self.argument, self.index, self.problem = argument, index, problem


class StepCounter:
    """Network time steps computed for requests (for metrics), shared by a model and the
    per-request variants made from it (``with_cache``): requests run in several threads."""

    def __init__(self) -> None:
        self.value = 0
        self._lock = threading.Lock()

    def add(self, steps: int) -> None:
        with self._lock:
            self.value += steps


class UnsupportedCallError(ValueError):
    """A call this kind of model does not serve (``next_word`` on a gap-filling model)."""

    def __init__(self, call: Call, task: str, calls: frozenset[Call]) -> None:
        served = ", ".join(sorted(calls)) or "nothing"
        super().__init__(f"a {task} model does not serve {call}; it serves {served}")
        self.call, self.task, self.calls = call, task, calls


class LanguageModel(ABC):
    """A trained model with the vocabulary and tokenizer it was trained with.

    Subclasses set ``task`` and ``calls`` and override the calls they serve; the defaults of
    the others raise ``UnsupportedCallError``.
    """

    task: ClassVar[str]  # what it was trained to predict: "next-word" or "gap-filling"
    calls: ClassVar[frozenset[Call]]

    def __init__(
        self,
        vocab: Vocabulary,
        tokenizer: Tokenizer,
        metadata: dict[str, Any] | None = None,
        checksum: str | None = None,
    ) -> None:
        self.vocab, self.tokenizer = vocab, tokenizer
        self.metadata = dict(metadata or {})  # training metadata and metrics from the checkpoint
        self.checksum = checksum  # sha256 of the weights file it was loaded from
        self.spelling: SpellingModel | None = None  # the open vocabulary (``use_spelling``)
        self.rerank: RerankWeights | None = None  # /v1/rerank's defaults (``nextword tune``)
        self._steps = StepCounter()

    # ------------------------------------------------------------ what it is
    @abstractmethod
    def architecture(self) -> dict[str, Any]:
        """The architecture as JSON (what config.json's "model" section holds)."""

    @abstractmethod
    def num_parameters(self) -> int: ...

    def position_cost(self) -> float:
        """About how many multiply-adds scoring one position takes: the unit in which the
        service weighs a request's work (its fair queue, its slices). A lookup table's."""
        return 64.0

    def self_check(self) -> None:
        """Raise FloatingPointError unless the parameters are finite and the model answers one
        gap-filling call (every kind serves fill) with a finite number; this also warms it up,
        so the first request does not pay for first-call costs."""
        self.check_parameters()
        method, (score,) = self.fill([], [], [[self.vocab.tokens[-1]]])
        if not math.isfinite(score.log_prob):
            raise FloatingPointError(f"the model answers {score.log_prob} ({method})")

    def check_parameters(self) -> None:  # noqa: B027 (a hook: a kind may have nothing to check)
        """Raise FloatingPointError naming a parameter that holds NaN or infinity."""

    def use_prefix_cache(  # noqa: B027 (an optional hook: a kind without states keeps none)
        self, entries: int, max_bytes: int, observer: CacheObserver | None
    ) -> None:
        """Keep the states after recent contexts, where the kind has any (default: none)."""

    def cache_stats(self) -> dict[str, int] | None:
        """The prefix cache's entries, bytes, hits and misses; None without a cache."""
        return None

    def reads_history(self) -> bool:
        """Whether text before a sentence's ``<s>`` changes its scores: a recurrent state
        carried on from it does; an n-gram's context stops at ``<s>`` (default: no)."""
        return False

    def unread_positions(self, tokens: Sequence[str]) -> int:
        """How many positions of ``<s> tokens`` reading them would compute now (what is
        cached is not read again): the cost of a request's history."""
        return len(tokens) + 1 if self.reads_history() else 0

    def require(self, call: Call) -> None:
        """Raise UnsupportedCallError unless this model serves ``call``."""
        if call not in self.calls:
            raise UnsupportedCallError(call, self.task, self.calls)

    # ------------------------------------------------------------ text
    def tokenize(self, text: Text) -> list[str]:
        """A string goes through the model's tokenizer; a list of tokens is taken as it is."""
        return self.tokenizer(text) if isinstance(text, str) else [str(t) for t in text]

    def use_spelling(self, spelling: SpellingModel | None) -> None:
        """Give each word outside the vocabulary its share of ``<unk>``'s probability by its
        spelling (``model.inference.spelling``), fitted here to this model's vocabulary."""
        chars = self.tokenizer.name == "chars"  # its tokens are single characters
        self.spelling = None if spelling is None else spelling.fit(self.vocab.tokens, chars)

    def spelled(self, score: CandidateScore | SentenceScore) -> list[float]:
        """``score``'s token log-probabilities over the open vocabulary: each OOV target's
        ``<unk>`` plus its word's share by spelling, log P(<unk> | h) + log P_spell(w | w ∉ V)
        (as they are for a model without a spelling model). A literal ``<unk>`` in the text is
        a string outside the vocabulary too, priced the same way: the class of all unknown
        words is not a word, and counting it as one would count its mass twice."""
        if self.spelling is None:
            return score.token_log_probs
        targets = score.targets if score.targets is not None else score.tokens
        literal = [i for i, t in enumerate(targets) if t == UNK]
        if not score.oov_targets and not literal:
            return score.token_log_probs
        out = list(score.token_log_probs)
        parts = score.pointer_parts or {}
        for i, word in [*zip(score.oov_targets, score.oov_words(), strict=True),
                        *((i, UNK) for i in literal)]:  # fmt: skip
            if i in parts:  # a cache or bias named the word: P_model(<unk>) P_spell(w) + P_ptr(w)
                model_part, pointer_part = parts[i]
                out[i] = float(np.logaddexp(model_part + self.spelling.log_prob(word),
                                            pointer_part))  # fmt: skip
            else:
                out[i] += self.spelling.log_prob(word)
        return out

    def open_vocabulary(self) -> str | None:
        """The open-vocabulary method this model has (``/v1/models`` reports it), or None."""
        return None if self.spelling is None else self.spelling.to_dict()["method"]

    def is_oov(self, token: str) -> bool:
        return token not in self.vocab

    def oov_indices(self, tokens: Sequence[str]) -> list[int]:
        return [i for i, token in enumerate(tokens) if token not in self.vocab]

    def tokenize_all(
        self, argument: str, texts: Sequence[Text], max_tokens: int | None = None
    ) -> list[list[str]]:
        """Each text's tokens; InputError naming ``argument[i]`` for the first one that has
        more than ``max_tokens`` tokens (when given) or none."""
        token_lists = []
        for i, text in enumerate(texts):
            tokens = self.tokenize(text)
            if max_tokens is not None and len(tokens) > max_tokens:
                raise InputError(argument, i, f"{len(tokens)} tokens, the limit is {max_tokens}")
            if not tokens:
                raise InputError(argument, i, "has no tokens after tokenisation")
            token_lists.append(tokens)
        return token_lists

    @property
    def steps_run(self) -> int:
        """Network time steps computed for requests (for metrics)."""
        return self._steps.value

    @steps_run.setter
    def steps_run(self, value: int) -> None:
        self._steps.value = value

    def _count_steps(self, steps: int) -> None:
        self._steps.add(steps)

    # ------------------------------------------------------------ a cache over the history
    def caches_history(self) -> bool:
        """Whether a neural cache over the history can be mixed in (it needs the hidden
        states of a left-to-right network; default: no)."""
        return False

    def neural_cache(self) -> CacheSettings | None:
        """The cache mixed into every score (``model.inference.neural_cache``), or None."""
        return None

    def use_neural_cache(self, settings: CacheSettings | None) -> None:
        """Mix a neural cache into every score from now on (None: none). ValueError for a
        kind that has no hidden states to remember."""
        if settings is not None:
            raise ValueError(self._no_cache())

    def with_cache(self, settings: CacheSettings | None) -> LanguageModel:
        """The same model with other cache settings, for one request (it shares everything
        else: the network, its prefix cache and pinned histories, the step count);
        InputError naming ``cache`` for a kind that can have none."""
        if settings is None and self.neural_cache() is None:
            return self
        raise InputError("cache", None, self._no_cache())

    def bias(self) -> Bias | None:
        """The phrases mixed into every score (``model.inference.bias``), or None."""
        return None

    def with_bias(self, bias: Bias | None) -> LanguageModel:
        """The same model with phrases to expect, for one request (InputError naming ``bias``
        for a kind without hidden states)."""
        if bias is None:
            return self
        raise InputError("bias", None, self._no_cache().replace("a cache", "a bias").replace(
            "leave cache out", "leave bias out"))  # fmt: skip

    def bias_for(
        self, texts: Sequence[str], boosts: Sequence[float] | None = None,
        weight: float = DEFAULT_BIAS_WEIGHT, theta: float | None = None,
    ) -> Bias:  # fmt: skip
        """Phrases as this model reads them, a ``Bias`` for ``with_bias``: θ by default the
        model's cache θ, else ``bias.DEFAULT_THETA``. InputError naming ``bias`` for a kind
        without hidden states, ``bias.phrases[i]`` for a phrase with no token or too many."""
        if not self.caches_history():
            raise InputError("bias", None, self._no_cache().replace("a cache", "a bias").replace(
                "leave cache out", "leave bias out"))  # fmt: skip
        phrases = []
        for i, text in enumerate(texts):
            tokens = tuple(self.tokenize(text))
            if not 1 <= len(tokens) <= MAX_PHRASE_TOKENS:
                problem = (f"has {len(tokens)} tokens after tokenisation; a phrase needs 1 to "
                           f"{MAX_PHRASE_TOKENS}")  # fmt: skip
                raise InputError("bias.phrases", i, problem)
            phrases.append(tokens)
        cache = self.neural_cache()
        if theta is None:
            theta = DEFAULT_BIAS_THETA if cache is None else cache.theta
        return Bias(tuple(phrases), tuple(boosts or [1.0] * len(phrases)), weight, theta)

    def unread_phrases(self) -> int:
        """Positions reading the bias's phrases would compute now (the scheduler's cost)."""
        return 0

    def _no_cache(self) -> str:
        return (
            "a cache needs a left-to-right network's hidden states; this model ("
            f"{self.architecture().get('kind', 'bidirectional network')}) has none: leave "
            "cache out"
        )

    # ------------------------------------------------------------ the calls
    def score_candidates_batch(
        self, requests: Sequence[tuple[Text, Sequence[Text]]]
    ) -> list[list[CandidateScore]]:
        """log P(candidate | <s> context) for several (context, candidates) requests at once."""
        raise UnsupportedCallError(Call.CANDIDATES, self.task, self.calls)

    def score_candidates(self, context: Text, candidates: Sequence[Text]) -> list[CandidateScore]:
        """log P(candidate | <s> context) for each candidate in order; chain rule over tokens."""
        return self.score_candidates_batch([(context, candidates)])[0]

    def next_log_probs(self, context: Text) -> np.ndarray:
        """log P(w | <s> context) for every vocabulary id, shape (V,)."""
        raise UnsupportedCallError(Call.PREDICT, self.task, self.calls)

    def top_k(
        self, context: Text, k: int = 10, include_special: bool = False
    ) -> list[tuple[str, float]]:
        """The k most probable next tokens with their log-probabilities, most probable first
        (from ``next_log_probs``; ``<unk>``, ``<s>`` and ``</s>`` only with ``include_special``)."""
        lp = self.next_log_probs(context).astype(np.float64)
        if not include_special:
            lp[[self.vocab.id(t) for t in SPECIALS]] = -np.inf
        k = max(0, min(k, int(np.isfinite(lp).sum())))
        best = np.argpartition(-lp, k - 1)[:k] if k else np.zeros(0, dtype=np.int64)
        best = best[np.argsort(-lp[best], kind="stable")]
        return [(self.vocab.tokens[i], float(lp[i])) for i in best]

    def score_sentences(
        self,
        sentences: Sequence[Text],
        bos: bool = True,
        eos: bool = True,
        batch_size: int = 64,
        prefix: Sequence[str] = (),
    ) -> list[SentenceScore]:
        """Whole-sentence scores in request order; each equal to scoring the sentence alone
        after ``<s> prefix`` (``History.tokens``: the running text before it, where the kind
        reads any; see ``reads_history``)."""
        raise UnsupportedCallError(Call.SCORE, self.task, self.calls)

    def fill(
        self, left: Text, right: Text, candidates: Sequence[Text], prefix: Sequence[str] = ()
    ) -> GapScores:
        """Score candidates for the gap between ``left`` and ``right``.

        By default (any model that scores sentences), method ``sentence``: each candidate's
        score is the log-probability of the whole sentence ``<s> left candidate right </s>``
        (after ``prefix``, as ``score_sentences`` reads it), and ``token_log_probs`` are that
        sentence's, so the right context counts too.
        """
        self.require(Call.FILL)
        left_tokens, right_tokens = self.tokenize(left), self.tokenize(right)
        token_lists = self.tokenize_all("candidates", candidates)
        whole = [left_tokens + t + right_tokens for t in token_lists]
        # a kind that reads no history may not take ``prefix`` (one written before it existed)
        sentences = (
            self.score_sentences(whole, prefix=prefix) if prefix else self.score_sentences(whole)
        )
        return GapScores(
            "sentence",
            [
                CandidateScore(
                    t,
                    s.log_prob,
                    s.token_log_probs,
                    any(map(self.is_oov, t)),
                    s.oov_targets,
                    s.targets,
                    s.pointer_parts,
                )
                for t, s in zip(token_lists, sentences, strict=True)
            ],
        )

    @abstractmethod
    def evaluate(self, sentences: list[list[str]], batch_size: int = 1) -> Evaluation:
        """Cross-entropy on tokenised sentences, by the convention of the model's task."""

    def text_log_probs(self, sentences: list[list[str]], stream: bool = False) -> np.ndarray:
        """log P of every target of each ``<s> sentence </s>`` (its words, then ``</s>``), all
        sentences concatenated, float64: each sentence alone, as the service scores text, or with
        ``stream`` as the kind's evaluation reads it (a recurrent state running on across
        sentences; the same thing for a kind that keeps none). Interpolation weights are fitted
        on these."""
        scores = self.score_sentences(sentences) if sentences else []
        return np.array(  # a literal <s> in the text is a given start, as the stream reads it
            [lp for s in scores for t, lp in zip(s.targets, s.token_log_probs, strict=True)
             if t != "<s>"],
            dtype=np.float64,
        )  # fmt: skip

    def with_weights(self, weights: Sequence[float] | np.ndarray) -> LanguageModel:
        """This model with other interpolation weights, for one request; only an interpolated
        model has any (InputError naming ``weights`` otherwise)."""
        raise InputError(
            "weights", None, "apply to an interpolated model only; this is a single model"
        )

    # ------------------------------------------------------------ helpers for the kinds
    def sentence_score(
        self, tokens: list[str], log_probs: list[float], bos: bool, eos: bool
    ) -> SentenceScore:
        """The score of ``tokens`` from its targets' log-probabilities (see ``score_sentences``)."""
        targets = (tokens if bos else tokens[1:]) + (["</s>"] if eos else [])
        total = math.fsum(log_probs)
        per_token = -total / len(log_probs)
        perplexity = math.exp(per_token) if per_token < 709 else math.inf  # no OverflowError
        oov = self.oov_indices(tokens)
        oov_targets = [p - (0 if bos else 1) for p in oov if bos or p > 0]
        return SentenceScore(tokens, targets, log_probs, total, perplexity, oov, oov_targets)

    def check_scorable(self, token_lists: Sequence[list[str]], bos: bool, eos: bool) -> None:
        """InputError naming the sentence that has no target to score under ``bos``/``eos``."""
        for i, tokens in enumerate(token_lists):
            if len(tokens) + int(bos) + int(eos) < 2:
                raise InputError("sentences", i, f"has nothing to score (bos={bos}, eos={eos})")
