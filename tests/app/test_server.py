"""End to end: ``nextword serve`` on a free port, every endpoint over real HTTP, the sync client,
the page in headless Chromium, and a clean stop on SIGTERM."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.client import NextwordClient
from app.launch import start_server
from model.inference.checkpoint import load_checkpoint

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
        assert client.models()["default"] == "golden"
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


def test_the_page_shows_candidate_and_next_word_bars(server: str) -> None:
    browser_path = chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=browser_path,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
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
        browser.close()
    api = httpx.post(
        f"{server}/v1/candidates",
        json={"context": "the time", "candidates": ["traveller", "machine", "zebra"]},
    ).json()
    assert [w for w, _ in rows] == ["traveller", "machine", "zebra"]
    assert [v for _, v in rows] == pytest.approx([r["share"] for r in api["results"]], rel=1e-9)
    assert len(predictions) == 10
    top = httpx.post(f"{server}/v1/predict", json={"context": "the time", "k": 10}).json()[
        "predictions"
    ]
    assert [w for w, _ in predictions] == [p["word"] for p in top]
    assert max(float(w.rstrip("%")) for w in widths) == pytest.approx(100.0)
