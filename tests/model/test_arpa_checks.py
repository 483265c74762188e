"""What `nextword ngram` and `combine` write, the loader accepts: one set of checks
(``model.ngram.checks``) for estimated, imported and loaded models; ARPA read as KenLM reads it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import load_checkpoint
from model.inference.interpolated_lm import InterpolatedLM
from model.inference.ngram_lm import NgramLM
from model.ngram.arpa import read_arpa
from model.ngram.checks import NgramModelError
from model.ngram.kneser_ney import Order
from model.text.tokenize import Tokenizer

BASE = """\\data\\
ngram 1=5
ngram 2=2

\\1-grams:
-1.0\t<unk>\t0
-99\t<s>\t-0.3
-0.5\t</s>
-0.7\tcat\t-0.2
-0.9\tdog\t-0.1

\\2-grams:
-0.2\t<s> cat
-0.4\tcat </s>

\\end\\
"""


def write(path: Path, text: str, prefix: bytes = b"") -> Path:
    path.write_bytes(prefix + text.encode("utf-8"))
    return path


def imported(tmp_path: Path, text: str, capsys: pytest.CaptureFixture, **kw: bytes) -> str:
    """`nextword ngram --import` on ``text``: "" when it imports, else its error line."""
    arpa = write(tmp_path / "m.arpa", text, **kw)
    code = main(["ngram", "--import", str(arpa), "--out", str(tmp_path / "out"), "--force"])
    err = capsys.readouterr().err
    assert code in (0, 2), err
    return "" if code == 0 else err.strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (("-0.7\tcat", "0.5\tcat"), "line 9: log10 probability 0.5 is not in [-1000, 0]"),
        (("-0.7\tcat", "nan\tcat"), "line 9: log10 probability nan"),
        (("-0.7\tcat", "inf\tcat"), "line 9: log10 probability inf"),
        (("-0.7\tcat", "-inf\tcat"), "line 9: log10 probability -inf"),
        (("-0.7\tcat", "-1e39\tcat"), "line 9: log10 probability -1e+39"),
        (("-0.2\t<s> cat", "1e30\t<s> cat"), "line 13: log10 probability 1e+30"),
        (("cat\t-0.2", "cat\t1e30"), "line 9: log10 backoff 1e+30 is not within ±100"),
        (("cat\t-0.2", "cat\tnan"), "line 9: log10 backoff nan"),
        (("-0.4\tcat </s>", "-0.4\t<s> cat"), "line 14: the 2-gram of line 13 again"),
        (("ngram 2=2\n", "ngram 2=2\n" + "".join(f"ngram {k}=0\n" for k in range(3, 13))),
         "orders 1 to 12; nextword serves 1 to 10"),
    ],
)  # fmt: skip
def test_an_arpa_file_with_impossible_numbers_is_refused_naming_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture, edit: tuple[str, str], says: str
) -> None:
    """These imported before, and the service then answered probability 1.995 with normalized:
    true, perplexity 0.0, or a 500 (OverflowError); nothing is written now."""
    assert imported(tmp_path, BASE, capsys) == ""
    assert says in imported(tmp_path, BASE.replace(*edit), capsys)
    assert load_checkpoint(tmp_path / "out").metadata["imported"] == "m.arpa"  # the old one


def test_an_empty_order_without_its_section_imports(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """'ngram 2=0' with no \\2-grams: section was a KeyError traceback; the order is empty, as
    a pruned one can be, and lookups back off through it."""
    text = BASE.replace("ngram 2=2", "ngram 2=0")
    text = text[: text.index("\\2-grams:")] + "\\end\\\n"
    assert imported(tmp_path, text, capsys) == ""
    lm = load_checkpoint(tmp_path / "out")
    assert isinstance(lm, NgramLM) and lm.order == 2 and len(lm.tables[1].keys) == 0
    (dog,) = lm.score_candidates(["cat"], [["dog"]])  # backoff(cat) + log10 P(dog)
    assert dog.log_prob == pytest.approx((-0.2 - 0.9) * np.log(10), abs=1e-5)


def test_a_byte_order_mark_and_crlf_lines_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert imported(tmp_path, BASE.replace("\n", "\r\n"), capsys, prefix=b"\xef\xbb\xbf") == ""
    assert load_checkpoint(tmp_path / "out").vocab.tokens[3:] == ["cat", "dog"]


def test_fields_are_split_as_kenlm_splits_them(tmp_path: Path) -> None:
    """Only tabs and spaces separate fields, and only newlines lines: a token holding U+00A0,
    U+0085 or U+2028 is one token, as the kenlm module reads it (Python's split() cut it)."""
    word = "c\u00a0a\u0085t\u2028x"
    arpa = write(tmp_path / "m.arpa", BASE.replace("cat", word))
    tables, vocab = read_arpa(arpa)
    assert vocab.tokens[3:] == [word, "dog"]
    lm = NgramLM(tables, vocab, Tokenizer("whitespace"))
    (score,) = lm.score_sentences([[word]])
    ours = sum(score.token_log_probs) / np.log(10)
    kenlm = pytest.importorskip("kenlm")
    theirs = kenlm.Model(str(arpa)).score(word, bos=True, eos=True)
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_the_constructor_refuses_what_the_loader_refuses() -> None:
    """The checks run wherever a model is made: estimated tables with a probability above 1, a
    repeated n-gram or too few words never become a model, so none is written."""
    from model.ngram.kneser_ney import as_keys
    from model.text.vocab import Vocabulary

    vocab = Vocabulary(["<unk>", "<s>", "</s>", "cat"])
    keys = as_keys(np.arange(4).reshape(4, 1))
    good = Order(keys, np.full(4, -0.6), np.zeros(4))
    NgramLM([good], vocab, Tokenizer())
    for tables, says in [
        ([Order(keys, np.array([-0.6, -0.6, -0.6, 0.3]), np.zeros(4))], "probability 0.3"),
        ([Order(keys[[0, 1, 1, 3]], np.full(4, -0.6), np.zeros(4))], "n-gram 2 twice"),
        ([good] * 11, "order 1 to 10, got 11"),
    ]:
        with pytest.raises(NgramModelError, match=says):
            NgramLM(tables, vocab, Tokenizer())
    small = Vocabulary(["<unk>", "<s>", "</s>"])
    with pytest.raises(NgramModelError, match="0 words besides"):
        NgramLM([Order(keys[:3], np.full(3, -0.5), np.zeros(3))], small, Tokenizer())


def test_ngram_and_combine_stop_before_writing_what_the_loader_refuses(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """`ngram --train --min-count 2` leaving no word, and `combine` of 17 models, exited 0 and
    left checkpoints that serve/eval/info refused."""
    corpus = tmp_path / "tiny.txt"
    corpus.write_text("a b c\nd e f\n")
    out = tmp_path / "mc2"
    assert main(["ngram", "--train", str(corpus), "--min-count", "2", "--out", str(out)]) == 2
    assert "the vocabulary has 0 words besides" in capsys.readouterr().err
    assert not (out / "config.json").exists()
    model = tmp_path / "kn"
    assert main(["ngram", "--train", str(corpus), "--order", "2", "--out", str(model)]) == 0
    many = [arg for _ in range(17) for arg in ("--model", str(model))]
    weights = ["--weights", *["1"] * 17]
    assert main(["combine", *many, *weights, "--out", str(tmp_path / "mix")]) == 2
    assert "2 to 16 models, got 17" in capsys.readouterr().err
    assert not (tmp_path / "mix" / "config.json").exists()
    lm = load_checkpoint(model)
    with pytest.raises(ValueError, match="2 to 16 models"):
        InterpolatedLM([lm] * 17, [1.0] * 17)
