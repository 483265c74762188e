"""A model with a class-factored output, served: every path (candidates with and without the
prefix cache, top-k, sentence scores, evaluation) gives the exact probabilities of the two
factors, they sum to 1, and a checkpoint keeps the classes."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from model.inference.checkpoint import load_checkpoint, save_checkpoint
from model.inference.recurrent_lm import RecurrentLM
from model.network import class_softmax
from model.network.class_softmax import WordClasses
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from tests.conftest import TINY_WORDS, perturbed


@pytest.fixture(params=[0, 4], ids=["bands", "shortlist"])
def class_lm(request: pytest.FixtureRequest) -> RecurrentLM:
    """Frequency bands, and a shortlist of 4 words with a class each before 3 bands."""
    vocab = Vocabulary(["<unk>", "<s>", "</s>", *TINY_WORDS], [0, 0, 20, 9, 8, 7, 6, 5, 4, 3, 2, 1])
    shortlist = request.param
    classes = WordClasses.by_frequency(vocab.counts, 3 if shortlist else 4, shortlist)
    assert classes.shortlist == shortlist
    config = ModelConfig(len(vocab), "lstm", num_layers=2, embed_size=6, hidden_size=6,
                         tie_weights=True, softmax="class", class_bounds=classes.bounds,
                         class_shortlist=shortlist)  # fmt: skip
    net = perturbed(RNNLM(config, seed=3, dtype=np.float64), seed=4)
    return RecurrentLM(net, vocab, Tokenizer("whitespace"))


def test_the_distribution_is_the_two_factors_and_sums_to_one(class_lm: RecurrentLM) -> None:
    classes = class_lm.net.classes
    assert classes is not None and classes.num_classes > 1
    p = class_lm.next_distribution("the cat")
    assert p.sum() == pytest.approx(1.0, abs=1e-12)
    # the factors by hand, from the top-layer output after "<s> the cat"
    (read,) = class_lm.read_contexts([["the", "cat"]])
    h, params = read.hidden, class_lm.net.params
    short = classes.shortlist  # listed words head with their own (tied) rows
    zc = np.concatenate([params["embedding.W"][:short] @ h + params["output.b"][:short],
                         params["output.class.W"] @ h + params["output.class.b"]])  # fmt: skip
    pc = np.exp(zc - zc.max()) / np.exp(zc - zc.max()).sum()
    for c, (lo, hi) in enumerate(zip(classes.bounds, classes.bounds[1:], strict=False)):
        zw = params["embedding.W"][lo:hi] @ h + params["output.b"][lo:hi]  # tied
        pw = np.exp(zw - zw.max()) / np.exp(zw - zw.max()).sum()
        np.testing.assert_allclose(p[lo:hi], pc[c] * pw, rtol=1e-10)


@pytest.mark.parametrize("cached", [False, True])
def test_every_scoring_path_agrees_with_the_distribution(
    class_lm: RecurrentLM, cached: bool
) -> None:
    if cached:
        class_lm.use_prefix_cache(64, 1 << 20, None)
    full = class_lm.next_log_probs("the cat")
    for _ in range(2):  # the second time from the cache, when on
        scores = class_lm.score_candidates("the cat", ["sat", "ran", "zebra", "on the"])
        ids = [class_lm.vocab.encode([w])[0] for w in ("sat", "ran", "zebra")]
        for score, i in zip(scores[:3], ids, strict=True):
            assert score.log_prob == pytest.approx(full[i], abs=1e-12)
        on = class_lm.vocab.encode(["on"])[0]
        after_on = class_lm.next_log_probs("the cat on")[class_lm.vocab.encode(["the"])[0]]
        assert scores[3].log_prob == pytest.approx(full[on] + after_on, abs=1e-12)
    for k, special in ((3, False), (len(class_lm.vocab), True), (len(class_lm.vocab), False)):
        top = class_lm.top_k("the cat", k=k, include_special=special)
        masked = full.astype(np.float64)
        if not special:
            masked[[0, 1, 2]] = -np.inf
        order = np.argsort(-masked, kind="stable")[: min(k, int(np.isfinite(masked).sum()))]
        assert [w for w, _ in top] == [class_lm.vocab.tokens[i] for i in order]
        np.testing.assert_allclose([lp for _, lp in top], masked[order], rtol=0, atol=1e-6)
    (sentence,) = class_lm.score_sentences(["the cat sat"])
    steps = [class_lm.next_log_probs(c) for c in ("", "the", "the cat", "the cat sat")]
    want = sum(
        s[class_lm.vocab.encode([w])[0]]
        for s, w in zip(steps, ["the", "cat", "sat", "</s>"], strict=True)
    )
    assert sentence.log_prob == pytest.approx(want, abs=1e-10)


def test_a_cached_context_keeps_its_class_softmax(
    class_lm: RecurrentLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A beam search asks for other words after the same context: the class softmax's normaliser
    is kept with the cached state, so only the words' own classes are computed again."""
    class_lm.use_prefix_cache(64, 1 << 20, None)
    (first,) = class_lm.score_candidates("the cat", ["sat"])
    head_rows: list[int] = []
    real = class_softmax.head_logits
    monkeypatch.setattr(
        class_softmax, "head_logits", lambda x, *rest: head_rows.append(len(x)) or real(x, *rest)
    )
    again = class_lm.score_candidates("the cat", ["sat", "ran", "zebra"])
    assert head_rows == []
    assert again[0].log_prob == pytest.approx(first.log_prob, abs=1e-12)
    full = class_lm.next_log_probs("the cat")  # its own head product, counted
    assert again[1].log_prob == pytest.approx(full[class_lm.vocab.encode(["ran"])[0]], abs=1e-12)
    head_rows.clear()
    # a new context: one head row for all its words, and one for the continuation after "on"
    class_lm.score_candidates("the dog", ["sat", "ran", "on the"])
    assert head_rows == [2]


def test_a_checkpoint_keeps_the_classes(class_lm: RecurrentLM, tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "m", class_lm)
    loaded = load_checkpoint(tmp_path / "m")
    assert isinstance(loaded, RecurrentLM)
    assert loaded.net.config == class_lm.net.config and loaded.net.classes == class_lm.net.classes
    np.testing.assert_allclose(
        loaded.next_log_probs("the dog"), class_lm.next_log_probs("the dog"), atol=1e-12
    )


def test_the_service_answers_with_the_exact_factored_probabilities(
    class_lm: RecurrentLM,
) -> None:
    from fastapi.testclient import TestClient

    from app.core.config import Settings
    from app.main import create_app
    from app.registry import ModelRegistry

    full = class_lm.next_log_probs("the cat")
    with TestClient(create_app(Settings(), ModelRegistry.from_models({"m": class_lm}))) as http:
        answer = http.post(
            "/v1/candidates", json={"context": "the cat", "candidates": ["sat", "ran"]}
        )
        assert answer.status_code == 200
        got = [r["log_prob"] for r in answer.json()["results"]]
        want = [full[class_lm.vocab.encode([w])[0]] for w in ("sat", "ran")]
        np.testing.assert_allclose(got, want, atol=1e-6)
        top = http.post("/v1/predict", json={"context": "the cat", "k": 3}).json()["predictions"]
        assert sum(math.exp(x) for x in full) == pytest.approx(1.0, abs=1e-9)
        best = max(range(3, len(full)), key=lambda i: full[i])  # specials aside
        assert top[0]["word"] == class_lm.vocab.tokens[best]
        hypotheses = [{"text": "the cat sat", "score": 0}, {"text": "cat the sat", "score": 0}]
        ranked = http.post("/v1/rerank", json={"hypotheses": hypotheses})
        lm_scores = {h["text"]: h["lm_log_prob"] for h in ranked.json()["hypotheses"]}
        (s,) = class_lm.score_sentences(["cat the sat"])
        assert lm_scores["cat the sat"] == pytest.approx(s.log_prob, abs=1e-6)
        info = http.get("/v1/models/m").json()
        assert info["architecture"]["softmax"] == "class"
