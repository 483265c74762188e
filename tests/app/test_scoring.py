"""/v1/candidates, /v1/predict, /v1/score, /v1/rerank: the numbers are the model library's."""

from __future__ import annotations

import math

import httpx
import pytest

from model.inference.recurrent_lm import RecurrentLM

pytestmark = pytest.mark.anyio


async def test_candidates_are_the_library_numbers_in_request_order(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM
) -> None:
    body = {"context": "the cat", "candidates": ["sat", "new york", ["on", "the"], "zebra"]}
    r = await client.post("/v1/candidates", json=body)
    assert r.status_code == 200
    data = r.json()
    assert data["model"] == "tiny" and data["log_base"] == "e" and data["normalized"] is True
    assert data["context_tokens"] == ["the", "cat"]
    expected = tiny_lm.score_candidates("the cat", ["sat", "new york", "on the", "zebra"])
    assert [x["candidate"] for x in data["results"]] == body["candidates"]
    for got, want in zip(data["results"], expected, strict=True):
        assert got["tokens"] == want.tokens
        assert got["log_prob"] == pytest.approx(want.log_prob, abs=1e-12)
        assert got["probability"] == pytest.approx(math.exp(want.log_prob))
        assert got["oov"] == want.oov
    assert sum(x["share"] for x in data["results"]) == pytest.approx(1.0, abs=1e-12)
    probabilities = [x["probability"] for x in data["results"]]
    assert [x["share"] for x in data["results"]] == pytest.approx(
        [p / sum(probabilities) for p in probabilities]
    )


async def test_an_empty_context_is_the_start_of_a_sentence(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM
) -> None:
    r = await client.post("/v1/candidates", json={"candidates": ["the"]})
    want = tiny_lm.next_log_probs([])[tiny_lm.vocab.id("the")]
    assert r.json()["results"][0]["log_prob"] == pytest.approx(want)


async def test_a_request_can_name_another_model(
    client: httpx.AsyncClient, other_lm: RecurrentLM
) -> None:
    r = await client.post(
        "/v1/candidates", json={"model": "other", "context": "a", "candidates": ["cat"]}
    )
    assert r.json()["model"] == "other"
    assert r.json()["results"][0]["log_prob"] == pytest.approx(
        other_lm.score_candidates("a", ["cat"])[0].log_prob
    )


async def test_predict_returns_the_top_k_without_special_tokens(
    client: httpx.AsyncClient, tiny_lm: RecurrentLM
) -> None:
    r = await client.post("/v1/predict", json={"context": ["the"], "k": 4})
    data = r.json()
    assert [p["word"] for p in data["predictions"]] == [w for w, _ in tiny_lm.top_k(["the"], 4)]
    for p in data["predictions"]:
        assert p["probability"] == pytest.approx(math.exp(p["log_prob"]))
    everything = (
        await client.post("/v1/predict", json={"context": "the", "k": 20, "include_special": True})
    ).json()
    assert "</s>" in [p["word"] for p in everything["predictions"]]


async def test_score_equals_the_sum_of_candidate_log_probs_step_by_step(
    client: httpx.AsyncClient,
) -> None:
    words = ["the", "dog", "ran", "on", "the", "mat"]
    scored = (await client.post("/v1/score", json={"sentences": [" ".join(words)]})).json()[
        "results"
    ][0]
    steps = []
    for k, word in enumerate([*words, "</s>"]):
        r = await client.post("/v1/candidates", json={"context": words[:k], "candidates": [[word]]})
        steps.append(r.json()["results"][0]["log_prob"])
    assert scored["token_log_probs"] == pytest.approx(steps, abs=1e-10)
    assert scored["log_prob"] == pytest.approx(sum(steps), abs=1e-10)
    assert scored["perplexity"] == pytest.approx(math.exp(-sum(steps) / len(steps)))


async def test_score_in_a_batch_equals_one_at_a_time_and_keeps_request_order(
    client: httpx.AsyncClient,
) -> None:
    sentences = ["the cat sat on the mat", "dog", "new york zebra", ""]
    batch = (await client.post("/v1/score", json={"sentences": sentences})).json()["results"]
    for sentence, together in zip(sentences, batch, strict=True):
        alone = (await client.post("/v1/score", json={"sentences": [sentence]})).json()["results"][
            0
        ]
        assert together["tokens"] == sentence.split()
        assert together["token_log_probs"] == pytest.approx(alone["token_log_probs"], abs=1e-9)
    assert batch[2]["oov_count"] == 1 and batch[2]["oov_positions"] == [2]


@pytest.mark.parametrize(
    ("bos", "eos", "targets"),
    [(True, True, 4), (True, False, 3), (False, True, 3), (False, False, 2)],
)
async def test_bos_and_eos_decide_which_tokens_are_scored(
    client: httpx.AsyncClient, bos: bool, eos: bool, targets: int
) -> None:
    r = await client.post("/v1/score", json={"sentences": ["the cat sat"], "bos": bos, "eos": eos})
    result = r.json()["results"][0]
    assert len(result["token_log_probs"]) == len(result["targets"]) == targets
    assert result["targets"][-1] == ("</s>" if eos else "sat")


async def test_rerank_orders_by_the_combined_score(client: httpx.AsyncClient) -> None:
    hypotheses = [
        {"text": "the cat sat on the mat", "score": -10.0},
        {"text": "the cat sat on the", "score": -9.0},
        {"text": "zebra cat mat", "score": -2.0},
    ]
    body = {"hypotheses": hypotheses, "lm_weight": 0.7, "length_bonus": 0.3}
    ranked = (await client.post("/v1/rerank", json=body)).json()["hypotheses"]
    lm = (
        await client.post("/v1/score", json={"sentences": [h["text"] for h in hypotheses]})
    ).json()["results"]
    for h in ranked:
        i = h["index"]
        assert h["text"] == hypotheses[i]["text"] and h["score"] == hypotheses[i]["score"]
        assert h["lm_log_prob"] == pytest.approx(lm[i]["log_prob"])
        n = len(hypotheses[i]["text"].split())
        assert h["n_tokens"] == n
        assert h["combined"] == pytest.approx(
            hypotheses[i]["score"] + 0.7 * lm[i]["log_prob"] + 0.3 * n
        )
    assert [h["combined"] for h in ranked] == sorted((h["combined"] for h in ranked), reverse=True)
    assert sorted(h["index"] for h in ranked) == [0, 1, 2]


async def test_oov_policies(client: httpx.AsyncClient, tiny_lm: RecurrentLM) -> None:
    body = {"context": "the zebra", "candidates": ["cat", "unicorn"]}
    unk = (await client.post("/v1/candidates", json=body)).json()
    assert unk["context_oov_positions"] == [1]
    assert [x["oov"] for x in unk["results"]] == [False, True]
    assert unk["results"][1]["log_prob"] == pytest.approx(tiny_lm.next_log_probs("the zebra")[0])

    penalty = (
        await client.post("/v1/candidates", json=body | {"oov": "penalty", "oov_penalty": -30})
    ).json()
    assert penalty["normalized"] is False
    assert penalty["results"][1]["log_prob"] == -30
    assert penalty["results"][0]["log_prob"] == unk["results"][0]["log_prob"]

    r = await client.post("/v1/candidates", json=body | {"oov": "reject"})
    assert r.status_code == 422
    assert r.json()["oov"] == {"context": ["zebra"], "candidates[1]": ["unicorn"]}
    assert "zebra" in r.json()["detail"]

    scored = (
        await client.post(
            "/v1/score", json={"sentences": ["the zebra sat"], "oov": "penalty", "oov_penalty": -25}
        )
    ).json()
    assert scored["results"][0]["token_log_probs"][1] == -25
