"""Requests → language-model calls → responses, with the limits and the OOV policy.

Routes stay thin: they pick the model and call one function here. Nothing here knows HTTP beyond
``RequestError``, which the app turns into a 4xx naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np

from app import schemas
from app.core.config import Settings
from app.metrics import observe_scores
from app.scheduler import Work
from model.inference.bias import Bias
from model.inference.history import History, history_sentences, history_window
from model.inference.language_model import (
    Call,
    CandidateScore,
    FillMethod,
    InputError,
    LanguageModel,
    SentenceScore,
    UnsupportedCallError,
)
from model.inference.neural_cache import CacheSettings
from model.inference.rerank_weights import RerankWeights
from model.network.layers import softmax

DEFAULT_LM_WEIGHT = 0.5  # /v1/rerank's for a model not tuned with nextword tune --nbest

T = TypeVar("T")
# Multiply-adds a slice of a request's work may take (``LanguageModel.position_cost`` counts
# them) when the caller gives no budget; the app sizes slices by the rate it measures for each
# kind of work (``FairScheduler.slice_cost``), so that one takes about 15 ms.
SLICE_COST = 4e8
# What scoring one character of an OOV word's spelling costs, in the same units (about 2 µs)
SPELL_COST = 4e4

ENDPOINTS = {  # the endpoints that make each call, in the order /v1/models lists them
    Call.CANDIDATES: ["/v1/candidates"],
    Call.PREDICT: ["/v1/predict"],
    Call.SCORE: ["/v1/score", "/v1/rerank"],
    Call.FILL: ["/v1/fill"],
}


class RequestError(ValueError):
    """A request the model cannot serve as asked; ``field`` is the request field at fault."""

    def __init__(
        self, field: str, message: str, status: int = 422, extra: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.status, self.extra = field, message, status, extra or {}


def slices(costs: Sequence[float], budget: float) -> Iterator[list[int]]:
    """Consecutive indices of items of these ``costs``, grouped so that a group's work stays
    within ``budget`` (an item above it forms a group alone)."""
    group: list[int] = []
    cost = 0.0
    for i, item in enumerate(costs):
        if group and cost + item > budget:
            yield group
            group, cost = [], 0.0
        group.append(i)
        cost += item
    if group:
        yield group


def item_costs(lm: LanguageModel, per: float, positions: Sequence[int],
               token_lists: Sequence[list[str]], policy: str) -> list[float]:  # fmt: skip
    """Each item's estimated cost: its positions, and under ``spell`` its OOV words' characters
    (the spelling model reads them one by one)."""
    costs = [max(n, 1) * per for n in positions]
    if policy == "spell":
        for i, tokens in enumerate(token_lists):
            costs[i] += SPELL_COST * sum(len(tokens[j]) for j in lm.oov_indices(tokens))
    return costs


def complete(work: Work[T]) -> T:
    """Run a request's work to its end in the calling thread (no fair queue): for the library,
    the tests, and /v1/candidates under cross-request batching."""
    while True:
        try:
            next(work)
        except StopIteration as stop:
            result: T = stop.value
            return result


def check_count(field: str, count: int, limit: int) -> None:
    if count > limit:
        raise RequestError(field, f"{count} items, the limit is {limit}")


def tokens_of(lm: LanguageModel, field: str, text: str | list[str], limit: int) -> list[str]:
    tokens = lm.tokenize(text)
    check_lengths(field, [tokens], limit, indexed=False)
    return tokens


def check_lengths(
    field: str, token_lists: Sequence[list[str]], limit: int, indexed: bool = True
) -> None:
    """422 naming the first text of ``field`` with more than ``limit`` tokens."""
    for i, tokens in enumerate(token_lists):
        if len(tokens) > limit:
            where = f"{field}[{i}]" if indexed else field
            raise RequestError(where, f"{len(tokens)} tokens, the limit is {limit}")


def endpoints(calls: frozenset[Call]) -> list[str]:
    """The endpoints that serve a model making ``calls``."""
    return [path for call, paths in ENDPOINTS.items() if call in calls for path in paths]


@contextmanager
def model_errors(name: str, fields: dict[str, str] | None = None) -> Iterator[None]:
    """The one place a model's errors become answers: an ``InputError`` is a 422 naming the
    request field (``fields`` maps the model's argument names to the request's where they
    differ), an unsupported call a 422 naming the model and what it serves."""
    try:
        yield
    except UnsupportedCallError as e:
        served = ", ".join(endpoints(e.calls))
        raise RequestError(
            "model", f"{name!r} is a {e.task} model: it serves {served} only"
        ) from None
    except InputError as e:
        field = (fields or {}).get(e.argument, e.argument)
        raise RequestError(field if e.index is None else f"{field}[{e.index}]", e.problem) from None


def variant(lm: LanguageModel, request: schemas.WithHistory) -> LanguageModel:
    """The model with the request's interpolation weights and neural cache settings, where it
    gives any (InputError naming ``weights`` or ``cache`` when they do not fit the model)."""
    if request.weights is not None:
        lm = lm.with_weights(request.weights)
    if request.cache is not None:
        if not lm.caches_history():
            return lm.with_cache(CacheSettings(0.0, 0.0, 1))  # the kind's 422 naming cache
        overrides = request.cache.model_dump(exclude_none=True)
        try:
            settings = CacheSettings.merged(lm.neural_cache(), overrides)
        except ValueError as e:
            raise InputError("cache", None, str(e)) from None
        lm = lm.with_cache(settings if settings.weight > 0 else None)  # weight 0: none at all
    if request.bias is not None:
        lm = lm.with_bias(bias_of(lm, request.bias))
    return lm


def bias_of(lm: LanguageModel, options: schemas.BiasOptions) -> Bias:
    """The request's phrases in the model's tokens (InputError naming the phrase that has no
    token or too many; ``with_bias``'s for a kind that cannot have one)."""
    items = [(p, 1.0) if isinstance(p, str) else (p.text, p.boost) for p in options.phrases]
    return lm.bias_for([text for text, _ in items], [boost for _, boost in items],
                       options.weight, options.theta)  # fmt: skip


def bias_used(lm: LanguageModel) -> schemas.BiasUsed | None:
    """What an answer says of the bias ``lm`` mixes in."""
    bias = lm.bias()
    if bias is None:
        return None
    return schemas.BiasUsed(phrases=len(bias.phrases), weight=bias.weight, theta=bias.theta)


def cache_used(lm: LanguageModel) -> schemas.CacheUsed | None:
    """What an answer or /v1/models says of the neural cache ``lm`` mixes in."""
    settings = lm.neural_cache()
    return None if settings is None else schemas.CacheUsed(**settings.to_dict())


def apply_oov_policy(
    lm: LanguageModel, request: schemas.OovOptions, fields: Sequence[tuple[str, list[str]]]
) -> schemas.OovPolicy:
    """The OOV policy that applies (the request's, else ``spell`` for a model with a spelling
    model and ``unk`` for one without); rejects (422 naming the words and fields) or checks the
    penalty, as the request asks."""
    policy: schemas.OovPolicy = request.oov or ("spell" if lm.spelling is not None else "unk")
    if policy == "spell" and lm.spelling is None:
        raise RequestError(
            "oov", "'spell': this model has no spelling model for words outside its vocabulary; "
            "use 'unk' or 'penalty', or add one with `nextword spell --model DIR`",
        )  # fmt: skip
    if policy == "penalty" and request.oov_penalty is None:
        raise RequestError("oov_penalty", "is required when oov is 'penalty'")
    if policy == "reject":
        unknown = {field: [tokens[i] for i in lm.oov_indices(tokens)] for field, tokens in fields}
        unknown = {field: words for field, words in unknown.items() if words}
        if unknown:
            first = next(iter(unknown))
            raise RequestError(
                first, f"words outside the vocabulary: {unknown[first]}", extra={"oov": unknown}
            )
    return policy


def unknown_words_warning(
    lm: LanguageModel, token_lists: Sequence[list[str]], policy: str
) -> list[str]:
    """A warning when every token of the request is outside the vocabulary: the numbers then
    say nothing of the words in context, only of ``<unk>`` (and, with ``spell``, of how word-like
    each spelling is); typically text in another language or script than the model's."""
    tokens = [t for tokens in token_lists for t in tokens]
    if not tokens or len(lm.oov_indices(tokens)) < len(tokens):
        return []
    tokenizer = lm.tokenizer.to_dict()
    what = (
        "the scores tell these words apart by their spelling alone, not by their context"
        if policy == "spell"
        else "the scores cannot tell these words apart"
    )
    return [
        f"every token of the request ({len(tokens)}) is outside the model's vocabulary of "
        f"{len(lm.vocab):,}, so {what}; is the text in the language and form the model was "
        f"trained on (its tokenizer: {tokenizer})?"
    ]


def oov_scored(
    lm: LanguageModel, score: CandidateScore | SentenceScore, policy: str, penalty: float | None
) -> list[float]:
    """Token log-probabilities under the OOV policy: ``spell`` adds each OOV word's share of
    ``<unk>`` by its spelling (log P(<unk> | h) + log P_spell(w | w ∉ V)), ``penalty`` puts the
    penalty in its place; ``unk`` and ``reject`` leave ``<unk>``'s own."""
    if not score.oov_targets or policy in ("unk", "reject"):
        return score.token_log_probs
    if policy == "penalty":
        out = list(score.token_log_probs)
        for i in score.oov_targets:
            out[i] = float(penalty)  # type: ignore[arg-type]
        return out
    return lm.spelled(score)  # "spell": apply_oov_policy checked that the model has one


def history_of(
    lm: LanguageModel, req: schemas.WithHistory, settings: Settings
) -> tuple[History, schemas.HistoryRead | None, list[str]]:
    """The request's history as the model reads it (``History.tokens`` go before the request's
    own ``<s>``), what the answer says of it, and a warning when the model reads none."""
    if req.history is None:
        return History.empty(), None, []
    if not isinstance(req.history, str):  # more sentences than could ever be read
        check_count("history", len(req.history), settings.max_history_tokens)
    sentences = history_sentences(req.history, lm.tokenize)
    window = history_window(sentences, settings.max_history_tokens)
    if not lm.reads_history():
        note = (
            "history: this model reads no history (an n-gram's context stops at <s>; a "
            "gap-filling model reads a sentence alone), so the scores are the same without it"
        )
        return History.empty(), schemas.HistoryRead(sentences=0, tokens=0, dropped=0), [note]
    read = schemas.HistoryRead(sentences=window.sentences, tokens=window.read,
                               dropped=window.dropped)  # fmt: skip
    return window, read, []


def after(history: History) -> dict[str, list[str]]:
    """The ``prefix`` argument for a history, only when there is one: a kind that reads none
    (``reads_history`` false, the default of a new kind) is called as before."""
    return {"prefix": history.tokens} if history.tokens else {}


def history_cost(lm: LanguageModel, history: History) -> float:
    """What reading the history and the bias's phrases will cost now (what is kept is not
    read again)."""
    unread = lm.unread_positions(history.tokens) if history.tokens else 0
    return lm.position_cost() * (unread + lm.unread_phrases())


def candidates(
    lm: LanguageModel,
    name: str,
    req: schemas.CandidatesRequest,
    settings: Settings,
    score: Callable[[list[str], list[list[str]]], list[CandidateScore]] | None = None,
    slice_cost: float = SLICE_COST,
) -> Work[schemas.CandidatesResponse]:
    """``score`` computes the candidates: the model by default; the app passes its batcher
    (which batches with the model's own weights and cache: a request giving others is scored
    alone, and
    a request it batches is one slice: the batch is its own unit)."""
    with model_errors(name):
        lm.require(Call.CANDIDATES)
        if req.weights is not None or req.cache is not None or req.bias is not None:
            lm, score = variant(lm, req), None
        check_count("candidates", len(req.candidates), settings.max_candidates)
        context = tokens_of(lm, "context", req.context, settings.max_tokens)
        token_lists = lm.tokenize_all("candidates", req.candidates, settings.max_tokens)
        fields = [("context", context)] + [
            (f"candidates[{i}]", t) for i, t in enumerate(token_lists)
        ]
        policy = apply_oov_policy(lm, req, fields)
        history, read, notes = history_of(lm, req, settings)
    per = lm.position_cost()
    costs = item_costs(lm, per, [len(t) for t in token_lists], token_lists, policy)
    costs[0] += per * len(context) + history_cost(lm, history)  # read with the first slice
    full_context = history.before(context)
    left = math.fsum(costs)
    yield left
    scores: list[CandidateScore] = []
    log_probs: list[float] = []
    groups = [list(range(len(costs)))] if score is not None else slices(costs, slice_cost)
    for group in groups:
        with model_errors(name):
            part = (score or lm.score_candidates)(full_context, [token_lists[i] for i in group])
        scores += part
        log_probs += [math.fsum(oov_scored(lm, s, policy, req.oov_penalty)) for s in part]
        left -= math.fsum(costs[i] for i in group)
        yield max(left, 0.0)
    observe_scores(
        name, sum(len(t) for t in token_lists), sum(s.oov for s in scores), log_probs, len(scores)
    )
    return schemas.CandidatesResponse(
        model=name,
        normalized=policy != "penalty",
        oov=policy,
        context_tokens=context,
        context_oov_positions=lm.oov_indices(context),
        results=candidate_results(req.candidates, scores, log_probs),
        warnings=unknown_words_warning(lm, [context, *token_lists], policy) + notes,
        history=read,
        cache=cache_used(lm),
        bias=bias_used(lm),
    )


def predict(
    lm: LanguageModel,
    name: str,
    req: schemas.PredictRequest,
    settings: Settings,
) -> Work[schemas.PredictResponse]:
    """The k most probable next words: one slice (the context's read and one output row)."""
    with model_errors(name):
        lm.require(Call.PREDICT)
        lm = variant(lm, req)
        if req.k > settings.max_k:
            raise RequestError("k", f"{req.k} is above the limit of {settings.max_k}")
        context = tokens_of(lm, "context", req.context, settings.max_tokens)
        history, read, notes = history_of(lm, req, settings)
    yield lm.position_cost() * (len(context) + 1) + history_cost(lm, history)
    with model_errors(name):
        top = lm.top_k(history.before(context), req.k, include_special=req.include_special)
    return schemas.PredictResponse(
        model=name,
        context_tokens=context,
        warnings=unknown_words_warning(lm, [context], "unk") + notes,
        history=read,
        cache=cache_used(lm),
        bias=bias_used(lm),
        predictions=[
            schemas.Prediction(word=w, probability=math.exp(lp), log_prob=lp) for w, lp in top
        ],
    )


# score_texts' answer: the results, warnings, OOV policy applied, the history read and the
# neural cache mixed in
Scored = tuple[
    list[schemas.SentenceResult],
    list[str],
    schemas.OovPolicy,
    schemas.HistoryRead | None,
    schemas.CacheUsed | None,
    schemas.BiasUsed | None,
]


def score_texts(
    lm: LanguageModel,
    name: str,
    texts: Sequence[str | list[str]],
    req: schemas.ScoreRequest | schemas.RerankRequest,
    field: str,
    settings: Settings,
    slice_cost: float = SLICE_COST,
) -> Work[Scored]:
    """Score sentences, a slice of them at a time (each slice one padded batch); the shared
    core of /v1/score and /v1/rerank. Returns the results, the answer's warnings, the OOV
    policy applied, what was read of the history and the cache mixed in."""
    with model_errors(name, {"sentences": field}):
        lm.require(Call.SCORE)
        lm = variant(lm, req)
        check_count(field, len(texts), settings.max_sentences)
        token_lists = [lm.tokenize(t) for t in texts]
        check_lengths(field, token_lists, settings.max_tokens)
        lm.check_scorable(token_lists, req.bos, req.eos)  # refused before its words are looked up
        fields = [(f"{field}[{i}]", t) for i, t in enumerate(token_lists)]
        policy = apply_oov_policy(lm, req, fields)
        history, read, notes = history_of(lm, req, settings)
    per = lm.position_cost()
    costs = item_costs(lm, per, [len(t) + 2 for t in token_lists], token_lists, policy)
    costs[0] += history_cost(lm, history)  # read once, with the first slice
    left = math.fsum(costs)
    yield left
    scored: list[tuple[SentenceScore, list[float]]] = []
    for group in slices(costs, slice_cost):
        with model_errors(name, {"sentences": field}):
            part = lm.score_sentences(
                [token_lists[i] for i in group], bos=req.bos, eos=req.eos,
                batch_size=settings.max_sentences, **after(history),
            )  # fmt: skip
        scored += [(s, oov_scored(lm, s, policy, req.oov_penalty)) for s in part]
        left -= math.fsum(costs[i] for i in group)
        yield max(left, 0.0)
    results = []
    for s, lps in scored:
        total = math.fsum(lps)
        results.append(
            schemas.SentenceResult(
                tokens=s.tokens,
                targets=s.targets,
                log_prob=total,
                token_log_probs=lps,
                perplexity=bounded_exp(-total / len(lps)),
                oov_count=len(s.oov_positions),
                oov_positions=s.oov_positions,
            )
        )
    observe_scores(
        name,
        sum(len(r.token_log_probs) for r in results),
        sum(r.oov_count for r in results),
        [r.log_prob for r in results],
        None,
    )
    warnings = unknown_words_warning(lm, token_lists, policy) + notes
    return results, warnings, policy, read, cache_used(lm), bias_used(lm)


def score(
    lm: LanguageModel,
    name: str,
    req: schemas.ScoreRequest,
    settings: Settings,
    slice_cost: float = SLICE_COST,
) -> Work[schemas.ScoreResponse]:
    results, warnings, policy, read, cache, bias = yield from score_texts(
        lm, name, req.sentences, req, "sentences", settings, slice_cost
    )
    return schemas.ScoreResponse(
        model=name, normalized=policy != "penalty", oov=policy, results=results,
        warnings=warnings, history=read, cache=cache, bias=bias,
    )  # fmt: skip


def rerank(
    lm: LanguageModel,
    name: str,
    req: schemas.RerankRequest,
    settings: Settings,
    slice_cost: float = SLICE_COST,
) -> Work[schemas.RerankResponse]:
    """N-best rescoring: combined = score + lm_weight * lm_log_prob + length_bonus * n_tokens."""
    texts = [h.text for h in req.hypotheses]
    results, warnings, policy, read, cache, bias = yield from score_texts(
        lm, name, texts, req, "hypotheses", settings, slice_cost
    )
    tuned = lm.rerank or RerankWeights(DEFAULT_LM_WEIGHT, 0.0)
    lm_weight = tuned.lm_weight if req.lm_weight is None else req.lm_weight
    length_bonus = tuned.length_bonus if req.length_bonus is None else req.length_bonus
    ranked = [
        schemas.RankedHypothesis(
            index=i,
            text=h.text,
            tokens=r.tokens,
            score=h.score,
            lm_log_prob=r.log_prob,
            n_tokens=len(r.tokens),
            combined=h.score + lm_weight * r.log_prob + length_bonus * len(r.tokens),
        )
        for i, (h, r) in enumerate(zip(req.hypotheses, results, strict=True))
    ]
    ranked.sort(key=lambda h: (-h.combined, h.index))  # best first; ties keep request order
    return schemas.RerankResponse(
        model=name, normalized=policy != "penalty", oov=policy, hypotheses=ranked,
        warnings=warnings, history=read, cache=cache, bias=bias,
        weights=schemas.RerankUsed(lm_weight=lm_weight, length_bonus=length_bonus),
    )  # fmt: skip


def fill(
    lm: LanguageModel,
    name: str,
    req: schemas.FillRequest,
    settings: Settings,
    slice_cost: float = SLICE_COST,
) -> Work[schemas.FillResponse]:
    """Candidates for a gap with words on both sides (``LanguageModel.fill`` has the methods):
    whole sentences a slice of candidates at a time; a gap-filling model's in one slice (it
    reads the two sides once for all the candidates, then one output row per token)."""
    with model_errors(name):
        lm.require(Call.FILL)
        lm = variant(lm, req)
        check_count("candidates", len(req.candidates), settings.max_candidates)
        left = tokens_of(lm, "left", req.left, settings.max_tokens)
        right = tokens_of(lm, "right", req.right, settings.max_tokens)
        token_lists = lm.tokenize_all("candidates", req.candidates, settings.max_tokens)
        fields = [("left", left), ("right", right)] + [
            (f"candidates[{i}]", t) for i, t in enumerate(token_lists)
        ]
        policy = apply_oov_policy(lm, req, fields)
        history, read, notes = history_of(lm, req, settings)
    per = lm.position_cost()
    whole = [left + t + right for t in token_lists]
    groups: Iterable[list[int]]
    if lm.task == "gap-filling":  # both sides once (two stacks), then a row per token
        costs = item_costs(lm, per, [len(t) for t in token_lists], token_lists, policy)
        costs[0] += 2 * per * (len(left) + len(right) + 2)
        groups = [list(range(len(costs)))]
    else:  # each candidate's whole sentence
        costs = item_costs(lm, per, [len(w) + 2 for w in whole], whole, policy)
        groups = slices(costs, slice_cost)
    costs[0] += history_cost(lm, history)
    todo = math.fsum(costs)
    yield todo
    method: FillMethod = "sentence"
    scores: list[CandidateScore] = []
    log_probs: list[float] = []
    for group in groups:
        with model_errors(name):
            method, part = lm.fill(left, right, [token_lists[i] for i in group], **after(history))
        scores += part
        log_probs += [math.fsum(oov_scored(lm, s, policy, req.oov_penalty)) for s in part]
        todo -= math.fsum(costs[i] for i in group)
        yield max(todo, 0.0)
    scored = sum(len(s.token_log_probs) for s in scores)  # whole sentences for the sentence method
    observe_scores(name, scored, sum(s.oov for s in scores), log_probs, len(scores))
    exact = method == "sentence" or all(len(t) == 1 for t in token_lists)
    return schemas.FillResponse(
        model=name,
        method=method,
        normalized=exact and policy != "penalty",
        oov=policy,
        left_tokens=left,
        right_tokens=right,
        results=candidate_results(req.candidates, scores, log_probs),
        warnings=unknown_words_warning(lm, [left, right, *token_lists], policy) + notes,
        history=read,
        cache=cache_used(lm),
        bias=bias_used(lm),
    )


def candidate_results(
    candidates: Sequence[str | list[str]], scores: list[CandidateScore], log_probs: list[float]
) -> list[schemas.CandidateResult]:
    """Results in request order; ``share`` renormalises the probabilities over the candidates."""
    shares = softmax(np.array(log_probs, dtype=np.float64)).tolist() if log_probs else []
    return [
        schemas.CandidateResult(
            candidate=c,
            tokens=s.tokens,
            log_prob=lp,
            probability=math.exp(lp),
            share=share,
            oov=s.oov,
        )
        for c, s, lp, share in zip(candidates, scores, log_probs, shares, strict=True)
    ]


def bounded_exp(x: float) -> float:
    """exp(x), capped at e^700 so a hopeless score stays a finite JSON number."""
    return math.exp(min(x, 700.0))
