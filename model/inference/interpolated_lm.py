"""Linear interpolation of left-to-right models, per token: ``P(w | h) = Σ_i λ_i P_i(w | h)``.

Speech and OCR teams rarely choose between a neural model and an n-gram: they mix them, and the
mixture beats both (PTB, sentences alone: RNN 143, KN5 141, mixed 109). Every call is answered
from the components' own answers to the same call, mixed token by token in log space, so the
probabilities stay exact and normalised and each component keeps its speed-ups (the RNN its
prefix cache and batching, the n-gram its vectorised back-off). The weights are fitted by EM on
held-out text (``fit_weights``) and can be overridden per request (``with_weights``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from model.inference.bias import Bias
from model.inference.language_model import (
    Call,
    CandidateScore,
    Evaluation,
    InputError,
    LanguageModel,
    SentenceScore,
    Text,
)
from model.inference.neural_cache import CacheSettings
from model.inference.prefix_cache import CacheObserver

SERVED = frozenset({Call.CANDIDATES, Call.PREDICT, Call.SCORE})  # what every component must serve


MAX_COMPONENTS = 16  # models in one interpolation: what nextword combine writes and loads


class InterpolatedLM(LanguageModel):
    """Components sharing one vocabulary and tokenizer, mixed with weights that sum to 1."""

    task = "next-word"
    calls = frozenset(Call)

    def __init__(
        self,
        components: Sequence[LanguageModel],
        weights: Sequence[float] | np.ndarray,
        names: Sequence[str] | None = None,
        metadata: dict[str, Any] | None = None,
        checksum: str | None = None,
        sources: Sequence[Path] | None = None,
    ) -> None:
        """``sources``: the checkpoint directory of each component, which a save copies."""
        if not 2 <= len(components) <= MAX_COMPONENTS:
            raise ValueError(
                f"an interpolation mixes 2 to {MAX_COMPONENTS} models, got {len(components)}"
            )
        first = components[0]
        for i, c in enumerate(components):
            check_component(i, c, first)
        super().__init__(first.vocab, first.tokenizer, metadata, checksum)
        self.components = list(components)
        self.names = list(names) if names is not None else [f"{i}" for i in range(len(components))]
        self.weights, self.log_weights = normalised_weights(weights, len(components))
        self.sources = None if sources is None else [Path(p) for p in sources]

    # ------------------------------------------------------------ what it is
    def architecture(self) -> dict[str, Any]:
        return {
            "kind": "interpolation",
            "weights": self.weights.tolist(),
            "components": [
                {"name": name, "architecture": c.architecture(), "checksum": c.checksum}
                for name, c in zip(self.names, self.components, strict=True)
            ],
        }

    def num_parameters(self) -> int:
        return sum(c.num_parameters() for c in self.components)

    def position_cost(self) -> float:
        return sum(c.position_cost() for c in self.components)

    def check_parameters(self) -> None:
        for c in self.components:
            c.check_parameters()

    def use_prefix_cache(
        self, entries: int, max_bytes: int, observer: CacheObserver | None
    ) -> None:
        for c in self.components:  # those with a state keep one; an n-gram has none to keep
            c.use_prefix_cache(entries, max_bytes, observer)

    def cache_stats(self) -> dict[str, int] | None:
        stats = [s for c in self.components if (s := c.cache_stats()) is not None]
        if not stats:
            return None
        return {key: sum(s[key] for s in stats) for key in stats[0]}

    @property  # the components count their own steps
    def steps_run(self) -> int:
        return sum(c.steps_run for c in self.components)

    @steps_run.setter
    def steps_run(self, value: int) -> None:
        """LanguageModel.__init__ sets 0; the components' counts are the truth."""

    def tensors(self) -> dict[str, np.ndarray]:
        """What a checkpoint stores besides its components: the weights."""
        return {"weights": self.weights.astype(np.float64)}

    def with_weights(self, weights: Sequence[float] | np.ndarray) -> InterpolatedLM:
        """The same components with other weights (normalised to sum to 1), for one request;
        InputError naming ``weights`` unless there is one finite weight ≥ 0 per component, not
        all 0."""
        other = copy.copy(self)
        try:
            other.weights, other.log_weights = normalised_weights(weights, len(self.components))
        except ValueError as e:
            raise InputError("weights", None, str(e)) from None
        return other

    # ------------------------------------------------------------ a cache over the history
    def caches_history(self) -> bool:
        return any(c.caches_history() for c in self.components)

    def neural_cache(self) -> CacheSettings | None:
        """The cache of its (first) recurrent component: there, P_rnn is mixed with P_cache
        before the components are, so P = Σ_i λ_i P_i is the general mixture of the models and
        the cache (``nextword tune`` fits its weights and λ together)."""
        return next((s for c in self.components if (s := c.neural_cache()) is not None), None)

    def use_neural_cache(self, settings: CacheSettings | None) -> None:
        """Give every recurrent component the cache (ValueError with none to give it to)."""
        if not self.caches_history():
            super().use_neural_cache(settings)
        for c in self.components:
            if c.caches_history():
                c.use_neural_cache(settings)

    def with_cache(self, settings: CacheSettings | None) -> LanguageModel:
        if not self.caches_history():
            return super().with_cache(settings)
        other = copy.copy(self)
        other.components = [c.with_cache(settings) if c.caches_history() else c
                            for c in self.components]  # fmt: skip
        return other

    def bias(self) -> Bias | None:
        return next((b for c in self.components if (b := c.bias()) is not None), None)

    def with_bias(self, bias: Bias | None) -> LanguageModel:
        """The bias mixed into every recurrent component, as the cache is."""
        if not self.caches_history():
            return super().with_bias(bias)
        other = copy.copy(self)
        other.components = [c.with_bias(bias) if c.caches_history() else c
                            for c in self.components]  # fmt: skip
        return other

    def unread_phrases(self) -> int:
        return sum(c.unread_phrases() for c in self.components)

    def mixed_parts(
        self, answers: Sequence[CandidateScore | SentenceScore]
    ) -> dict[int, tuple[float, float]] | None:
        """The components' pointer parts (``CandidateScore.pointer_parts``) of one answer,
        mixed: each part is a probability, so the mixture's is Σ_i λ_i part_i (a component
        without parts for a target has all of its probability as the model's part)."""
        if not any(a.pointer_parts for a in answers):
            return None
        targets = sorted({i for a in answers for i in (a.pointer_parts or {})})
        out = {}
        for i in targets:
            model = [(a.pointer_parts or {}).get(i, (a.token_log_probs[i], -math.inf))[0]
                     for a in answers]  # fmt: skip
            named = [(a.pointer_parts or {}).get(i, (0.0, -math.inf))[1] for a in answers]
            out[i] = (float(self.mix([[m] for m in model])[0]),
                      float(self.mix([[n] for n in named])[0]))  # fmt: skip
        return out

    # ------------------------------------------------------------ mixing
    def mix(self, per_component: Sequence[Sequence[float] | np.ndarray]) -> np.ndarray:
        """log Σ_i λ_i P_i for aligned log-probabilities (one sequence per component)."""
        lengths = {len(p) for p in per_component}
        if len(lengths) > 1:
            raise ValueError(f"the components scored different numbers of tokens: {lengths}")
        stacked = np.asarray(per_component, dtype=np.float64) + self.log_weights[:, None]
        top = stacked.max(axis=0)
        safe = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            mixed: np.ndarray = safe + np.log(np.exp(stacked - safe).sum(axis=0))
        return mixed

    # ------------------------------------------------------------ the calls
    def score_candidates_batch(
        self, requests: Sequence[tuple[Text, Sequence[Text]]]
    ) -> list[list[CandidateScore]]:
        """Tokenised once for every component; every token of every candidate mixed in one
        vectorised call (a query's cost over its components' is then a few NumPy calls)."""
        tokenized = [
            (self.tokenize(context), self.tokenize_all("candidates", texts))
            for context, texts in requests
        ]
        answers = [c.score_candidates_batch(tokenized) for c in self.components]
        first = [score for per_request in answers[0] for score in per_request]
        flat = [
            [lp for per_request in a for score in per_request for lp in score.token_log_probs]
            for a in answers
        ]
        mixed = self.mix(flat).tolist()
        out: list[list[CandidateScore]] = [[] for _ in requests]
        owners = [r for r, per_request in enumerate(answers[0]) for _ in per_request]
        at = 0
        per_candidate = [[s for per_request in a for s in per_request] for a in answers]
        for k, (r, p) in enumerate(zip(owners, first, strict=True)):
            lps = mixed[at : at + len(p.token_log_probs)]
            at += len(lps)
            parts = self.mixed_parts([scores[k] for scores in per_candidate])
            out[r].append(CandidateScore(p.tokens, math.fsum(lps), lps, p.oov, p.oov_targets,
                                         p.targets, parts))  # fmt: skip
        return out

    def next_log_probs(self, context: Text) -> np.ndarray:
        tokens = self.tokenize(context)  # once, for every component
        return self.mix([c.next_log_probs(tokens) for c in self.components])

    def reads_history(self) -> bool:
        return any(c.reads_history() for c in self.components)

    def unread_positions(self, tokens: Sequence[str]) -> int:
        return max(c.unread_positions(tokens) for c in self.components)

    def score_sentences(
        self,
        sentences: Sequence[Text],
        bos: bool = True,
        eos: bool = True,
        batch_size: int = 64,
        prefix: Sequence[str] = (),
    ) -> list[SentenceScore]:
        token_lists = [self.tokenize(s) for s in sentences]
        answers = [
            c.score_sentences(token_lists, bos, eos, batch_size, prefix) for c in self.components
        ]
        out = []
        for parts in zip(*answers, strict=True):
            mixed = self.mix([p.token_log_probs for p in parts]).tolist()
            score = self.sentence_score(parts[0].tokens, mixed, bos, eos)
            score.pointer_parts = self.mixed_parts(parts)
            out.append(score)
        return out

    def text_log_probs(self, sentences: list[list[str]], stream: bool = False) -> np.ndarray:
        return self.mix([c.text_log_probs(sentences, stream) for c in self.components])

    def evaluate(self, sentences: list[list[str]], batch_size: int = 1) -> Evaluation:
        """The stream (each component reading the text as its own evaluation does, mixed token
        by token) and each sentence alone."""
        stream = self.text_log_probs(sentences, stream=True)
        isolated = self.text_log_probs(sentences)
        tokens = len(stream)
        oov = sum(token not in self.vocab for s in sentences for token in s)
        return Evaluation(
            self.task,
            tokens,
            -math.fsum(stream) / max(tokens, 1),
            oov / max(tokens, 1),
            -math.fsum(isolated) / max(tokens, 1),
        )


def check_component(index: int, component: LanguageModel, first: LanguageModel) -> None:
    """ValueError naming the component that cannot be mixed with the first, and why."""
    where = f"model {index + 1}"
    if isinstance(component, InterpolatedLM):
        raise ValueError(f"{where} is itself an interpolation: list its components instead")
    missing = SERVED - component.calls
    if component.task != "next-word" or missing:
        raise ValueError(
            f"{where} is a {component.task} model: only left-to-right models can be mixed "
            "token by token"
        )
    if component.tokenizer.to_dict() != first.tokenizer.to_dict():
        raise ValueError(
            f"{where} tokenizes as {component.tokenizer.to_dict()}, model 1 as "
            f"{first.tokenizer.to_dict()}: the models must share their tokenizer"
        )
    mine, theirs = component.vocab.tokens, first.vocab.tokens
    if mine != theirs:
        if len(mine) != len(theirs):
            detail = f"{len(mine):,} tokens against {len(theirs):,}"
        else:
            at = next(i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b)
            detail = f"id {at} is {mine[at]!r} there and {theirs[at]!r} in model 1"
        raise ValueError(
            f"{where} has another vocabulary ({detail}): the models must share theirs exactly "
            "(build the n-gram with nextword ngram --vocab-from RNN_DIR)"
        )


def normalised_weights(
    weights: Sequence[float] | np.ndarray, count: int
) -> tuple[np.ndarray, np.ndarray]:
    """(λ, log λ), λ summing to 1; ValueError unless there are ``count`` finite weights ≥ 0,
    not all 0."""
    values = np.asarray(list(weights), dtype=np.float64)
    if values.shape != (count,):
        raise ValueError(f"need {count} weights, one per model, got {len(values)}")
    if not (np.isfinite(values).all() and (values >= 0).all() and values.max() > 0):
        raise ValueError(f"must be finite numbers ≥ 0, not all 0; got {values.tolist()}")
    values = values / values.max()  # first: a sum of huge weights would overflow
    values = values / values.sum()
    with np.errstate(divide="ignore"):
        return values, np.log(values)


def fit_weights(
    log_probs: Sequence[np.ndarray], iterations: int = 500, tolerance: float = 1e-9
) -> tuple[np.ndarray, list[float]]:
    """EM for the weights of a mixture of fixed models: the weights that maximise the
    likelihood of held-out tokens (the problem is concave, so EM finds the optimum).

    ``log_probs``: per component, the log-probability of every held-out token, aligned.
    Returns the weights and the cross-entropy (nats per token) after each iteration, which
    never increases.
    """
    L = np.asarray(log_probs, dtype=np.float64)  # (C, M)
    weights = np.full(len(L), 1.0 / len(L))
    history: list[float] = []
    top = L.max(axis=0)
    P = np.exp(L - top)  # rescaled per token: the posteriors do not change
    for _ in range(iterations):
        joint = weights[:, None] * P
        total = joint.sum(axis=0)
        history.append(float(-(np.log(total) + top).mean()))
        new = (joint / total).mean(axis=1)
        if np.abs(new - weights).max() < tolerance:
            weights = new
            break
        weights = new
    return weights, history
