"""A small typed client for the nextword HTTP API, synchronous and asynchronous (httpx).

    from app.client import NextwordClient

    with NextwordClient("http://127.0.0.1:8000") as lm:
        best = lm.rerank([("i want to book a flight", -4.1), ("eye want two book a flight", -3.9)])
        print(best.hypotheses[0].text)

Responses are the pydantic models of ``app.schemas``; an error answer raises ``NextwordError``
with the status code and the server's message.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from app import schemas

Text = str | list[str]
Response = TypeVar("Response", bound=BaseModel)
HypothesisLike = tuple[Text, float] | dict[str, Any] | schemas.Hypothesis


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


def _body(**fields: Any) -> dict[str, Any]:
    """The JSON body: options left as None are not sent, so the server's defaults apply."""
    return {k: v for k, v in fields.items() if v is not None}


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

    def _candidates(self, context: Text, candidates: Sequence[Text], **opts: Any) -> dict[str, Any]:
        return _body(context=context, candidates=list(candidates), model=self.model, **opts)

    def _predict(self, context: Text, k: int, **opts: Any) -> dict[str, Any]:
        return _body(context=context, k=k, model=self.model, **opts)

    def _score(self, sentences: Sequence[Text], **opts: Any) -> dict[str, Any]:
        return _body(sentences=list(sentences), model=self.model, **opts)

    def _rerank(self, hypotheses: Sequence[HypothesisLike], **opts: Any) -> dict[str, Any]:
        return _body(hypotheses=_hypotheses(hypotheses), model=self.model, **opts)

    def _fill(
        self, left: Text, right: Text, candidates: Sequence[Text], **opts: Any
    ) -> dict[str, Any]:
        return _body(left=left, right=right, candidates=list(candidates), model=self.model, **opts)


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
        self, context: Text, candidates: Sequence[Text], **opts: Any
    ) -> schemas.CandidatesResponse:
        """log P of each candidate after ``context``; opts: oov, oov_penalty."""
        response = self.http.post(
            "/v1/candidates", json=self._candidates(context, candidates, **opts)
        )
        return _parse(response, schemas.CandidatesResponse)

    def predict(self, context: Text, k: int = 10, **opts: Any) -> schemas.PredictResponse:
        return _parse(
            self.http.post("/v1/predict", json=self._predict(context, k, **opts)),
            schemas.PredictResponse,
        )

    def score(self, sentences: Sequence[Text], **opts: Any) -> schemas.ScoreResponse:
        """Sentence log-probabilities; opts: bos, eos, oov, oov_penalty."""
        return _parse(
            self.http.post("/v1/score", json=self._score(sentences, **opts)), schemas.ScoreResponse
        )

    def rerank(self, hypotheses: Sequence[HypothesisLike], **opts: Any) -> schemas.RerankResponse:
        """N-best rescoring, best first; (text, score) pairs; opts: lm_weight, length_bonus."""
        return _parse(
            self.http.post("/v1/rerank", json=self._rerank(hypotheses, **opts)),
            schemas.RerankResponse,
        )

    def fill(
        self, left: Text, right: Text, candidates: Sequence[Text], **opts: Any
    ) -> schemas.FillResponse:
        """Candidates for the gap between ``left`` and ``right``; opts: oov, oov_penalty."""
        response = self.http.post("/v1/fill", json=self._fill(left, right, candidates, **opts))
        return _parse(response, schemas.FillResponse)

    def models(self) -> dict[str, Any]:
        response = self.http.get("/v1/models")
        if response.status_code >= 400:
            raise NextwordError(response.status_code, response.text)
        body: dict[str, Any] = response.json()
        return body

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
        self, context: Text, candidates: Sequence[Text], **opts: Any
    ) -> schemas.CandidatesResponse:
        response = await self.http.post(
            "/v1/candidates", json=self._candidates(context, candidates, **opts)
        )
        return _parse(response, schemas.CandidatesResponse)

    async def predict(self, context: Text, k: int = 10, **opts: Any) -> schemas.PredictResponse:
        response = await self.http.post("/v1/predict", json=self._predict(context, k, **opts))
        return _parse(response, schemas.PredictResponse)

    async def score(self, sentences: Sequence[Text], **opts: Any) -> schemas.ScoreResponse:
        response = await self.http.post("/v1/score", json=self._score(sentences, **opts))
        return _parse(response, schemas.ScoreResponse)

    async def rerank(
        self, hypotheses: Sequence[HypothesisLike], **opts: Any
    ) -> schemas.RerankResponse:
        response = await self.http.post("/v1/rerank", json=self._rerank(hypotheses, **opts))
        return _parse(response, schemas.RerankResponse)

    async def fill(
        self, left: Text, right: Text, candidates: Sequence[Text], **opts: Any
    ) -> schemas.FillResponse:
        response = await self.http.post(
            "/v1/fill", json=self._fill(left, right, candidates, **opts)
        )
        return _parse(response, schemas.FillResponse)

    async def models(self) -> dict[str, Any]:
        response = await self.http.get("/v1/models")
        if response.status_code >= 400:
            raise NextwordError(response.status_code, response.text)
        body: dict[str, Any] = response.json()
        return body

    async def ready(self) -> bool:
        return (await self.http.get("/readyz")).status_code == 200
