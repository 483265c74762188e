"""The open vocabulary (model/inference/spelling.py): the character model is a distribution over
strings, the word distribution in and out of the vocabulary sums to 1 after a history, every
kind scores an OOV word as P(<unk> | h) · P_spell(w | w ∉ V), and checkpoints keep it."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.evaluation import evaluate_file
from model.inference.interpolated_lm import InterpolatedLM
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.inference.spelling import SCALAR_VALUES, SpellingModel
from model.ngram.kneser_ney import estimate
from model.text.tokenize import Tokenizer
from model.text.vocab import SPECIALS, Vocabulary

WORDS = ["ab", "ba", "aab", "abba", "b", "bab", "aa", "abab", "bba", "baa"]
VOCAB = ["aa", "ab", "b"]  # the word model's words (V), over the same two letters
OTHER = "z"  # stands for any of the characters never seen: they share one symbol's mass


def strings(max_length: int) -> list[str]:
    """Every string of length 0..max_length over a, b and one unseen character."""
    letters = "ab" + OTHER
    return ["".join(p) for n in range(max_length + 1) for p in itertools.product(letters, repeat=n)]


def unseen_weight(word: str) -> float:
    """How many strings ``word`` stands for: each unseen character is any of the others."""
    return (SCALAR_VALUES - 2) ** word.count(OTHER)


def class_mass(spelling: SpellingModel, word: str, end: bool) -> float:
    """P_char of all the strings ``word`` stands for (with </w> when ``end``, else the prefix)."""
    lp = spelling.char_log_prob(word) if end else spelling.prefix_log_prob(word)
    return math.exp(lp) * unseen_weight(word)


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_the_character_model_is_a_distribution_over_strings(order: int) -> None:
    """Σ P(strings up to length L) + P(not ended after L characters) = 1: every step's
    distribution over the characters, the unseen ones and </w> sums to 1."""
    spelling = SpellingModel.train(WORDS, order=order)
    L = 6
    ended = math.fsum(class_mass(spelling, w, end=True) for w in strings(L))
    going_on = math.fsum(class_mass(spelling, w, end=False) for w in strings(L + 1)
                         if len(w) == L + 1)  # fmt: skip
    assert ended + going_on == pytest.approx(1.0, abs=1e-12)


def test_words_outside_the_vocabulary_share_exactly_what_is_left() -> None:
    """Σ over strings outside V (non-empty) of P_spell(w | w ∉ V) = 1: enumerated to length L,
    plus the mass of the longer ones (the prefixes of length L+1, over the normaliser)."""
    spelling = SpellingModel.train(WORDS, order=3).fit([*SPECIALS, *VOCAB])
    L = 6
    outside = [w for w in strings(L) if w and w not in VOCAB]
    enumerated = math.fsum(math.exp(spelling.log_prob(w)) * unseen_weight(w) for w in outside)
    longer = math.fsum(
        class_mass(spelling, w, end=False) for w in strings(L + 1) if len(w) == L + 1
    )
    assert enumerated + longer / math.exp(spelling.log_z) == pytest.approx(1.0, abs=1e-12)


def test_every_word_in_and_out_of_the_vocabulary_sums_to_one_after_a_history() -> None:
    """The word model's distribution with <unk> shared out by spelling: the words of V (and
    </s>) plus every string outside V, after three different histories."""
    vocab = Vocabulary([*SPECIALS, *VOCAB])
    lm = ngram_model(vocab, [["ab", "b"], ["aa", "ab", "b", "b"], ["b", "zz"]])
    lm.use_spelling(SpellingModel.train(WORDS, order=3))
    assert lm.spelling is not None
    L = 6
    outside = [w for w in strings(L) if w and w not in vocab]
    spelled = math.fsum(math.exp(lm.spelling.log_prob(w)) * unseen_weight(w) for w in outside)
    tail = math.fsum(class_mass(lm.spelling, w, end=False) for w in strings(L + 1)
                     if len(w) == L + 1) / math.exp(lm.spelling.log_z)  # fmt: skip
    for history in ([], ["ab"], ["b", "aa"]):
        p = np.exp(lm.next_log_probs(history).astype(np.float64))
        known = math.fsum(p[vocab.id(w)] for w in [*VOCAB, "</s>"])
        total = known + p[vocab.unk_id] * (spelled + tail)
        assert total == pytest.approx(1.0, abs=1e-9), history


def ngram_model(vocab: Vocabulary, sentences: list[list[str]]) -> NgramLM:
    tables = estimate([vocab.encode(s) for s in sentences], len(vocab), 2)
    return NgramLM(tables, vocab, Tokenizer("whitespace"))


def test_unseen_characters_share_the_unseen_symbol_evenly() -> None:
    spelling = SpellingModel.train(WORDS, order=2)
    a, b = spelling.char_log_prob("aẞ"), spelling.char_log_prob("a😀")
    assert a == b  # any two unseen characters: the same share
    assert math.exp(a) < math.exp(spelling.char_log_prob("ab")) / 1e5  # a floor, not a rival


def test_spelling_tells_unknown_words_apart() -> None:
    """Words shaped like the training words score higher than ones that are not."""
    spelling = SpellingModel.train(["weena", "filby", "eloi", "morlocks", "time", "machine",
                                    "traveller", "psychologist"], order=4)  # fmt: skip
    spelling.fit([*SPECIALS, "the"])
    assert spelling.log_prob("weeno") > spelling.log_prob("xqzwk") + 5
    assert spelling.log_prob("machines") > spelling.log_prob("senihcam")


def test_a_recurrent_models_oov_word_is_unk_times_its_spelling(
    tiny_lm: RecurrentLM, tmp_path: Path
) -> None:
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat", "weena", "filby"], order=3))
    assert tiny_lm.spelling is not None
    (score,) = tiny_lm.score_candidates("the", ["weena"])
    assert score.oov_words() == ["weena"]
    unk = tiny_lm.next_log_probs("the")[tiny_lm.vocab.unk_id]
    assert score.token_log_probs[0] == pytest.approx(float(unk), abs=1e-6)  # the model: <unk>
    # the checkpoint keeps it: the same share after a round trip, the same checksum as without
    save_checkpoint(tmp_path / "m", tiny_lm)
    loaded = load_checkpoint(tmp_path / "m")
    assert loaded.spelling is not None
    assert loaded.spelling.log_prob("weena") == tiny_lm.spelling.log_prob("weena")
    assert loaded.spelling.to_dict() == tiny_lm.spelling.to_dict()


def test_an_interpolation_shares_out_the_mixtures_unk(tiny_lm: RecurrentLM) -> None:
    vocab = tiny_lm.vocab
    ngram = ngram_model(vocab, [["the", "cat", "sat"], ["the", "dog", "ran", "on", "mat"]])
    mixed = InterpolatedLM([tiny_lm, ngram], [0.3, 0.7])
    mixed.use_spelling(SpellingModel.train(vocab.tokens[3:], order=2))
    (score,) = mixed.score_candidates("the", ["zebra"])
    p_unk = 0.3 * math.exp(tiny_lm.next_log_probs("the")[0]) + 0.7 * math.exp(
        ngram.next_log_probs("the")[0]
    )
    assert score.token_log_probs[0] == pytest.approx(math.log(p_unk), abs=1e-6)


def test_a_damaged_spelling_section_is_refused_naming_it(
    tiny_lm: RecurrentLM, tmp_path: Path
) -> None:
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat"], order=2))
    save_checkpoint(tmp_path / "m", tiny_lm)
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    for damage, message in [
        (lambda c: c["spelling"].update(order=11), "order must be 1 to 10"),
        (lambda c: c["spelling"].update(method="x"), "method must be"),
        (lambda c: c.pop("spelling"), "spelling section needs its spelling file"),
    ]:
        damaged = json.loads(json.dumps(config))
        damage(damaged)
        config_path.write_text(json.dumps(damaged))
        with pytest.raises(CheckpointError, match=message):
            load_checkpoint(tmp_path / "m")


def test_eval_reports_open_vocabulary_figures(tiny_lm: RecurrentLM, tmp_path: Path) -> None:
    """open_cross_entropy = the closed one less the OOV words' spelling shares per token."""
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat", "weena"], order=2))
    assert tiny_lm.spelling is not None
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on weena\nthe zebra ran\n")
    figures = evaluate_file(tiny_lm, text)
    spelled = tiny_lm.spelling.log_prob("weena") + tiny_lm.spelling.log_prob("zebra")
    expected = figures["cross_entropy"] - spelled / figures["tokens"]
    assert figures["open_cross_entropy"] == pytest.approx(expected, abs=1e-5)
    assert figures["open_perplexity"] > figures["perplexity"]  # a word costs more than <unk>


def test_a_literal_unk_is_a_string_outside_the_vocabulary_not_the_class(
    tiny_lm: RecurrentLM,
) -> None:
    """The class of unknown words is P(<unk> | h); the string "<unk>" in a text is one of the
    strings outside V and gets its share, so its mass is not counted twice."""
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat"], order=2))
    assert tiny_lm.spelling is not None
    (score,) = tiny_lm.score_candidates("the", ["<unk>"])
    unk = float(tiny_lm.next_log_probs("the")[tiny_lm.vocab.unk_id])
    assert score.token_log_probs == pytest.approx([unk], abs=1e-6)  # the model's: the class
    (spelled,) = tiny_lm.spelled(score)
    assert spelled == pytest.approx(unk + tiny_lm.spelling.log_prob("<unk>"), abs=1e-6)
    assert spelled < unk - 5


def test_a_character_models_unknown_characters_sum_to_what_unk_holds() -> None:
    """A tokenizer that cuts text into characters makes no longer token: the event space is
    the single characters, the seen ones outside V and every unseen one."""
    vocab = Vocabulary([*SPECIALS, "a", "b"])
    tables = estimate([vocab.encode(s) for s in [["a", "b"], ["b", "c", "a"]]], len(vocab), 2)
    lm = NgramLM(tables, vocab, Tokenizer("chars"))
    lm.use_spelling(SpellingModel.train(["a", "b", "c", "d"], order=2))
    assert lm.spelling is not None
    outside = [math.exp(lm.spelling.log_prob(c)) for c in "cd"]
    unseen = math.exp(lm.spelling.log_prob("z")) * (SCALAR_VALUES - 4)
    assert math.fsum(outside) + unseen == pytest.approx(1.0, abs=1e-12)
    p = np.exp(lm.next_log_probs(["a"]).astype(np.float64))
    total = p[vocab.id("a")] + p[vocab.id("b")] + p[vocab.id("</s>")] + p[vocab.unk_id]
    assert total == pytest.approx(1.0, abs=1e-9)  # and <unk>'s share is all of the rest


def test_a_trained_on_that_is_not_a_source_and_a_count_is_refused(
    tiny_lm: RecurrentLM, tmp_path: Path
) -> None:
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat"], order=2))
    save_checkpoint(tmp_path / "m", tiny_lm)
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    for bad in ({"types": "many"}, {"order": 7}, {"source": 3}, {"types": -1}):
        damaged = json.loads(json.dumps(config))
        damaged["spelling"]["trained_on"] = bad
        config_path.write_text(json.dumps(damaged))
        with pytest.raises(CheckpointError, match="trained_on has a source"):
            load_checkpoint(tmp_path / "m")


def test_eval_open_figures_do_not_depend_on_the_batch_size(
    tiny_lm: RecurrentLM, tmp_path: Path
) -> None:
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat", "weena"], order=2))
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on weena\nthe zebra ran\nthe dog sat on the mat\n" * 3)
    one, batched = evaluate_file(tiny_lm, text), evaluate_file(tiny_lm, text, batch_size=4)
    assert batched["open_isolated_cross_entropy"] == pytest.approx(
        one["open_isolated_cross_entropy"], abs=1e-5
    )
    assert "open_cross_entropy" in one and "open_cross_entropy" not in batched
