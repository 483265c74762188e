"""End to end: ``nextword serve`` on a free port, every endpoint over real HTTP, the sync client,
the page in headless Chromium, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.client import NextwordClient, NextwordError
from app.launch import start_server
from model.inference.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # real processes and sockets: `make test-fast` skips them

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden_model"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    process, url = start_server([f"golden={GOLDEN}"], output=subprocess.PIPE)
    yield url
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    output = process.stdout.read().decode() if process.stdout else ""
    assert code in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal after a clean stop
    assert "Traceback" not in output


def test_every_endpoint_over_http(server: str) -> None:
    lm = load_checkpoint(GOLDEN)
    with NextwordClient(server) as client:
        cands = client.candidates("the time", ["traveller", "machine", "of the"])
        want = lm.score_candidates("the time", ["traveller", "machine", "of the"])
        assert [r.log_prob for r in cands.results] == pytest.approx(
            [s.log_prob for s in want], abs=1e-6
        )
        assert sum(r.share for r in cands.results) == pytest.approx(1.0)
        sentence = ["the", "time", "traveller", "was", "here"]
        scored = client.score([" ".join(sentence)]).results[0]
        steps = [
            client.candidates(sentence[:k], [[word]]).results[0].log_prob
            for k, word in enumerate([*sentence, "</s>"])
        ]
        assert scored.token_log_probs == pytest.approx(steps, abs=1e-5)
        ranked = client.rerank(
            [("the time traveller", -3.0), ("the thyme travel her", -2.5)], lm_weight=0.5
        )
        assert ranked.hypotheses[0].combined >= ranked.hypotheses[1].combined
        assert client.predict("the", k=3).predictions[0].word == lm.top_k("the", 1)[0][0]
        assert client.models().default == "golden"
        assert client.describe("golden").checkpoint == GOLDEN.name
    with NextwordClient(server, model="absent") as client:  # each call names its own model
        assert client.candidates("the", ["time"], model="golden").model == "golden"
        assert client.predict("the", k=2, model="golden").model == "golden"
        assert client.score(["the time"], model="golden", eos=False).model == "golden"
        assert client.rerank([("the time", 0.0)], model="golden").model == "golden"
        assert client.fill("the", "traveller", ["time"], model="golden").model == "golden"
        with pytest.raises(NextwordError) as error:
            client.predict("the")  # the client's own model, which this server does not have
        assert error.value.status == 404
    assert httpx.get(f"{server}/healthz").json() == {"status": "alive"}
    assert (
        httpx.get(f"{server}/v1/models/golden/vocab", params={"prefix": "tim"}).json()["total"] >= 1
    )
    assert "nextword_requests_total" in httpx.get(f"{server}/metrics").text
    assert httpx.get(f"{server}/docs").status_code == 200


def chromium() -> str:
    """Debian's Chromium; CI installs it (``.ci/run``), elsewhere the browser test is skipped."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser test: apt-get install chromium")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return path


def launch(playwright: Any, path: str) -> Any:
    """Debian's Chromium, headless, with nothing of its own going out to the network."""
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update"]  # fmt: skip
    return playwright.chromium.launch(executable_path=path, args=args)


def test_the_api_docs_render_with_the_network_blocked(server: str) -> None:
    """/docs is Swagger UI from assets the service itself serves: with every request to any
    other host refused, the page still renders every endpoint (it was blank offline: its
    script and styles came from a CDN)."""
    browser_path = chromium()
    from playwright.sync_api import sync_playwright

    elsewhere: list[str] = []

    def only_the_server(route: Any) -> None:
        if route.request.url.startswith(server):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = launch(p, browser_path)
        page = browser.new_page()
        page.route("**/*", only_the_server)
        page.goto(f"{server}/docs")
        page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
        paths = page.eval_on_selector_all(
            ".opblock-summary-path", "spans => spans.map(s => s.textContent.trim())"
        )
        title = page.text_content(".swagger-ui .info .title")
        browser.close()
    assert elsewhere == []
    assert {"/v1/candidates", "/v1/score", "/v1/rerank", "/v1/predict", "/v1/fill"} <= {
        path.replace("\u200b", "") for path in paths
    }
    assert title is not None and "nextword" in title


def test_the_page_shows_candidate_and_next_word_bars(server: str) -> None:
    browser_path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p, browser_path)
        page = browser.new_page()
        page.goto(server)
        page.wait_for_selector("body[data-state=done]")
        page.fill("#context", "the time")
        page.fill("#candidates", "traveller, machine, zebra")
        page.evaluate("document.body.dataset.state = ''")
        page.click("#score")
        page.wait_for_selector("body[data-state=done]")
        rows = page.eval_on_selector_all(
            "#results .row", "rows => rows.map(r => [r.dataset.word, Number(r.dataset.value)])"
        )
        predictions = page.eval_on_selector_all(
            "#predictions .row", "rows => rows.map(r => [r.dataset.word, Number(r.dataset.value)])"
        )
        widths = page.eval_on_selector_all("#results .bar", "bars => bars.map(b => b.style.width)")
        marks = page.eval_on_selector_all("#results .oov", "ms => ms.map(m => m.textContent)")
        note = page.text_content("#oov-note")
        browser.close()
    api = httpx.post(
        f"{server}/v1/candidates",
        json={"context": "the time", "candidates": ["traveller", "machine", "zebra"]},
    ).json()
    assert [w for w, _ in rows] == ["traveller", "machine", "zebra"]
    # the unknown word is marked, and the page says how it was scored: this checkpoint, older
    # than the open vocabulary, has no spelling model, so <unk>'s whole probability
    assert api["oov"] == "unk" and marks == [" (unknown word)"]
    assert note is not None and "the whole probability of an unknown word" in note
    assert [v for _, v in rows] == pytest.approx([r["share"] for r in api["results"]], rel=1e-9)
    assert len(predictions) == 10
    top = httpx.post(f"{server}/v1/predict", json={"context": "the time", "k": 10}).json()[
        "predictions"
    ]
    assert [w for w, _ in predictions] == [p["word"] for p in top]
    assert max(float(w.rstrip("%")) for w in widths) == pytest.approx(100.0)


def test_the_page_reranks_an_nbest_list_and_colours_each_token(server: str) -> None:
    browser_path = chromium()
    from playwright.sync_api import sync_playwright

    hypotheses = [
        ("-3.0", "the time traveller was here"),
        ("-2.5", "the thyme travel her was here"),
        ("-2.9", "the time machine was here"),
    ]
    with sync_playwright() as p:
        browser = launch(p, browser_path)
        page = browser.new_page()
        page.goto(server)
        page.wait_for_selector("body[data-state=done]")
        page.fill("#nbest", "\n".join(f"{score} {text}" for score, text in hypotheses) + "\n\n")
        page.fill("#lm-weight", "0.7")
        page.fill("#length-bonus", "0.2")
        page.click("#rerank")
        page.wait_for_selector("body[data-nbest=done]")
        rows = page.eval_on_selector_all(
            "#ranked tbody tr",
            """rows => rows.map(r => ({
                index: Number(r.dataset.index),
                tokens: [...r.querySelectorAll('.tok')].map(t => t.textContent),
                logps: [...r.querySelectorAll('.tok')].map(t => Number(t.dataset.logp)),
                hues: [...r.querySelectorAll('.tok')].map(t => Number(t.dataset.hue)),
                colours: [...r.querySelectorAll('.tok')].map(t => t.style.background),
            }))""",
        )
        page.fill("#lm-weight", "5000")  # beyond the field's bound
        page.click("#rerank")
        page.wait_for_selector("body[data-nbest=error]")
        error = page.text_content("#nbest-error")
        browser.close()
    body = [{"text": text, "score": float(score)} for score, text in hypotheses]
    ranked = httpx.post(
        f"{server}/v1/rerank", json={"hypotheses": body, "lm_weight": 0.7, "length_bonus": 0.2}
    ).json()["hypotheses"]
    scored = httpx.post(
        f"{server}/v1/score", json={"sentences": [text for _, text in hypotheses]}
    ).json()["results"]
    assert [r["index"] for r in rows] == [h["index"] for h in ranked]  # the service's order
    for row in rows:
        want = scored[row["index"]]
        assert row["tokens"] == want["targets"]  # every scored token, </s> included
        assert row["logps"] == pytest.approx(want["token_log_probs"], abs=1e-9)
        # the colour follows the log-probability: a less likely token is never greener
        by_logp = sorted(zip(row["logps"], row["hues"], strict=True))
        assert [h for _, h in by_logp] == sorted(h for _, h in by_logp)
        assert all(c.startswith("rgb(") for c in row["colours"])
    every = [(lp, hue) for row in rows for lp, hue in zip(row["logps"], row["hues"], strict=True)]
    assert min(every)[1] < max(every)[1]  # the least likely token is drawn redder than the most
    assert "lm_weight" in (error or "")  # the service's 422 names the field
