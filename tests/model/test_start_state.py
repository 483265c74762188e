"""The state a sentence read on its own starts from: the mean boundary state of the running
text, used by every call and by isolated evaluation, kept in the checkpoint (absent: zero)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.evaluation import evaluate_file
from model.inference.recurrent_lm import RecurrentLM
from model.inference.start_state import BURN_IN, STREAMS, mean_boundary_state

SENTENCES = ["the cat sat on the mat", "the dog ran", "new york", "the cat ran on the mat"]


def encoded(lm: RecurrentLM, n: int) -> list[np.ndarray]:
    return [lm.vocab.encode(SENTENCES[i % len(SENTENCES)].split()) for i in range(n)]


def with_start(lm: RecurrentLM) -> RecurrentLM:
    lm.net.start = mean_boundary_state(lm.net, encoded(lm, 20), lm.vocab)
    return lm


@pytest.mark.parametrize("n", [12, 40, 400])
def test_the_start_state_is_the_mean_state_before_each_sentence_of_the_stream(
    tiny_lm: RecurrentLM, n: int
) -> None:
    """From the definition, one sentence and one token at a time: the sentences cut into
    contiguous runs (as many as STREAMS allows), each read as running text from zero, the
    states before each sentence after a run's first BURN_IN averaged."""
    net, vocab = tiny_lm.net, tiny_lm.vocab
    sentences = encoded(tiny_lm, n)
    runs = np.array_split(np.arange(n), min(STREAMS, n // (BURN_IN + 1)))
    seen = []
    for run in runs:
        state = net.init_state(1)
        for j, i in enumerate(run):
            if j >= BURN_IN:
                seen.append(state)
            for token in [vocab.bos_id, *sentences[i].tolist(), vocab.eos_id]:
                _, state = net.log_probs(np.array([[token]]), state)
    start = mean_boundary_state(net, sentences, vocab)
    assert start is not None
    for layer, states in enumerate(zip(*seen, strict=True)):
        for k, tensors in enumerate(zip(*states, strict=True)):
            want = np.mean(np.stack(tensors), axis=0)
            assert start[layer][k] == pytest.approx(want, abs=1e-12)
            assert start[layer][k].shape == (1, net.config.hidden_size)
    assert mean_boundary_state(net, sentences[:BURN_IN], vocab) is None  # too few to average


def test_every_call_starts_from_it_and_agrees_with_the_others(tiny_lm: RecurrentLM) -> None:
    zero = tiny_lm.score_sentences(["the cat sat"])[0].log_prob
    lm = with_start(tiny_lm)
    (sentence,) = lm.score_sentences(["the cat sat"])
    assert sentence.log_prob != pytest.approx(zero, abs=1e-6)  # it changes what is computed
    steps = [lm.next_log_probs(sentence.tokens[:i])[lm.vocab.id(t)]
             for i, t in enumerate([*sentence.tokens, "</s>"])]  # fmt: skip
    assert sentence.token_log_probs == pytest.approx(steps, abs=1e-10)
    (candidate,) = lm.score_candidates("the", ["cat sat"])
    assert candidate.token_log_probs == pytest.approx(steps[1:3], abs=1e-10)
    lm.use_prefix_cache(64, 1 << 20, None)
    for _ in range(2):  # a cold and a cached context: the same numbers
        (again,) = lm.score_candidates("the", ["cat sat"])
        assert again.token_log_probs == pytest.approx(steps[1:3], abs=1e-10)
    assert np.exp(lm.next_log_probs("")).sum() == pytest.approx(1.0, abs=1e-10)


def test_isolated_evaluation_reads_from_it(tiny_lm: RecurrentLM, tmp_path: Path) -> None:
    text = tmp_path / "text.txt"
    text.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    lm = with_start(tiny_lm)
    figures = evaluate_file(lm, text, "lines")
    scores = lm.score_sentences(SENTENCES)
    tokens = sum(len(s.targets) for s in scores)
    want = -sum(s.log_prob for s in scores) / tokens
    assert figures["isolated_cross_entropy"] == pytest.approx(want, abs=1e-6)


def test_the_checkpoint_keeps_it_and_one_without_it_starts_from_zero(
    tiny_lm: RecurrentLM, tmp_path: Path
) -> None:
    save_checkpoint(tmp_path / "zero", tiny_lm)
    assert load_checkpoint(tmp_path / "zero", dtype=np.float64).net.start is None
    lm = with_start(tiny_lm)
    save_checkpoint(tmp_path / "m", lm)
    loaded = load_checkpoint(tmp_path / "m", dtype=np.float64)
    assert isinstance(loaded, RecurrentLM) and loaded.net.start is not None
    for mine, theirs in zip(lm.net.start or [], loaded.net.start, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert np.array_equal(a, b)
    want = lm.score_sentences(SENTENCES)[0].log_prob
    assert loaded.score_sentences(SENTENCES)[0].log_prob == pytest.approx(want, abs=1e-12)
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["roles"]["start_state"].startswith("start_state.")
    # a start state of the wrong shape (saved from another network) is refused, naming it
    lm.net.start = [tuple(np.zeros((1, 3)) for _ in layer) for layer in lm.net.start or []]
    save_checkpoint(tmp_path / "bad", lm)
    with pytest.raises(CheckpointError, match=r"start_state\.[0-9a-f]{12}\.safetensors: expected"):
        load_checkpoint(tmp_path / "bad")


@pytest.mark.parametrize(("context", "has_start"), [("stream", True), ("sentence", False)])
def test_training_on_the_stream_saves_a_start_state_and_on_sentences_none(
    tmp_path: Path, context: str, has_start: bool
) -> None:
    """The running-text model never saw a zero state at a sentence start, so it gets the mean
    one; a model trained on sentences alone learnt to start from zero and keeps it."""
    text = tmp_path / "train.txt"
    text.write_text("\n".join(SENTENCES * 10) + "\n", encoding="utf-8")
    out = tmp_path / context
    args = ["train", "--train", str(text), "--valid", str(text), "--out", str(out), "--epochs",
            "1", "--hidden", "8", "--emb", "8", "--batch-size", "4", "--bptt", "5",
            "--context", context]  # fmt: skip
    assert main(args) == 0
    lm = load_checkpoint(out)
    assert isinstance(lm, RecurrentLM) and (lm.net.start is not None) == has_start
    logged = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    isolated = evaluate_file(lm, text, "lines")["isolated_perplexity"]
    assert logged["valid_isolated_ppl"] == pytest.approx(isolated, rel=1e-3)


def test_a_new_start_state_is_another_model_for_a_combination(
    tiny_lm: RecurrentLM, tmp_path: Path
) -> None:
    """The checksum covers the start state: re-saving a component with a new one after the
    combination loaded it is refused like new weights (its weights were fitted on the old)."""
    from model.inference.interpolated_lm import InterpolatedLM

    lm = with_start(tiny_lm)
    save_checkpoint(tmp_path / "a", lm)
    save_checkpoint(tmp_path / "b", lm)
    a, b = load_checkpoint(tmp_path / "a"), load_checkpoint(tmp_path / "b")
    mix = InterpolatedLM([a, b], [0.5, 0.5], ["a", "b"], sources=[tmp_path / "a", tmp_path / "b"])
    lm.net.start = [tuple(t + 0.5 for t in layer) for layer in lm.net.start or []]
    save_checkpoint(tmp_path / "b", lm)  # same weights file, another start state
    with pytest.raises(CheckpointError, match="changed since the model was loaded"):
        save_checkpoint(tmp_path / "mix", mix)


def test_a_start_state_on_a_kind_that_has_none_is_refused(
    tiny_lm: RecurrentLM, tmp_path: Path
) -> None:
    save_checkpoint(tmp_path / "m", with_start(tiny_lm))
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    config["model"]["bidirectional"] = True  # as if a gap-filling model's directory held one
    path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="only a left-to-right recurrent model has"):
        load_checkpoint(tmp_path / "m")
