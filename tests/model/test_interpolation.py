"""Interpolated models: exact mixtures on every call, EM weights, checkpoints, the command."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.interpolated_lm import InterpolatedLM, fit_weights
from model.inference.language_model import InputError
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM, ModelConfig
from model.ngram.kneser_ney import estimate, log10_distribution, log10_probs
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from tests.model.test_ngram import corpus

WEIGHTS = (0.3, 0.7)


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.from_corpus(corpus())


@pytest.fixture(scope="module")
def rnn(vocab: Vocabulary) -> RecurrentLM:
    config = ModelConfig(len(vocab), "lstm", num_layers=2, embed_size=8, hidden_size=6)
    net = RNNLM(config, seed=5, dtype=np.float64)
    for p in net.params.values():  # away from the near-uniform initial distribution
        p += np.random.default_rng(6).normal(0, 0.5, p.shape)
    return RecurrentLM(net, vocab, Tokenizer("whitespace"))


@pytest.fixture(scope="module")
def kn3(vocab: Vocabulary) -> NgramLM:
    tables = estimate([vocab.encode(s) for s in corpus()], len(vocab), 3)
    return NgramLM(tables, vocab, Tokenizer("whitespace"))


@pytest.fixture(scope="module")
def mix(rnn: RecurrentLM, kn3: NgramLM) -> InterpolatedLM:
    return InterpolatedLM([rnn, kn3], WEIGHTS, ["rnn", "kn3"])


def by_hand(
    rnn: RecurrentLM, kn3: NgramLM, context: str, weights: tuple[float, ...] = WEIGHTS
) -> np.ndarray:
    """log(λ₁ P_rnn + λ₂ P_kn) over the vocabulary, straight from the two distributions."""
    p = weights[0] * np.exp(rnn.next_log_probs(context)) + weights[1] * np.exp(
        kn3.next_log_probs(context)
    )
    with np.errstate(divide="ignore"):
        return np.log(p)


@pytest.mark.parametrize("context", ["", "the", "the old", "my sister looked at"])
def test_the_next_word_distribution_is_the_mixture_and_sums_to_one(
    mix: InterpolatedLM, rnn: RecurrentLM, kn3: NgramLM, context: str
) -> None:
    lp = mix.next_log_probs(context)
    np.testing.assert_allclose(np.exp(lp), np.exp(by_hand(rnn, kn3, context)), atol=1e-12)
    assert math.isclose(np.exp(lp).sum(), 1.0, abs_tol=1e-9)
    top = mix.top_k(context, 3)
    best = [mix.vocab.tokens[i] for i in np.argsort(-lp)[:5] if mix.vocab.tokens[i] != "<unk>"]
    assert [w for w, _ in top] == [w for w in best if w not in ("<s>", "</s>")][:3]


def test_candidates_and_sentences_follow_the_chain_rule_of_the_mixture(
    mix: InterpolatedLM, rnn: RecurrentLM, kn3: NgramLM
) -> None:
    old_man, cat = mix.score_candidates("the", ["old man", "cat"])
    expected = (
        by_hand(rnn, kn3, "the")[mix.vocab.id("old")]
        + by_hand(rnn, kn3, "the old")[mix.vocab.id("man")]
    )
    assert old_man.log_prob == pytest.approx(expected, abs=1e-10)
    assert cat.log_prob == pytest.approx(by_hand(rnn, kn3, "the")[mix.vocab.id("cat")], abs=1e-10)
    (sentence,) = mix.score_sentences(["the cat sat on the mat"])
    words = ["the", "cat", "sat", "on", "the", "mat"]
    steps = [by_hand(rnn, kn3, " ".join(words[:i]))[mix.vocab.id(t)] for i, t in enumerate(words)]
    steps.append(by_hand(rnn, kn3, " ".join(words))[mix.vocab.eos_id])
    np.testing.assert_allclose(sentence.token_log_probs, steps, atol=1e-10)
    method, (gap,) = mix.fill("the", "sat on the mat", ["cat"])
    assert method == "sentence" and gap.log_prob == pytest.approx(sentence.log_prob, abs=1e-10)


def test_weights_can_be_changed_per_call_and_bad_ones_name_the_field(
    mix: InterpolatedLM, rnn: RecurrentLM, kn3: NgramLM
) -> None:
    only_rnn = mix.with_weights([1, 0]).score_candidates("the", ["cat"])[0].log_prob
    assert only_rnn == pytest.approx(rnn.score_candidates("the", ["cat"])[0].log_prob, abs=1e-12)
    halves = mix.with_weights([2, 2]).next_log_probs("a")  # normalised to 0.5, 0.5
    np.testing.assert_allclose(halves, by_hand(rnn, kn3, "a", (0.5, 0.5)), atol=1e-12)
    assert mix.weights.tolist() == pytest.approx(list(WEIGHTS))  # the model itself is unchanged
    for bad in ([1.0], [0.0, 0.0], [-0.1, 1.1], [math.nan, 1.0]):
        with pytest.raises(InputError) as e:
            mix.with_weights(bad)
        assert e.value.argument == "weights"
    with pytest.raises(InputError, match="interpolated model only"):
        rnn.with_weights([0.5, 0.5])


def test_em_finds_the_weights_of_highest_likelihood() -> None:
    rng = np.random.default_rng(0)
    a, b = np.log(rng.uniform(0.01, 1, 500)), np.log(rng.uniform(0.01, 1, 500))
    weights, history = fit_weights([a, b])
    grid = np.linspace(0.001, 0.999, 999)
    ce = [-np.log(w * np.exp(a) + (1 - w) * np.exp(b)).mean() for w in grid]
    assert weights[0] == pytest.approx(grid[int(np.argmin(ce))], abs=2e-3)
    assert weights.sum() == pytest.approx(1.0)
    assert all(later <= earlier + 1e-12 for earlier, later in itertools.pairwise(history))
    assert history[-1] == pytest.approx(min(ce), abs=1e-6)


def test_evaluation_mixes_the_stream_and_the_isolated_sentences(
    mix: InterpolatedLM, rnn: RecurrentLM, kn3: NgramLM
) -> None:
    sentences = list(corpus(20, seed=9))
    stream, alone = rnn.text_log_probs(sentences, stream=True), rnn.text_log_probs(sentences)
    own = rnn.evaluate(sentences)
    assert -stream.mean() == pytest.approx(own.cross_entropy, abs=1e-9)
    assert -alone.mean() == pytest.approx(own.isolated_cross_entropy, abs=1e-9)
    assert not np.allclose(stream, alone)  # the state carried across sentences changes scores
    ngram = kn3.text_log_probs(sentences)
    result = mix.evaluate(sentences)
    mixed = np.log(WEIGHTS[0] * np.exp(stream) + WEIGHTS[1] * np.exp(ngram))
    assert result.cross_entropy == pytest.approx(-mixed.mean(), abs=1e-9)
    isolated = np.log(WEIGHTS[0] * np.exp(alone) + WEIGHTS[1] * np.exp(ngram))
    assert result.isolated_cross_entropy == pytest.approx(-isolated.mean(), abs=1e-9)


def test_models_that_cannot_be_mixed_are_refused_naming_the_difference(
    rnn: RecurrentLM, kn3: NgramLM
) -> None:
    other = Vocabulary.from_corpus(corpus(), max_size=12)
    tables = estimate([other.encode(s) for s in corpus()], len(other), 2)
    with pytest.raises(ValueError, match="model 2 has another vocabulary.*--vocab-from"):
        InterpolatedLM([rnn, NgramLM(tables, other, Tokenizer("whitespace"))], [1, 1])
    lowercased = NgramLM(kn3.tables, kn3.vocab, Tokenizer("whitespace", lowercase=True))
    with pytest.raises(ValueError, match="model 2 tokenizes as"):
        InterpolatedLM([rnn, lowercased], [1, 1])
    with pytest.raises(ValueError, match="2 to 16 models"):
        InterpolatedLM([rnn], [1])


@pytest.mark.parametrize(
    "history", [[], [1], [-1, 1], [1, 4], [7, 7], [3, 5], [9999 % 30, 2], [2, 29]]
)
def test_the_whole_distribution_from_the_backoff_structure_equals_word_by_word(
    kn3: NgramLM, history: list[int]
) -> None:
    V = len(kn3.vocab)
    ids = np.array([min(i, V - 1) if i >= 0 else -1 for i in history], dtype=np.int64)
    padded = np.concatenate([np.full(2 - len(ids), -1), ids]).astype(np.int64)
    word_by_word = log10_probs(kn3.tables, np.repeat(padded[None], V, axis=0), np.arange(V))
    np.testing.assert_allclose(log10_distribution(kn3.tables, padded), word_by_word, atol=1e-12)


# ------------------------------------------------------------------ checkpoints and the command
@pytest.fixture
def saved(tmp_path: Path, rnn: RecurrentLM, kn3: NgramLM) -> tuple[Path, Path]:
    save_checkpoint(tmp_path / "rnn", rnn)
    save_checkpoint(tmp_path / "kn3", kn3)
    return tmp_path / "rnn", tmp_path / "kn3"


def test_a_combined_checkpoint_holds_its_components_and_checks_them(
    tmp_path: Path, saved: tuple[Path, Path], mix: InterpolatedLM
) -> None:
    lm = InterpolatedLM(
        [load_checkpoint(d) for d in saved], WEIGHTS, ["rnn", "kn3"], sources=list(saved)
    )
    out = save_checkpoint(tmp_path / "mix", lm, {"note": 1})
    for d in saved:  # the directory is whole by itself
        for f in d.iterdir():
            f.unlink()
    loaded = load_checkpoint(out)
    assert isinstance(loaded, InterpolatedLM) and loaded.names == ["rnn", "kn3"]
    expected = mix.score_sentences(["a dog saw the river"])[0].log_prob
    assert loaded.score_sentences(["a dog saw the river"])[0].log_prob == pytest.approx(expected)
    save_checkpoint(out, loaded, {"note": 2})  # saving in place keeps its components
    assert load_checkpoint(out).metadata == {"note": 2}
    paths = [
        c["path"] for c in json.loads((out / "config.json").read_text())["model"]["components"]
    ]
    assert sorted(p.name for p in (out / "components").iterdir()) == sorted(
        Path(x).name for x in paths
    )
    component = out / paths[1] / "config.json"
    component.write_text(component.read_text().replace('"note"', '"edited"') + " ")
    with pytest.raises(CheckpointError, match="config_sha256"):
        load_checkpoint(out)


def test_a_combined_config_pointing_outside_its_directory_is_refused(
    tmp_path: Path, saved: tuple[Path, Path]
) -> None:
    lm = InterpolatedLM([load_checkpoint(d) for d in saved], WEIGHTS, sources=list(saved))
    out = save_checkpoint(tmp_path / "mix", lm)
    config = json.loads((out / "config.json").read_text())
    config["model"]["components"][0]["path"] = "../rnn"
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match=r"components\[0\]: path must be 'components/[0-9a-f]{12}'"
    ):
        load_checkpoint(out)


def test_a_combined_model_is_rebuilt_from_its_own_components_and_refuses_changed_sources(
    tmp_path: Path, saved: tuple[Path, Path], rnn: RecurrentLM
) -> None:
    lm = InterpolatedLM([load_checkpoint(d) for d in saved], WEIGHTS, sources=list(saved))
    out = save_checkpoint(tmp_path / "mix", lm)
    loaded = load_checkpoint(out)
    assert isinstance(loaded, InterpolatedLM) and loaded.sources is not None
    swapped = InterpolatedLM(loaded.components[::-1], WEIGHTS, sources=loaded.sources[::-1])
    save_checkpoint(out, swapped)  # every source is read before any copy is written
    again = load_checkpoint(out)
    assert isinstance(again, InterpolatedLM)
    assert [type(c).__name__ for c in again.components] == ["NgramLM", "RecurrentLM"]
    assert len(list((out / "components").iterdir())) == 2
    stale = InterpolatedLM([load_checkpoint(d) for d in saved], WEIGHTS, sources=list(saved))
    original = rnn.net.params["output.b"].copy()
    rnn.net.params["output.b"] += 0.5  # a training run saves a new best model meanwhile
    try:
        save_checkpoint(saved[0], rnn)
    finally:
        rnn.net.params["output.b"][:] = original
    with pytest.raises(CheckpointError, match="weights changed since the model was loaded"):
        save_checkpoint(tmp_path / "other", stale)


def test_huge_weights_are_normalised_not_overflowed(mix: InterpolatedLM) -> None:
    assert mix.with_weights([1e308, 1e308]).weights.tolist() == [0.5, 0.5]


def test_a_literal_sentence_start_in_the_text_is_read_alike_by_every_component(
    mix: InterpolatedLM,
) -> None:
    sentences = [["the", "<s>", "cat", "sat"], ["a", "dog"]]
    result = mix.evaluate(sentences)  # the stream and the sentences count the same targets
    assert result.tokens == 4 + 3 and math.isfinite(result.isolated_cross_entropy or math.inf)


def test_the_commands_build_a_shared_vocabulary_ngram_and_fit_the_weights(
    tmp_path: Path, saved: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    train, valid = tmp_path / "train.txt", tmp_path / "valid.txt"
    train.write_text("\n".join(" ".join(s) for s in corpus(300, seed=1)) + "\n")
    valid.write_text("\n".join(" ".join(s) for s in corpus(60, seed=2)) + "\n")
    rnn_dir, _ = saved
    kn = tmp_path / "kn"
    assert main(["ngram", "--train", str(train), "--order", "3", "--min-count", "5",
                 "--vocab-from", str(rnn_dir), "--out", str(kn)]) == 0  # fmt: skip
    assert load_checkpoint(kn).vocab.tokens == load_checkpoint(rnn_dir).vocab.tokens
    out = tmp_path / "mix"
    code = main(["combine", "--model", str(rnn_dir), "--model", str(kn), "--valid", str(valid),
                 "--test", str(valid), "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    lm = load_checkpoint(out)
    assert isinstance(lm, InterpolatedLM)
    sentences = [s.split() for s in valid.read_text().splitlines()]
    parts = [c.text_log_probs(sentences) for c in lm.components]
    weights, _ = fit_weights(parts)
    np.testing.assert_allclose(lm.weights, weights, atol=1e-9)
    assert lm.metadata["test_isolated_perplexity"] == pytest.approx(
        math.exp(-np.log(weights @ np.exp(np.array(parts))).mean()), rel=1e-4
    )
    assert main(["eval", "--model", str(out), "--data", str(valid)]) == 0
    assert '"isolated_perplexity"' in capsys.readouterr().out
    given = tmp_path / "given"
    assert main(["combine", "--model", str(rnn_dir), "--model", str(kn), "--weights", "1", "3",
                 "--out", str(given)]) == 0  # fmt: skip
    assert load_checkpoint(given).architecture()["weights"] == [0.25, 0.75]


def test_the_combine_command_refuses_what_it_cannot_mix(
    tmp_path: Path, saved: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    rnn_dir, _ = saved
    train = tmp_path / "train.txt"
    train.write_text("\n".join(" ".join(s) for s in corpus(300, seed=1)) + "\n")
    own = tmp_path / "own-vocab"
    assert main(["ngram", "--train", str(train), "--order", "2", "--max-vocab", "12",
                 "--out", str(own)]) == 0  # fmt: skip
    capsys.readouterr()
    args = ["combine", "--model", str(rnn_dir), "--model", str(own), "--out", str(tmp_path / "x")]
    assert main([*args, "--valid", str(train)]) == 2
    assert "another vocabulary" in capsys.readouterr().err
    assert (
        main(["combine", "--model", str(rnn_dir), "--model", str(own), "--out", str(rnn_dir)]) == 2
    )
    assert "is, or holds, one of the --model directories" in capsys.readouterr().err
    assert main([*args[:3], "--model", str(saved[1]), "--out", str(tmp_path / "y")]) == 2
    assert "no held-out text" in capsys.readouterr().err
