"""Request and response bodies of the HTTP API: the contract clients code against.

Texts (``context``, ``left``, ``right``, candidates, sentences) are a string, tokenised with the
model's own tokenizer, or a list of tokens taken as they are. All log-probabilities are natural
logarithms (``log_base: "e"``) under the model's full softmax over its vocabulary.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints

from model.inference.bias import DEFAULT_WEIGHT as DEFAULT_BIAS_WEIGHT
from model.inference.bias import MAX_PHRASES
from model.inference.neural_cache import MAX_SIZE, MAX_THETA

# ``limit(name)`` marks a field whose bound is the server setting ``name`` (``max_tokens``...):
# the static bounds below are the outer walls; app.openapi writes the configured bound into the
# document (maxItems, maximum) and app.service enforces it with a 422 naming the field.
LIMIT_KEY = "x-nextword-limit"


def limit(setting: str) -> dict[str, JsonValue]:
    return {LIMIT_KEY: setting}


Token = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Tokens = Annotated[list[Token], Field(max_length=5_000, json_schema_extra=limit("max_tokens"))]
Text = Annotated[str, StringConstraints(max_length=20_000)] | Tokens
NonEmptyText = (
    Annotated[str, StringConstraints(min_length=1, max_length=20_000, pattern=r"\S")]
    | Annotated[
        list[Token],
        Field(min_length=1, max_length=5_000, json_schema_extra=limit("max_tokens")),
    ]
)
OovPolicy = Literal["spell", "unk", "penalty", "reject"]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class Strict(BaseModel):
    # a misspelt field is an error, not ignored; no coercion ("10" is not 10, false is not 0.0)
    model_config = ConfigDict(extra="forbid", strict=True)


WEIGHTS_DESCRIPTION = (
    "an interpolated model's component weights for this request, one per component in the "
    "order /v1/models lists them, each ≥ 0 (normalised to sum to 1); default: the fitted ones. "
    "A 422 for a single model."
)


class Weighted(Strict):
    weights: list[FiniteFloat] | None = Field(
        None, min_length=1, max_length=16, description=WEIGHTS_DESCRIPTION
    )


HISTORY_DESCRIPTION = (
    "the text that came before, oldest first: a string (cut into sentences at . ! ? 。！？ and "
    "blank lines), a list of sentences, or a list of token lists. A recurrent model reads it "
    "as running text before the request (<s> h1 </s> <s> h2 </s> <s> context ...), as it was "
    "trained; an n-gram model's context stops at <s>, so it changes nothing there (a warning "
    "says so). At most max_history_tokens tokens of it are read (NEXTWORD_MAX_HISTORY_TOKENS, "
    "<s> and </s> counted): the oldest are dropped, in steps of half that bound, so a history "
    "that grows by a sentence per call reuses the cached state of the rest. A list holds at "
    "most max_history_tokens sentences (send the last ones)"
)
Sentence = Annotated[str, StringConstraints(max_length=20_000)]
TokenList = Annotated[list[Token], Field(max_length=5_000)]
# a list holds at most max_history_tokens sentences (each is at least two tokens read)
HistoryText = (
    Annotated[str, StringConstraints(max_length=200_000)]
    | Annotated[
        list[Sentence], Field(max_length=10_000, json_schema_extra=limit("max_history_tokens"))
    ]
    | Annotated[
        list[TokenList], Field(max_length=10_000, json_schema_extra=limit("max_history_tokens"))
    ]
)


class CacheOptions(Strict):
    """This request's neural cache over the history (Grave et al. 2017): each word's
    probability mixed as (1 − weight) P_model + weight P_cache, P_cache(w) ∝ Σ_i exp(theta ·
    h·h_i) over the last ``size`` positions i read (the history and the sentence so far) whose
    next word was w. Fields left out keep the model's (/v1/models: cache); a model without a
    cache needs all three. ``weight`` 0 turns it off."""

    theta: FiniteFloat | None = Field(
        None, ge=0, le=MAX_THETA, description="how sharply a context must match a remembered one"
    )
    weight: FiniteFloat | None = Field(None, ge=0, lt=1, description="the cache's share, [0, 1)")
    size: int | None = Field(None, ge=1, le=MAX_SIZE, description="positions remembered")


class RerankUsed(BaseModel):
    """The weights a rerank combined its scores with."""

    lm_weight: float
    length_bonus: float


class CacheUsed(BaseModel):
    """The neural cache's settings (``nextword tune --text`` fits them)."""

    theta: float
    weight: float
    size: int


CACHE_DESCRIPTION = (
    "override the model's neural cache over the history for this request (or give a model "
    "without one a cache): theta, weight, size; each left out keeps the model's. A 422 for a "
    "model without a recurrent network (n-gram, gap-filling). Default: the model's own "
    "(/v1/models: cache), or none"
)


class BiasPhrase(Strict):
    text: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    boost: FiniteFloat = Field(
        1.0, gt=0, le=1000, description="its share among the phrases, relative to the others"
    )


class BiasOptions(Strict):
    """Phrases this request expects (the names on a meeting invite, a form's terms), mixed in
    as pseudo-history: each word's probability becomes (1 − cache weight − weight) P_model +
    cache weight P_cache + weight P_bias, P_bias(w) ∝ Σ_j boost_j / n_j exp(theta · h·k_j) over
    the phrases' words j (k_j: the network's output before the word, each phrase read alone),
    so a phrase's words are likelier everywhere and its continuation more so after its start.
    Exactly normalised; a word outside the vocabulary is named by its string."""

    phrases: list[Annotated[str, StringConstraints(min_length=1, max_length=500)] | BiasPhrase] = (
        Field(min_length=1, max_length=MAX_PHRASES, description="strings, or {text, boost}")
    )
    weight: FiniteFloat = Field(
        DEFAULT_BIAS_WEIGHT, gt=0, lt=1, description="the phrases' share of the probability"
    )
    theta: FiniteFloat | None = Field(
        None, ge=0, le=MAX_THETA,
        description="how much a phrase's continuation is favoured after its start (0: not "
        "at all); default: the model's cache theta, else 0.5",
    )  # fmt: skip


class BiasUsed(BaseModel):
    """The bias mixed in: how many phrases, their share and theta."""

    phrases: int
    weight: float
    theta: float


class WithHistory(Weighted):
    history: HistoryText | None = Field(
        None, description=HISTORY_DESCRIPTION, json_schema_extra=limit("max_history_tokens")
    )
    cache: CacheOptions | None = Field(None, description=CACHE_DESCRIPTION)
    bias: BiasOptions | None = Field(
        None,
        description="phrases to expect (names, terms), in or out of the vocabulary, mixed in "
        "as pseudo-history; a 422 for a model without a recurrent network",
    )


class OovOptions(WithHistory):
    model: str | None = Field(
        None, description="a loaded model's name; default: the server's default model"
    )
    oov: OovPolicy | None = Field(
        None,
        description="words outside the vocabulary: 'spell' gives each its share of <unk>'s "
        "probability by its spelling (an open vocabulary: every word, known or not, has a "
        "probability, and they sum to 1); 'unk' gives each the whole probability of <unk> (that "
        "the next word is some word outside the vocabulary); 'penalty' the fixed "
        "log-probability oov_penalty; 'reject' answers 422 naming them. Default: 'spell' for a "
        "model with a spelling model (/v1/models: open_vocabulary), else 'unk'",
    )
    oov_penalty: FiniteFloat | None = Field(
        None, ge=-100, le=0, description="log-probability given to each OOV token (-100 to 0)"
    )


class HistoryRead(BaseModel):
    """How much of the request's ``history`` the model read."""

    sentences: int = Field(description="sentences read, whole or in part")
    tokens: int = Field(description="tokens read, <s> and </s> counted (0: the model reads none)")
    dropped: int = Field(description="the oldest tokens left out, over max_history_tokens")


class ScoreMeta(BaseModel):
    model: str
    log_base: Literal["e"] = "e"
    normalized: bool = Field(
        True,
        description="probabilities are exactly normalised: over every word with oov='spell', "
        "over the vocabulary (<unk> standing for every word outside it) with 'unk'; false with "
        "'penalty'",
    )
    oov: OovPolicy | None = Field(
        None, description="the policy that scored words outside the vocabulary (none: predict)"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what makes the answer less telling than it looks, e.g. every word of the "
        "request outside the model's vocabulary (text in another language or script)",
    )
    history: HistoryRead | None = Field(
        None, description="how much of the request's history was read; null: none was given"
    )
    cache: CacheUsed | None = Field(
        None,
        description="the neural cache mixed into these scores (the model's, or the request's "
        "override); null: none",
    )
    bias: BiasUsed | None = Field(None, description="the bias mixed in; null: none")


# ---------------------------------------------------------------- /v1/candidates
class CandidatesRequest(OovOptions):
    context: Text = Field("", description="the words before the gap; empty = start of a sentence")
    candidates: list[NonEmptyText] = Field(
        min_length=1,
        description="words or phrases that may come next",
        json_schema_extra=limit("max_candidates"),
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"context": "the time", "candidates": ["traveller", "travel her", "machine"]}
            ]
        },
    )


class CandidateResult(BaseModel):
    candidate: str | list[str]  # as given
    tokens: list[str]
    log_prob: float  # log P(candidate | <s> context), chain rule over its tokens
    probability: float  # exp(log_prob)
    share: float  # probability renormalised over the request's candidates (they sum to 1)
    oov: bool  # any token outside the vocabulary


class CandidatesResponse(ScoreMeta):
    context_tokens: list[str]
    context_oov_positions: list[int]
    results: list[CandidateResult]


# ---------------------------------------------------------------- /v1/predict
class PredictRequest(WithHistory):
    model: str | None = None
    context: Text = ""
    k: int = Field(
        10,
        ge=1,
        description="how many words (at most the server's max_k)",
        json_schema_extra=limit("max_k"),
    )
    include_special: bool = Field(False, description="also return <unk>, <s>, </s>")

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"context": "the time traveller", "k": 5}]}
    )


class Prediction(BaseModel):
    word: str
    probability: float
    log_prob: float


class PredictResponse(ScoreMeta):
    context_tokens: list[str]
    predictions: list[Prediction]


# ---------------------------------------------------------------- /v1/score
class ScoreRequest(OovOptions):
    sentences: list[Text] = Field(min_length=1, json_schema_extra=limit("max_sentences"))
    bos: bool = Field(
        True, description="read <s> first and score every token; false: the first token is given"
    )
    eos: bool = Field(True, description="also score </s> after the last token")

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"sentences": ["the time traveller smiled", "the time travel her smiled"]}]
        },
    )


class SentenceResult(BaseModel):
    tokens: list[str]
    targets: list[str]  # the scored tokens, in order ("</s>" last when eos)
    log_prob: float
    token_log_probs: list[float]  # one per target
    perplexity: float
    oov_count: int
    oov_positions: list[int]  # indices into tokens


class ScoreResponse(ScoreMeta):
    results: list[SentenceResult]


# ---------------------------------------------------------------- /v1/rerank
class Hypothesis(Strict):
    text: Text
    score: FiniteFloat = Field(
        0.0, ge=-1e9, le=1e9, description="the decoder's own score (acoustic/optical), log domain"
    )


class RerankRequest(OovOptions):
    hypotheses: list[Hypothesis] = Field(min_length=1, json_schema_extra=limit("max_sentences"))
    lm_weight: FiniteFloat | None = Field(
        None, ge=-1e3, le=1e3,
        description="weight of the LM log-probability; default: the model's tuned one "
        "(/v1/models: rerank, from `nextword tune --nbest`), else 0.5",
    )  # fmt: skip
    length_bonus: FiniteFloat | None = Field(
        None, ge=-1e3, le=1e3,
        description="added per token; default: the model's tuned one, else 0",
    )  # fmt: skip
    bos: bool = True
    eos: bool = True

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "hypotheses": [
                        {"text": "the time traveller smiled at us", "score": -12.1},
                        {"text": "the time travel her smiled at us", "score": -11.9},
                    ],
                    "lm_weight": 0.5,
                }
            ]
        },
    )


class RankedHypothesis(BaseModel):
    index: int  # position in the request
    text: str | list[str]
    tokens: list[str]
    score: float
    lm_log_prob: float
    n_tokens: int
    combined: float  # score + lm_weight * lm_log_prob + length_bonus * n_tokens


class RerankResponse(ScoreMeta):
    hypotheses: list[RankedHypothesis]  # best first
    weights: RerankUsed = Field(description="the lm_weight and length_bonus applied")


# ---------------------------------------------------------------- /v1/fill
class FillRequest(OovOptions):
    left: Text = Field("", description="the words before the gap; empty = the start of a sentence")
    right: Text = Field("", description="the words after the gap; empty = the end of a sentence")
    candidates: list[NonEmptyText] = Field(
        min_length=1, description="what may fill the gap", json_schema_extra=limit("max_candidates")
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "left": "the time",
                    "right": "smiled at us",
                    "candidates": ["traveller", "travel her", "machine"],
                }
            ]
        },
    )


class FillResponse(ScoreMeta):
    method: Literal["bidirectional", "sentence"] = Field(
        description="bidirectional: a gap-filling model's P(candidate | left, right) (pseudo-log-"
        "likelihood for several tokens); sentence: log P(left candidate right) under a "
        "left-to-right model"
    )
    left_tokens: list[str]
    right_tokens: list[str]
    results: list[CandidateResult]


# ---------------------------------------------------------------- models and health
class VocabEntry(BaseModel):
    token: str
    id: int
    count: int


class VocabPage(BaseModel):
    model: str
    total: int  # tokens matching the prefix
    offset: int
    limit: int
    tokens: list[VocabEntry]


class VocabMembership(BaseModel):
    model: str
    token: str
    in_vocabulary: bool
    id: int | None
    count: int | None


class TrainingCorpus(BaseModel):
    file: str  # the file's name only: no server paths in answers
    sha256: str | None


class PrefixCacheStats(BaseModel):
    entries: int
    bytes: int
    hits: int
    misses: int


class OpenVocabulary(BaseModel):
    """How the model scores words outside its vocabulary by default (``oov: "spell"``)."""

    method: str = Field(description="char-kneser-ney: a character n-gram shares out <unk>")
    order: int = Field(description="the character n-gram's order")
    characters: int = Field(description="characters seen in training; others share a floor")
    source: str | None = Field(None, description="what it learnt from")
    types: int | None = Field(None, description="word types it learnt from")


class ModelDescription(BaseModel):
    """What /v1/models says about one model. Training metadata is shown field by field where
    it has the expected type and is null otherwise, so a hand-edited checkpoint still serves."""

    name: str
    checkpoint: str = Field(description="the checkpoint directory's name")
    task: str = Field(description="next-word or gap-filling: what the model predicts")
    architecture: dict[str, Any] = Field(description="the network, as in config.json's model")
    parameters: int
    bidirectional: bool = Field(description="a gap-filling model (it serves /v1/fill only)")
    endpoints: list[str] = Field(description="the scoring endpoints this model serves")
    vocab_size: int
    tokenizer: dict[str, Any]
    training_corpus: TrainingCorpus | None
    training_tokens: int | float | None
    valid_perplexity: int | float | None
    test_perplexity: int | float | None
    epoch: int | float | None
    trained_at: str | None
    checksum: str | None = Field(description="sha256 of the weights file")
    loaded_at: str = Field(description="UTC, ISO 8601")
    load_seconds: float
    network_steps: int = Field(description="network time steps computed for requests so far")
    prefix_cache: PrefixCacheStats | None
    open_vocabulary: OpenVocabulary | None = Field(
        None,
        description="how words outside the vocabulary are scored by default; null: the whole "
        "<unk> probability (add one with `nextword spell`)",
    )
    cache: CacheUsed | None = Field(
        None,
        description="the neural cache over the history mixed into every score by default "
        "(fitted with `nextword tune --text`); null: none",
    )
    rerank: RerankUsed | None = Field(
        None,
        description="/v1/rerank's default weights, tuned on N-best lists with `nextword tune "
        "--nbest`; null: 0.5 and 0",
    )


class ModelList(BaseModel):
    default: str
    models: list[ModelDescription]


# ---------------------------------------------------------------- errors
class ErrorResponse(BaseModel):
    """Every 4xx and 5xx body: ``detail`` says what is wrong and names the field."""

    detail: str
    field: str | None = None  # the request field at fault, when there is one
    errors: list[dict[str, Any]] | None = None  # schema violations: type, loc, msg of each
    oov: dict[str, list[str]] | None = None  # oov="reject": the unknown words, by field


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` documenting the error codes a route can answer."""
    meaning = {
        400: "the body is not valid JSON, or not a JSON object",
        401: "wrong token",
        403: "disabled",
        404: "unknown model",
        408: "the request body did not arrive in time",
        409: "conflict",
        413: "the request body is over the size limit",
        422: "a field is invalid or over a limit; detail names it",
        503: "the models are loading (Retry-After)",
    }
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in codes}
