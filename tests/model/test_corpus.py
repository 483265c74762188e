"""Reading corpora: strict UTF-8 with the place of a bad byte, and the two sentence splits."""

from __future__ import annotations

from pathlib import Path

import pytest

from model.text.corpus import CorpusError, load_sentences, read_text, split_text
from model.text.tokenize import Tokenizer


def test_missing_empty_and_directory_paths_are_reported(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="nope.txt: no such file"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text(" \n\n ")
    with pytest.raises(CorpusError, match="empty.txt: the file is empty"):
        read_text(tmp_path / "empty.txt")
    with pytest.raises(CorpusError, match="is a directory"):
        read_text(tmp_path)


def test_non_utf8_bytes_are_reported_with_line_column_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(
        CorpusError, match=r"latin1.txt: not UTF-8 at line 2, column 4 \(byte offset 14: 0xe9\)"
    ):
        read_text(path)


def test_a_byte_order_mark_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffhello".encode())
    assert read_text(path) == "hello"


def test_line_split_keeps_non_blank_lines() -> None:
    assert split_text("a b\n\n  \nc\n", "lines") == ["a b", "c"]


def test_sentence_split_unwraps_paragraphs_and_cuts_at_end_marks() -> None:
    text = (
        "The Time Traveller was\nexpounding. His eyes\nshone! “Is it?” he said.\n\nA new paragraph"
    )
    assert split_text(text, "sentences") == [
        "The Time Traveller was expounding.",
        "His eyes shone!",
        "“Is it?”",
        "he said.",
        "A new paragraph",
    ]
    assert split_text("却说甄士隐。俄而大醉！又说", "sentences") == [
        "却说甄士隐。",
        "俄而大醉！",
        "又说",
    ]


def test_a_long_run_of_stops_is_cut_in_linear_time() -> None:
    """A request's ``history`` is split by this: the old pattern backtracked quadratically on a
    run of stops not followed by a space (200,000 characters: minutes on the compute thread).
    The alarm only catches a hang; the assertions are on the sentences."""
    import signal

    def hung(*_: object) -> None:
        raise TimeoutError("split_text did not finish in 60 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    try:
        assert split_text("." * 200_000 + "x", "sentences") == ["." * 200_000 + "x"]
        assert split_text("a" + "!" * 100_000 + " b", "sentences") == ["a" + "!" * 100_000, "b"]
        assert split_text("?" * 50_000 + " next.", "sentences") == ["?" * 50_000, "next."]
        # a lone stop stays with the sentence it starts, as before
        assert split_text("He paused. … Then he left.", "sentences") == [
            "He paused.",
            "… Then he left.",
        ]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_load_sentences_tokenises_and_drops_empty_ones(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("Hello, World!\n...\n", encoding="utf-8")
    assert load_sentences(path, Tokenizer("words", lowercase=True), "lines") == [
        ["hello", ",", "world", "!"],
        [".", ".", "."],
    ]
