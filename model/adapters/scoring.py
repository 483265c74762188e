"""What every decoder adapter asks of nextword: log P of a word (or words) after the tokens so
far, and whether any of them is outside the vocabulary, in process or over HTTP.

A ``Scorer`` takes the context's tokens and candidate token lists and answers, per candidate,
``(log P (natural log), any token OOV)``: one ``/v1/candidates`` question. A model with an open
vocabulary scores an OOV word by its spelling (``LanguageModel.spelled``, the service's default
``oov: "spell"``), so a decoder needs no fixed OOV offset for it. The pyctcdecode and
flashlight adapters are thin layers over it that combine the numbers as their decoder expects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from model.inference.bias import DEFAULT_WEIGHT
from model.inference.history import (
    MAX_HISTORY_TOKENS,
    History,
    HistoryText,
    history_sentences,
    history_window,
)
from model.inference.language_model import LanguageModel
from model.text.tokenize import Tokenizer
from model.text.vocab import SPECIALS

CACHE_ENTRIES, CACHE_BYTES = 65_536, 256 << 20  # the prefix cache an in-process adapter turns on


class Scorer(Protocol):
    """(context tokens, candidate token lists) → per candidate: (log P (natural), any token
    OOV), after the text that came before (``use_history``), as one ``/v1/candidates``
    question with ``history`` is answered."""

    def __call__(
        self, context: list[str], candidates: list[list[str]]
    ) -> list[tuple[float, bool]]: ...

    def use_history(self, history: HistoryText | None) -> None:
        """Read ``history`` (what the service's ``history`` takes) before every context from
        now on; None: nothing before the sentence."""

    def use_bias(self, phrases: Sequence[str] | None, weight: float = DEFAULT_WEIGHT) -> None:
        """Expect ``phrases`` (the service's ``bias``) from now on; None: no bias."""


class InProcessScorer:
    """Answers from a loaded model; a recurrent one gets a prefix cache if it has none, so a
    context one word longer than the last costs one network step (and a history is read once
    per utterance). ``spelled``: OOV words by their spelling when the model has an open
    vocabulary, else ``<unk>``'s whole probability."""

    def __init__(
        self, lm: LanguageModel, spelled: bool = True,
        max_history_tokens: int = MAX_HISTORY_TOKENS,
    ) -> None:  # fmt: skip
        if lm.cache_stats() is None:
            lm.use_prefix_cache(CACHE_ENTRIES, CACHE_BYTES, None)
        self.lm, self.spelled, self.max_history_tokens = lm, spelled, max_history_tokens
        self.base = lm  # the model without a bias
        self.history = History.empty()  # what every context is read after

    def use_bias(self, phrases: Sequence[str] | None, weight: float = DEFAULT_WEIGHT) -> None:
        if not phrases:
            self.lm = self.base
            return
        self.lm = self.base.with_bias(self.base.bias_for(phrases, weight=weight))

    def use_history(self, history: HistoryText | None) -> None:
        if history is None or not self.lm.reads_history():
            self.history = History.empty()
            return
        sentences = history_sentences(history, self.lm.tokenize)
        self.history = history_window(sentences, self.max_history_tokens)

    def __call__(self, context: list[str], candidates: list[list[str]]) -> list[tuple[float, bool]]:
        scores = self.lm.score_candidates(self.history.before(context), candidates)
        if not self.spelled:
            return [(s.log_prob, s.oov) for s in scores]
        return [(math.fsum(self.lm.spelled(s)), s.oov) for s in scores]  # OOV words by spelling


def in_process_scorer(lm: LanguageModel, spelled: bool = True) -> InProcessScorer:
    """An ``InProcessScorer`` of ``lm``."""
    return InProcessScorer(lm, spelled)


class HttpScorer:
    """Answers from a running service through ``app.client.NextwordClient`` (or anything with
    its ``candidates`` method; the client names the model), under the OOV policy ``oov`` (None:
    the served model's default); a history is sent with every question (the service's prefix
    cache reads it once)."""

    def __init__(self, client: Any, oov: str | None = None) -> None:
        self.client = client
        self.options: dict[str, Any] = {} if oov is None else {"oov": oov}

    def use_history(self, history: HistoryText | None) -> None:
        self.options.pop("history", None)
        if history is not None:
            given = history if isinstance(history, str) else [
                h if isinstance(h, str) else list(h) for h in history
            ]  # fmt: skip
            self.options["history"] = given

    def use_bias(self, phrases: Sequence[str] | None, weight: float = DEFAULT_WEIGHT) -> None:
        self.options.pop("bias", None)
        if phrases:
            self.options["bias"] = {"phrases": list(phrases), "weight": weight}

    def __call__(self, context: list[str], candidates: list[list[str]]) -> list[tuple[float, bool]]:
        answer = self.client.candidates(context, candidates, **self.options)
        return [(float(r.log_prob), bool(r.oov)) for r in answer.results]


def http_scorer(client: Any, oov: str | None = None) -> HttpScorer:
    """An ``HttpScorer`` asking through ``client``."""
    return HttpScorer(client, oov)


def served_model(client: Any) -> Any:
    """``/v1/models``' description of the model a client asks (its ``model``, else the
    service's default)."""
    listed = client.models()
    name = getattr(client, "model", None) or listed.default
    described = [m for m in listed.models if m.name == name]
    if not described:
        raise ValueError(
            f"the service has no model {name!r}; it has {[m.name for m in listed.models]}"
        )
    return described[0]


def served_tokenizer(client: Any) -> Tokenizer:
    """The tokenizer of the model a client asks (its ``model``, else the service's default), as
    ``/v1/models`` describes it: normalisation included, so a decoder's words are cut into the
    model's tokens here exactly as the service would cut a string (``CAT`` → ``cat`` for a
    model trained with ``--normalize spoken``)."""
    return Tokenizer.from_dict(served_model(client).tokenizer)


def unigrams_of(lm: LanguageModel) -> Sequence[str]:
    """The words of a loaded model (its vocabulary without ``<s>``, ``</s>``, ``<unk>``): what
    an HTTP-backed adapter needs to know, since a service does not list its vocabulary."""
    return [t for t in lm.vocab.tokens if t not in SPECIALS]
