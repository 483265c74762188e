"""``bias`` in the service: phrases on every endpoint and the client, the open vocabulary's
view of a biased word, reported in every answer, refused clearly where it cannot apply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import pytest

from app.client import AsyncNextwordClient
from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.bias import Bias
from model.inference.history import history_window
from model.inference.neural_cache import CacheSettings
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.inference.spelling import SpellingModel
from model.ngram.kneser_ney import estimate
from model.text.tokenize import Tokenizer
from tests.app.test_cache import every_endpoint, numbers
from tests.model.test_history import TEXT

pytestmark = pytest.mark.anyio
HISTORY = [" ".join(s) for s in TEXT[:3]]
BIAS = {"phrases": ["weena", {"text": "the dog ran", "boost": 2.0}], "weight": 0.2, "theta": 0.6}
MODEL_BIAS = Bias((("weena",), ("the", "dog", "ran")), (1.0, 2.0), 0.2, 0.6)


@pytest.fixture
def rnn(tiny_lm: RecurrentLM) -> RecurrentLM:
    tiny_lm.use_spelling(SpellingModel.train([*tiny_lm.vocab.tokens, "weena", "filby"]))
    return tiny_lm


@pytest.fixture
async def client(rnn: RecurrentLM) -> AsyncIterator[httpx.AsyncClient]:
    vocab = rnn.vocab
    kn = NgramLM(estimate([vocab.encode(s) for s in TEXT], len(vocab), 2), vocab,
                 Tokenizer("whitespace"))  # fmt: skip
    cached = rnn.with_cache(CacheSettings(0.8, 0.3, 20))
    models = {"rnn": rnn, "kn": kn, "cached": cached}
    app = create_app(Settings(), ModelRegistry.from_models(models, default="rnn"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        yield c


async def test_every_endpoint_mixes_the_bias_and_says_so(
    client: httpx.AsyncClient, rnn: RecurrentLM
) -> None:
    answers = await every_endpoint(client, {"bias": BIAS})
    prefix = history_window(TEXT[:3], 1000).tokens
    (score,) = rnn.with_bias(MODEL_BIAS).score_sentences([TEXT[3]], prefix=prefix)
    lps = score.token_log_probs
    whole = float(np.sum(lps))
    want = {"score": whole, "rerank": whole, "candidates": lps[2], "predict": lps[2],
            "fill": whole}  # fmt: skip
    assert numbers(answers) == pytest.approx(want, abs=1e-9)
    reported = {"phrases": 2, "weight": 0.2, "theta": 0.6}
    assert {name: a["bias"] for name, a in answers.items()} == dict.fromkeys(answers, reported)
    plain = await every_endpoint(client, {})
    assert all(a["bias"] is None for a in plain.values())
    assert numbers(plain)["score"] != pytest.approx(whole, abs=1e-3)


async def test_a_biased_name_outside_the_vocabulary_is_named_under_spell(
    client: httpx.AsyncClient,
) -> None:
    body: dict[str, Any] = {"context": "the cat", "candidates": ["weena", "filby"]}
    plain = (await client.post("/v1/candidates", json=body)).json()["results"]
    biased = (await client.post("/v1/candidates", json=body | {"bias": BIAS})).json()["results"]
    assert biased[0]["log_prob"] > plain[0]["log_prob"] + 1  # the phrase
    assert biased[1]["log_prob"] == pytest.approx(plain[1]["log_prob"] + np.log(0.8))  # not one
    unk = (await client.post("/v1/candidates", json=body | {"bias": BIAS, "oov": "unk"})).json()
    assert unk["results"][0]["log_prob"] == unk["results"][1]["log_prob"]  # both <unk>


async def test_the_bias_follows_the_models_cache_theta_by_default(
    client: httpx.AsyncClient,
) -> None:
    body = {"model": "cached", "sentences": ["the dog"], "bias": {"phrases": ["york"]}}
    r = await client.post("/v1/score", json=body)
    assert r.json()["bias"] == {"phrases": 1, "weight": 0.05, "theta": 0.8}
    r = await client.post("/v1/score", json=body | {"model": "rnn"})
    assert r.json()["bias"] == {"phrases": 1, "weight": 0.05, "theta": 0.5}


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"model": "kn", "bias": {"phrases": ["york"]}}, "bias", "hidden states"),
        ({"bias": {"phrases": []}}, "bias.phrases", "at least 1"),
        ({"bias": {"phrases": ["  "]}}, "bias.phrases[0]", "0 tokens"),
        ({"bias": {"phrases": [" ".join(["a"] * 17)]}}, "bias.phrases[0]", "17 tokens"),
        ({"bias": {"phrases": ["a"], "weight": 1}}, "bias.weight", "less than 1"),
        ({"bias": {"phrases": [{"text": "a", "boost": 0}]}}, "boost", "greater than 0"),
        ({"bias": {"phrases": ["a"] * 201}}, "bias.phrases", "at most 200"),
        ({"model": "cached", "bias": {"phrases": ["a"], "weight": 0.7}}, "bias",
         "less than 1"),
    ],
)  # fmt: skip
async def test_a_bias_that_cannot_apply_is_a_422_naming_the_field(
    client: httpx.AsyncClient, extra: dict[str, Any], field: str, message: str
) -> None:
    for endpoint, base in (
        ("score", {"sentences": ["the cat"]}),
        ("candidates", {"context": "the", "candidates": ["cat"]}),
        ("predict", {"context": "the"}),
    ):
        r = await client.post(f"/v1/{endpoint}", json={**base, **extra})
        assert r.status_code == 422, (endpoint, r.text)
        assert field in r.text and message in r.text, (endpoint, r.text)


async def test_the_client_sends_a_bias(rnn: RecurrentLM) -> None:
    transport = httpx.ASGITransport(app=create_app(Settings(), ModelRegistry.from_models(
        {"rnn": rnn})))  # fmt: skip
    async with AsyncNextwordClient("http://t", transport=transport) as lm:
        scored = await lm.score([" ".join(TEXT[3])], history=HISTORY, bias=BIAS)
    assert scored.bias is not None and scored.bias.phrases == 2
    prefix = history_window(TEXT[:3], 1000).tokens
    (want,) = rnn.with_bias(MODEL_BIAS).score_sentences([TEXT[3]], prefix=prefix)
    assert scored.results[0].token_log_probs == pytest.approx(want.token_log_probs, abs=1e-9)
