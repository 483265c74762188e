"""A small typed client for the nextword HTTP API, synchronous and asynchronous (httpx).

    from app.client import NextwordClient

    with NextwordClient("http://127.0.0.1:8000") as lm:
        best = lm.rerank([("the time traveller smiled", -4.1), ("the time travel her", -3.9)])
        print(best.hypotheses[0].text)

Responses are the pydantic models of ``app.schemas``; an error answer raises ``NextwordError``
with the status code and the server's message. Every scoring call takes its endpoint's options
as typed keywords (``OovOptions``, ``ScoreOptions``...), ``model=`` included: it overrides the
client's model for that call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import httpx
from pydantic import BaseModel

from app import schemas

Text = str | list[str]
Response = TypeVar("Response", bound=BaseModel)
HypothesisLike = tuple[Text, float] | dict[str, Any] | schemas.Hypothesis


class Options(TypedDict, total=False):
    """Options every scoring call takes; left out, the server's defaults apply."""

    model: str  # a loaded model's name; default: the client's ``model``, else the server's
    weights: list[float]  # an interpolated model's component weights for this call
    # the text that came before: a string, a list of sentences or of token lists (oldest first)
    history: str | list[str] | list[list[str]]
    # the neural cache over the history for this call: any of "theta", "weight", "size"
    # (left out: the model's own; {"weight": 0} turns it off)
    cache: dict[str, float | int]
    # phrases this call expects: {"phrases": ["Weena", {"text": "Filby", "boost": 2}],
    # "weight": 0.05, "theta": 0.5} (weight and theta optional)
    bias: dict[str, Any]


class OovOptions(Options, total=False):
    oov: schemas.OovPolicy  # "spell", "unk", "penalty" or "reject"; default: the model's
    oov_penalty: float  # with oov="penalty": each unknown token's log-probability (≤ 0)


class PredictOptions(Options, total=False):
    include_special: bool  # also <unk>, <s>, </s>


class ScoreOptions(OovOptions, total=False):
    bos: bool  # read <s> first and score every token (default true)
    eos: bool  # also score </s> (default true)


class RerankOptions(ScoreOptions, total=False):
    lm_weight: float  # combined = score + lm_weight · lm_log_prob + length_bonus · n_tokens
    length_bonus: float


class NextwordError(RuntimeError):
    """The server answered with an error status; ``detail`` is its message."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"{status}: {detail}")
        self.status, self.detail = status, detail


def _hypotheses(items: Sequence[HypothesisLike]) -> list[dict[str, Any]]:
    out = []
    for h in items:
        if isinstance(h, schemas.Hypothesis):
            out.append(h.model_dump())
        elif isinstance(h, dict):
            out.append(h)
        else:
            out.append({"text": h[0], "score": h[1]})
    return out


def _parse(response: httpx.Response, model: type[Response]) -> Response:
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        detail = body.get("detail", response.text) if isinstance(body, dict) else response.text
        raise NextwordError(response.status_code, detail)
    return model.model_validate(response.json())


class _Calls:
    """Request bodies shared by both clients (one place that knows the API's field names)."""

    model: str | None

    def _body(self, fields: dict[str, Any], options: Options) -> dict[str, Any]:
        """The JSON body: the call's ``model`` option, else the client's; options left out (or
        None) are not sent, so the server's defaults apply."""
        body = {"model": self.model} | fields | dict(options)
        return {k: v for k, v in body.items() if v is not None}

    def _candidates(
        self, context: Text, candidates: Sequence[Text], options: OovOptions
    ) -> dict[str, Any]:
        return self._body({"context": context, "candidates": list(candidates)}, options)

    def _predict(self, context: Text, k: int, options: PredictOptions) -> dict[str, Any]:
        return self._body({"context": context, "k": k}, options)

    def _score(self, sentences: Sequence[Text], options: ScoreOptions) -> dict[str, Any]:
        return self._body({"sentences": list(sentences)}, options)

    def _rerank(
        self, hypotheses: Sequence[HypothesisLike], options: RerankOptions
    ) -> dict[str, Any]:
        return self._body({"hypotheses": _hypotheses(hypotheses)}, options)

    def _fill(
        self, left: Text, right: Text, candidates: Sequence[Text], options: OovOptions
    ) -> dict[str, Any]:
        fields = {"left": left, "right": right, "candidates": list(candidates)}
        return self._body(fields, options)


class NextwordClient(_Calls):
    """Blocking client. ``model`` selects a loaded model for every call (None: the default)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        model: str | None = None,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.model = model
        self.http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport)

    def __enter__(self) -> NextwordClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def candidates(
        self, context: Text, candidates: Sequence[Text], **options: Unpack[OovOptions]
    ) -> schemas.CandidatesResponse:
        """log P of each candidate after ``context``."""
        body = self._candidates(context, candidates, options)
        return _parse(self.http.post("/v1/candidates", json=body), schemas.CandidatesResponse)

    def predict(
        self, context: Text = "", k: int = 10, **options: Unpack[PredictOptions]
    ) -> schemas.PredictResponse:
        """The ``k`` most probable next words, most probable first."""
        body = self._predict(context, k, options)
        return _parse(self.http.post("/v1/predict", json=body), schemas.PredictResponse)

    def score(
        self, sentences: Sequence[Text], **options: Unpack[ScoreOptions]
    ) -> schemas.ScoreResponse:
        """Sentence log-probabilities, token by token."""
        body = self._score(sentences, options)
        return _parse(self.http.post("/v1/score", json=body), schemas.ScoreResponse)

    def rerank(
        self, hypotheses: Sequence[HypothesisLike], **options: Unpack[RerankOptions]
    ) -> schemas.RerankResponse:
        """N-best rescoring, best first; hypotheses as (text, score) pairs."""
        body = self._rerank(hypotheses, options)
        return _parse(self.http.post("/v1/rerank", json=body), schemas.RerankResponse)

    def fill(
        self, left: Text, right: Text, candidates: Sequence[Text], **options: Unpack[OovOptions]
    ) -> schemas.FillResponse:
        """Candidates for the gap between ``left`` and ``right``."""
        body = self._fill(left, right, candidates, options)
        return _parse(self.http.post("/v1/fill", json=body), schemas.FillResponse)

    def models(self) -> schemas.ModelList:
        """Every loaded model and the default."""
        return _parse(self.http.get("/v1/models"), schemas.ModelList)

    def describe(self, name: str) -> schemas.ModelDescription:
        """One loaded model (404 as NextwordError when there is none of that name)."""
        response = self.http.get(f"/v1/models/{quote(name, safe='')}")
        return _parse(response, schemas.ModelDescription)

    def ready(self) -> bool:
        return self.http.get("/readyz").status_code == 200


class AsyncNextwordClient(_Calls):
    """The same calls for asyncio code (a decoder running its own event loop)."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        model: str | None = None,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.model = model
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport)

    async def __aenter__(self) -> AsyncNextwordClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.aclose()

    async def candidates(
        self, context: Text, candidates: Sequence[Text], **options: Unpack[OovOptions]
    ) -> schemas.CandidatesResponse:
        body = self._candidates(context, candidates, options)
        response = await self.http.post("/v1/candidates", json=body)
        return _parse(response, schemas.CandidatesResponse)

    async def predict(
        self, context: Text = "", k: int = 10, **options: Unpack[PredictOptions]
    ) -> schemas.PredictResponse:
        response = await self.http.post("/v1/predict", json=self._predict(context, k, options))
        return _parse(response, schemas.PredictResponse)

    async def score(
        self, sentences: Sequence[Text], **options: Unpack[ScoreOptions]
    ) -> schemas.ScoreResponse:
        response = await self.http.post("/v1/score", json=self._score(sentences, options))
        return _parse(response, schemas.ScoreResponse)

    async def rerank(
        self, hypotheses: Sequence[HypothesisLike], **options: Unpack[RerankOptions]
    ) -> schemas.RerankResponse:
        response = await self.http.post("/v1/rerank", json=self._rerank(hypotheses, options))
        return _parse(response, schemas.RerankResponse)

    async def fill(
        self, left: Text, right: Text, candidates: Sequence[Text], **options: Unpack[OovOptions]
    ) -> schemas.FillResponse:
        body = self._fill(left, right, candidates, options)
        return _parse(await self.http.post("/v1/fill", json=body), schemas.FillResponse)

    async def models(self) -> schemas.ModelList:
        return _parse(await self.http.get("/v1/models"), schemas.ModelList)

    async def describe(self, name: str) -> schemas.ModelDescription:
        response = await self.http.get(f"/v1/models/{quote(name, safe='')}")
        return _parse(response, schemas.ModelDescription)

    async def ready(self) -> bool:
        return (await self.http.get("/readyz")).status_code == 200
