"""``--normalize spoken``: text as recognisers write it, the same for training and requests."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from model.cli import main
from model.inference.checkpoint import load_checkpoint
from model.text.tokenize import Tokenizer, spoken_form

SPOKEN = Tokenizer("words", normalize="spoken")


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("The Time Traveller smiled.", ["the", "time", "traveller", "smiled"]),
        ('"Don’t," he said; "it’s late!"', ["don't", "he", "said", "it's", "late"]),
        (
            "a state-of-the-art and/or 80s-style idea",
            ["a", "state", "of", "the", "art", "and", "or", "80s", "style", "idea"],
        ),
        (
            "It costs $1,000.50 at 10:30, or 3.5%.",
            ["it", "costs", "1,000.50", "at", "10:30", "or", "3.5"],
        ),
        ("'quoted' O'Brien's rock'n'roll", ["quoted", "o'brien's", "rock'n'roll"]),
        ("snake_case — dash… (brackets) [1]", ["snake", "case", "dash", "brackets", "1"]),
        ("Zürich's CAFÉ", ["zürich's", "café"]),
    ],
)
def test_spoken_form_matches_recogniser_output(text: str, tokens: list[str]) -> None:
    assert SPOKEN(text) == tokens


def test_spoken_form_is_idempotent_and_keeps_recogniser_output_as_it_is() -> None:
    transcript = "i would like to book a flight to new york on the 3.5 o'clock train"
    assert spoken_form(transcript) == transcript
    text = 'He said: "Well—I don\u2019t know," (twice).'
    assert spoken_form(spoken_form(text)) == spoken_form(text)


@pytest.mark.parametrize(
    "word", ["हिन्दी", "ที่นี่", "مَرْحَبًا", "naïve", "e\u0301te\u0301", "Привет", "αβγ"]
)
def test_a_word_with_combining_marks_stays_one_word(word: str) -> None:
    """Marks (Devanagari vowel signs, Thai tone marks, Arabic harakat, a decomposed accent) are
    part of the word: "हिन्दी" came out as "ह न द"."""
    assert SPOKEN(word) == [unicodedata.normalize("NFC", word.lower())]
    assert SPOKEN(f"«{word}», {word}!") == [unicodedata.normalize("NFC", word.lower())] * 2


def test_dotted_capital_i_lowercases_into_one_word() -> None:
    assert SPOKEN("İstanbul") == ["i\u0307stanbul"]  # i and its dot, one token


def test_korean_keeps_the_space_between_words_where_a_comma_was() -> None:
    assert SPOKEN("서울, 부산, 대구") == ["서울", "부산", "대구"]


def test_cjk_punctuation_is_dropped_without_leaving_a_space() -> None:
    chars = Tokenizer("chars", normalize="spoken")
    assert chars("你好，世界。我们走吧！") == list("你好世界我们走吧")
    assert chars("你好 世界") == ["你", "好", " ", "世", "界"]  # a space that was there stays
    assert chars("Hi, 你好!") == ["h", "i", " ", "你", "好"]


def test_the_normalisation_is_recorded_and_checked() -> None:
    assert Tokenizer.from_dict(SPOKEN.to_dict()) == SPOKEN
    assert Tokenizer.from_dict({"name": "words"}).normalize == "none"  # checkpoints before it
    # without it, nothing new is written: older versions load the checkpoint (a rollback)
    assert Tokenizer("words").to_dict() == {"name": "words", "lowercase": False}
    with pytest.raises(ValueError, match="normalize must be one of"):
        Tokenizer.from_dict({"name": "words", "normalize": "shouty"})
    with pytest.raises(ValueError, match="unknown normalization"):
        Tokenizer("words", normalize="shouty")


def test_a_model_trained_in_spoken_form_reads_requests_in_spoken_form(tmp_path: Path) -> None:
    """Trained on punctuated prose with --normalize spoken, the model has no punctuation in its
    vocabulary, and a transcript without punctuation ends a sentence where prose would."""
    lines = ["The cat sat on the mat.", "The dog sat on the log!", "A cat ran; a dog sat."]
    corpus = tmp_path / "prose.txt"
    corpus.write_text("\n".join(lines * 40) + "\n", encoding="utf-8")
    out = tmp_path / "m"
    options = ["--tokenizer", "words", "--normalize", "spoken", "--layers", "1", "--emb", "16",
               "--hidden", "16", "--batch-size", "4", "--bptt", "8", "--epochs", "10",
               "--optimizer", "adam", "--lr", "0.01", "--dropout", "0"]  # fmt: skip
    assert main(["train", "--train", str(corpus), "--out", str(out), *options]) == 0
    lm = load_checkpoint(out)
    assert lm.tokenizer == SPOKEN
    assert not any(t in lm.vocab for t in (".", "!", ";", "The"))
    config = json.loads((out / "config.json").read_text())
    assert config["tokenizer"] == {"name": "words", "lowercase": False, "normalize": "spoken"}
    # a request with capitals and punctuation is read exactly as the transcript without them
    (raw,) = lm.score_sentences(["The cat sat on the mat."])
    (plain,) = lm.score_sentences(["the cat sat on the mat"])
    assert raw.tokens == plain.tokens and raw.token_log_probs == plain.token_log_probs
    end = plain.token_log_probs[-1]  # log P(</s> | the cat sat on the mat)
    assert end > -1.0  # the sentence ends here, with no "." needed
