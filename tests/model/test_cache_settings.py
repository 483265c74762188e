"""The neural cache as a setting of a model: its checkpoint section, per-call variants, the
cache inside an interpolation (a general mixture, exactly normalised) and ``nextword tune``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.history import history_window
from model.inference.interpolated_lm import InterpolatedLM
from model.inference.language_model import InputError
from model.inference.neural_cache import (
    MAX_SIZE,
    CacheSettings,
    Memory,
    cache_probs,
    cache_probs_grid,
)
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.ngram.kneser_ney import estimate
from model.text.tokenize import Tokenizer
from model.training.tune import fit_cache
from tests.model.test_history import TEXT

SETTINGS = CacheSettings(theta=0.8, weight=0.3, size=20)


@pytest.fixture
def kn2(tiny_lm: RecurrentLM) -> NgramLM:
    tables = estimate([tiny_lm.vocab.encode(s) for s in TEXT * 3], len(tiny_lm.vocab), 2)
    return NgramLM(tables, tiny_lm.vocab, Tokenizer("whitespace"))


def test_the_grid_scores_each_setting_as_the_cache_does() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(700, 4)).astype(np.float32)
    targets = rng.integers(0, 6, 700)
    grid = cache_probs_grid(hidden, targets, [0.0, 0.4, 2.0], [1, 7, 300])
    for (theta, size), p in grid.items():
        want, remembered = cache_probs(Memory.empty(4), hidden, targets, theta, size)
        assert p == pytest.approx(want, abs=1e-12)
        assert remembered[1:].all() and not remembered[0] and p[0] == 0


def test_settings_merge_a_requests_fields_and_name_what_is_wrong() -> None:
    assert CacheSettings.merged(SETTINGS, {"weight": 0.1}) == CacheSettings(0.8, 0.1, 20)
    assert CacheSettings.merged(None, SETTINGS.to_dict()) == SETTINGS
    with pytest.raises(ValueError, match=r"no cache of its own.*missing: theta, size"):
        CacheSettings.merged(None, {"weight": 0.1})
    with pytest.raises(ValueError, match="cache weight must be in"):
        CacheSettings.merged(SETTINGS, {"weight": 1.0})
    with pytest.raises(ValueError, match=f"cache size must be in \\[1, {MAX_SIZE}\\]"):
        CacheSettings.merged(SETTINGS, {"size": MAX_SIZE + 1})
    with pytest.raises(ValueError, match="cache theta"):
        CacheSettings.from_dict({"theta": math.inf, "weight": 0.1, "size": 3})
    with pytest.raises(ValueError, match="must be a number"):
        CacheSettings.from_dict({"theta": True, "weight": 0.1, "size": 3})


def test_a_variant_shares_the_model_and_its_step_count_but_not_its_settings(
    tiny_lm: RecurrentLM,
) -> None:
    variant = tiny_lm.with_cache(SETTINGS)
    assert variant.neural_cache() == SETTINGS and tiny_lm.neural_cache() is None
    assert variant.net is tiny_lm.net and tiny_lm.with_cache(None) is tiny_lm
    prefix = history_window(TEXT[:3], 100).tokens
    before = tiny_lm.steps_run
    cached = variant.score_sentences([TEXT[3]], prefix=prefix)  # reads the history
    assert tiny_lm.steps_run == before + len(prefix) + 1  # counted where the metrics read it
    plain = tiny_lm.score_sentences([TEXT[3]], prefix=prefix)
    assert plain[0].log_prob != pytest.approx(cached[0].log_prob, abs=1e-3)


def test_an_ngram_refuses_a_cache_naming_the_field(kn2: NgramLM) -> None:
    assert not kn2.caches_history()
    with pytest.raises(InputError, match="cache.*hidden states.*ngram"):
        kn2.with_cache(SETTINGS)
    with pytest.raises(ValueError, match="hidden states"):
        kn2.use_neural_cache(SETTINGS)


def test_the_cache_section_round_trips_and_damage_is_named(
    tmp_path: Path, tiny_lm: RecurrentLM, kn2: NgramLM
) -> None:
    lm = tiny_lm.with_cache(SETTINGS)
    out = save_checkpoint(tmp_path / "rnn", lm)  # type: ignore[arg-type]
    config = json.loads((out / "config.json").read_text())
    assert config["cache"] == SETTINGS.to_dict()
    loaded = load_checkpoint(out)
    assert loaded.neural_cache() == SETTINGS
    prefix = history_window(TEXT[:4], 100).tokens
    want = lm.score_sentences([TEXT[4]], prefix=prefix)[0].token_log_probs
    assert loaded.score_sentences([TEXT[4]], prefix=prefix)[0].token_log_probs == pytest.approx(
        want, abs=1e-6
    )
    for bad, message in (
        ({"theta": 0.5, "weight": 0.1}, "must hold theta, weight and size"),
        ({"theta": 0.5, "weight": 1.5, "size": 3}, "weight must be in"),
        ({"theta": "x", "weight": 0.1, "size": 3}, "theta must be a number"),
        ({"theta": 10**400, "weight": 0.1, "size": 3}, "must be in range"),
    ):
        config["cache"] = bad
        (out / "config.json").write_text(json.dumps(config))
        with pytest.raises(CheckpointError, match=f"config.json: cache: .*{message}"):
            load_checkpoint(out)
    ngram = save_checkpoint(tmp_path / "kn2", kn2)
    config = json.loads((ngram / "config.json").read_text())
    config["cache"] = SETTINGS.to_dict()
    (ngram / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="cache: .*hidden states"):
        load_checkpoint(ngram)


def test_in_an_interpolation_the_cache_mixes_into_its_network_and_sums_to_one(
    tiny_lm: RecurrentLM, kn2: NgramLM
) -> None:
    """P = w_rnn ((1 − λ) P_rnn + λ P_cache) + w_kn P_kn, word by word, on every call."""
    mix = InterpolatedLM([tiny_lm, kn2], [0.6, 0.4], ["rnn", "kn2"])
    cached = mix.with_cache(SETTINGS)
    assert cached.neural_cache() == SETTINGS and mix.neural_cache() is None
    prefix = history_window(TEXT[:3], 100).tokens
    context = [*prefix, "<s>", "the", "dog"]
    rnn = tiny_lm.with_cache(SETTINGS)
    by_hand = 0.6 * np.exp(rnn.next_log_probs(context)) + 0.4 * np.exp(kn2.next_log_probs(context))
    got = np.exp(cached.next_log_probs(context).astype(np.float64))
    assert got == pytest.approx(by_hand, abs=1e-12)
    assert got.sum() == pytest.approx(1.0, abs=1e-9)
    (sentence,) = cached.score_sentences([TEXT[3]], prefix=prefix)
    parts = [m.score_sentences([TEXT[3]], prefix=prefix)[0].token_log_probs for m in (rnn, kn2)]
    want = np.log(0.6 * np.exp(parts[0]) + 0.4 * np.exp(parts[1]))
    assert sentence.token_log_probs == pytest.approx(want, abs=1e-9)
    words = [w for w in tiny_lm.vocab.tokens if w != "<s>"]
    for word, score in zip(words, cached.score_candidates(context, [[w] for w in words]),
                           strict=True):  # fmt: skip
        assert math.exp(score.log_prob) == pytest.approx(got[tiny_lm.vocab.id(word)], abs=1e-9)


def test_the_stream_with_a_cache_is_what_the_service_reads_sentence_by_sentence(
    tiny_lm: RecurrentLM,
) -> None:
    lm = tiny_lm.with_cache(SETTINGS)
    stream = lm.text_log_probs(TEXT, stream=True)
    served = [
        lp
        for k, sentence in enumerate(TEXT)
        for lp in lm.score_sentences([sentence], prefix=history_window(TEXT[:k], 1000).tokens)[
            0
        ].token_log_probs
    ]
    assert stream == pytest.approx(served, abs=1e-9)
    evaluation = lm.evaluate(TEXT)
    assert evaluation.cross_entropy == pytest.approx(-np.mean(stream), abs=1e-12)


def document(n: int = 60, seed: int = 0) -> list[list[str]]:
    """Sentences that repeat their document's words: what a cache is for."""
    rng = np.random.default_rng(seed)
    topic = ["york", "dog"]
    return [[*TEXT[int(rng.integers(len(TEXT)))], str(rng.choice(topic))] for _ in range(n)]


def test_tune_finds_the_best_of_its_grid_and_fits_the_weights_by_likelihood(
    tiny_lm: RecurrentLM,
) -> None:
    text = document()
    fit = fit_cache(tiny_lm, text, [0.0, 0.5], [5, 50])
    assert fit.perplexity < fit.perplexity_without
    assert fit.perplexity == pytest.approx(min(fit.grid.values()))
    tuned = tiny_lm.with_cache(fit.settings)
    assert math.exp(tuned.evaluate(text).cross_entropy) == pytest.approx(fit.perplexity, rel=1e-4)
    for weight in (fit.settings.weight * 0.8, min(fit.settings.weight * 1.2, 0.99)):  # optimum
        other = tiny_lm.with_cache(CacheSettings(fit.settings.theta, weight, fit.settings.size))
        assert math.exp(other.evaluate(text).cross_entropy) > fit.perplexity


def test_tune_on_an_interpolation_fits_the_general_mixture(
    tiny_lm: RecurrentLM, kn2: NgramLM
) -> None:
    mix = InterpolatedLM([tiny_lm, kn2], [0.5, 0.5], ["rnn", "kn2"])
    text = document(seed=1)
    fit = fit_cache(mix, text, [0.5], [50])
    assert fit.weights is not None and fit.weights.sum() == pytest.approx(1.0)
    tuned = mix.with_weights(fit.weights).with_cache(fit.settings)
    ppl = math.exp(-np.mean(tuned.text_log_probs(text, stream=True)))
    assert ppl == pytest.approx(fit.perplexity, rel=1e-4)
    refit = InterpolatedLM([tiny_lm, kn2], [0.5, 0.5]).with_cache(fit.settings)
    assert math.exp(-np.mean(refit.text_log_probs(text, stream=True))) > ppl  # weights mattered


def test_the_tune_command_writes_a_checkpoint_the_loader_and_info_accept(
    tmp_path: Path, tiny_lm: RecurrentLM, kn2: NgramLM, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_checkpoint(tmp_path / "rnn", tiny_lm)
    text = tmp_path / "valid.txt"
    text.write_text("\n".join(" ".join(s) for s in document()) + "\n")
    out = tmp_path / "tuned"
    args = ["tune", "--model", str(model), "--text", str(text), "--out", str(out),
            "--thetas", "0.5", "1", "--sizes", "10", "40", "--test", str(text)]  # fmt: skip
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "perplexity" in err and "test" in err
    tuned = load_checkpoint(out)
    settings = tuned.neural_cache()
    assert settings is not None and settings.size in (10, 40) and settings.theta in (0.5, 1.0)
    assert (
        tuned.metadata["cache_fit"]["perplexity"]
        < tuned.metadata["cache_fit"]["perplexity_without"]
    )
    assert main(["info", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["cache"] == settings.to_dict()
    assert main(args) == 2  # not replaced without --force
    assert "already holds a model" in capsys.readouterr().err
    ngram = save_checkpoint(tmp_path / "kn2", kn2)
    assert main(["tune", "--model", str(ngram), "--text", str(text), "--out",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert "outputs" in capsys.readouterr().err
    assert main(["tune", "--model", str(model), "--text", str(text), "--out", str(model)]) == 2
    assert "--out must be a new directory" in capsys.readouterr().err
    assert main([*args[:7], "--force", "--sizes", "0"]) == 2
    assert "--sizes" in capsys.readouterr().err


def test_with_a_cache_the_history_cost_counts_what_the_kept_memories_hold(
    tiny_lm: RecurrentLM,
) -> None:
    lm = tiny_lm.with_cache(SETTINGS)
    prefix = history_window(TEXT[:4], 1000).tokens
    assert lm.unread_positions(prefix) == len(prefix) + 1  # nothing kept yet
    lm.score_sentences([TEXT[4]], prefix=prefix)
    assert lm.unread_positions(prefix) == 0
    grown = history_window(TEXT, 1000).tokens
    assert lm.unread_positions(grown) == len(TEXT[4]) + 2  # the new sentence, <s> and </s>
    assert lm.with_cache(CacheSettings(0.8, 0.3, 1000)).unread_positions(prefix) == len(prefix) + 1


def test_a_combined_model_keeps_each_networks_own_cache(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    other = RecurrentLM(tiny_lm.net, tiny_lm.vocab, tiny_lm.tokenizer)
    second = CacheSettings(0.1, 0.2, 10)
    dirs = [save_checkpoint(tmp_path / "a", tiny_lm.with_cache(SETTINGS)),
            save_checkpoint(tmp_path / "b", other.with_cache(second))]  # fmt: skip
    mix = InterpolatedLM([load_checkpoint(d) for d in dirs], [0.5, 0.5], sources=dirs)
    out = save_checkpoint(tmp_path / "mix", mix)
    assert "cache" not in json.loads((out / "config.json").read_text())
    loaded = load_checkpoint(out)
    assert isinstance(loaded, InterpolatedLM)
    assert [c.neural_cache() for c in loaded.components] == [SETTINGS, second]
