"""Tokenizers and the vocabulary."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import load_checkpoint
from model.text.batches import batchify, bptt_windows, sentence_stream, target_mask
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary


def test_whitespace_tokenizer_keeps_penn_treebank_tokens() -> None:
    assert Tokenizer("whitespace")(" pierre <unk> N years old\n") == [
        "pierre",
        "<unk>",
        "N",
        "years",
        "old",
    ]


def test_words_tokenizer_is_unicode_aware_and_can_lowercase() -> None:
    tok = Tokenizer("words", lowercase=True)
    assert tok("Don't stop — Zürich's state-of-the-art café!") == [
        "don't",
        "stop",
        "—",
        "zürich's",
        "state-of-the-art",
        "café",
        "!",
    ]
    assert Tokenizer("words")("Hello, World") == ["Hello", ",", "World"]


def test_nfc_normalisation_merges_composed_and_decomposed_accents() -> None:
    assert Tokenizer("words")("cafe\u0301") == Tokenizer("words")("caf\u00e9") == ["café"]


def test_chars_tokenizer_gives_one_token_per_character_and_one_per_space_run() -> None:
    assert Tokenizer("chars")("我昨天去了") == ["我", "昨", "天", "去", "了"]
    assert Tokenizer("chars")("  ab  c ") == ["a", "b", " ", "c"]
    assert Tokenizer("chars").detokenize(["a", "b", " ", "c"]) == "ab c"


def test_unknown_tokenizer_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown tokenizer 'bpe'"):
        Tokenizer("bpe")


def test_vocabulary_ids_are_stable_specials_first_then_by_count_then_alphabetical() -> None:
    counts = {"b": 3, "a": 3, "c": 5, "rare": 1, "<unk>": 4}
    vocab = Vocabulary.build(counts, min_count=2)
    assert vocab.tokens == ["<unk>", "<s>", "</s>", "c", "a", "b"]
    assert vocab.counts[:1] == [4]  # literal <unk> in the corpus counts towards <unk>
    assert (
        Vocabulary.build(dict(reversed(list(counts.items()))), min_count=2).tokens == vocab.tokens
    )
    assert len(Vocabulary.build(counts, max_size=4)) == 4


def test_encode_decode_and_unknown_words() -> None:
    vocab = Vocabulary.from_corpus([["我", "昨天", "去", "了"], ["我", "了"]])
    ids = vocab.encode(["我", "昨天", "火星"])
    assert ids.dtype == np.int64
    assert ids[2] == vocab.unk_id
    assert vocab.decode(ids) == ["我", "昨天", "<unk>"]
    assert "我" in vocab and "火星" not in vocab
    assert Vocabulary.from_dict(vocab.to_dict()).tokens == vocab.tokens


def test_vocabulary_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="must start with"):
        Vocabulary(["a", "b", "c"])
    with pytest.raises(ValueError, match="duplicate tokens"):
        Vocabulary(["<unk>", "<s>", "</s>", "x", "x"])
    with pytest.raises(ValueError, match="min_count must be at least 1"):
        Vocabulary.build({}, min_count=0)


def test_sentence_stream_frames_each_sentence_and_masks_the_given_start() -> None:
    vocab = Vocabulary.from_corpus([["我", "昨天", "去", "了"]])
    stream = sentence_stream([["我", "昨天", "去", "了"], ["了"]], vocab)
    tokens = vocab.decode(stream)
    assert tokens == ["<s>", "我", "昨天", "去", "了", "</s>", "<s>", "了", "</s>"]
    inputs, targets = stream[:-1], stream[1:]
    pairs = [(vocab.tokens[i], vocab.tokens[t]) for i, t in zip(inputs, targets, strict=True)]
    assert pairs[:5] == [
        ("<s>", "我"),
        ("我", "昨天"),
        ("昨天", "去"),
        ("去", "了"),
        ("了", "</s>"),
    ]
    mask = target_mask(targets, vocab)
    assert mask.tolist() == [1, 1, 1, 1, 1, 0, 1, 1]  # </s> → <s> is not a prediction
    assert mask.sum() == 4 + 1 + 1 + 1  # words plus one </s> per sentence


def test_batchify_and_windows_carry_contiguous_text_per_column() -> None:
    data = batchify(np.arange(23), batch_size=3)  # 7 steps of 3 columns; the tail of 2 is dropped
    assert data.shape == (7, 3)
    assert data[:, 1].tolist() == list(range(7, 14))
    windows = list(bptt_windows(data, bptt=4))
    assert [x.shape[0] for x, _ in windows] == [4, 2]
    for x, y in windows:
        np.testing.assert_array_equal(y, x + 1)  # targets are the next token in each column
    with pytest.raises(ValueError, match="too small for batch size 20"):
        batchify(np.arange(30), batch_size=20)


def test_the_jieba_tokenizer_cuts_chinese_into_words() -> None:
    jieba = pytest.importorskip("jieba")
    tokenizer = Tokenizer("jieba")
    assert tokenizer("我昨天上学迟到了") == ["我", "昨天", "上学", "迟到", "了"]
    assert tokenizer.library_versions() == {"jieba": jieba.__version__}  # kept with a model
    assert Tokenizer("whitespace").library_versions() == {}
    assert tokenizer("我 昨天\u3000上学") == ["我", "昨天", "上学"]  # spaces are no words
    assert tokenizer.detokenize(["我", "昨天"]) == "我昨天"
    assert Tokenizer.from_dict(tokenizer.to_dict()) == tokenizer


def test_the_jieba_tokenizer_without_jieba_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from model.text import tokenize

    monkeypatch.setitem(sys.modules, "jieba", None)  # import jieba now fails
    tokenize.jieba_segmenter.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"pip install 'nextword\[zh\]'"):
            Tokenizer("jieba")("我")
    finally:
        tokenize.jieba_segmenter.cache_clear()


def test_a_word_level_chinese_model_trains_and_scores_words(tmp_path: Path) -> None:
    pytest.importorskip("jieba")
    text = tmp_path / "zh.txt"
    text.write_text("\n".join(["我昨天上学迟到了", "他昨天上班迟到了", "我今天上学没有迟到"] * 30))
    out = tmp_path / "m"
    options = ["--layers", "1", "--emb", "8", "--hidden", "8", "--epochs", "1", "--bptt", "5"]
    assert main(["train", "--train", str(text), "--tokenizer", "jieba", *options,
                 "--out", str(out)]) == 0  # fmt: skip
    lm = load_checkpoint(out)
    assert "昨天" in lm.vocab and "迟到" in lm.vocab
    (score,) = lm.score_candidates("我昨天上学", ["迟到"])
    assert score.tokens == ["迟到"] and not score.oov


def test_a_model_built_on_jieba_words_records_the_jieba_version(tmp_path: Path) -> None:
    """Word-level Chinese end to end through ``nextword ngram``: the model reads jieba's words,
    and its metadata keeps jieba's version (another release may cut the text differently)."""
    jieba = pytest.importorskip("jieba")
    from model.cli import main
    from model.inference.checkpoint import load_checkpoint

    train = tmp_path / "zh.txt"
    train.write_text(
        "我昨天上学迟到了\n我今天上学没有迟到\n他昨天上学迟到了\n" * 5, encoding="utf-8"
    )
    out = tmp_path / "kn2"
    assert main(["ngram", "--train", str(train), "--order", "2", "--tokenizer", "jieba",
                 "--out", str(out)]) == 0  # fmt: skip
    lm = load_checkpoint(out)
    assert lm.metadata["tokenizer_libraries"] == {"jieba": jieba.__version__}
    (score,) = lm.score_sentences(["我昨天上学迟到了"])
    assert score.tokens == ["我", "昨天", "上学", "迟到", "了"] and not score.oov_positions
