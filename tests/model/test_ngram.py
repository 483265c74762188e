"""Kneser-Ney n-gram models: normalised distributions, the estimator's equations on a corpus
small enough to count by hand, ARPA files KenLM reads the same, checkpoints, the command."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.ngram_lm import NgramLM
from model.ngram.arpa import ArpaError, read_arpa, write_arpa
from model.ngram.kneser_ney import estimate, log10_distribution, prune_tables
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

SUBJECTS = ["the cat", "a dog", "the old man", "my sister", "the bird", "a child"]
VERBS = ["sat on", "looked at", "ran to", "saw", "liked", "walked past"]
OBJECTS = ["the mat", "a tree", "the house", "the river", "a small box", "my sister"]


def corpus(n: int = 400, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    return [
        f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}".split()
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def kn3() -> NgramLM:
    sentences = corpus()
    vocab = Vocabulary.from_corpus(sentences)
    tables = estimate([vocab.encode(s) for s in sentences], len(vocab), 3)
    return NgramLM(tables, vocab, Tokenizer("whitespace"))


@pytest.mark.parametrize(
    "context", ["", "the", "the cat", "my sister walked", "zebra the", "a a a"]
)
def test_every_next_word_distribution_sums_to_one(kn3: NgramLM, context: str) -> None:
    p = np.exp(kn3.next_log_probs(context))
    assert p[kn3.vocab.bos_id] == 0  # <s> is never predicted
    assert p.sum() == pytest.approx(1.0, abs=1e-12)


def test_the_estimator_follows_the_equations_on_a_countable_corpus() -> None:
    """Bigram modified Kneser-Ney by hand, from the definitions in the module docstring."""
    rng = np.random.default_rng(3)
    letters = list("abcdefgh")
    text = [list(rng.choice(letters, rng.integers(1, 5))) for _ in range(80)]
    vocab = Vocabulary.from_corpus(text)
    tables = estimate([vocab.encode(s) for s in text], len(vocab), 2)
    assert not tables[1].fallback  # the bigram discounts come from the formula
    lm = NgramLM(tables, vocab, Tokenizer("whitespace"))
    framed = [["<s>", *s, "</s>"] for s in text]
    bigrams = Counter((s[i], s[i + 1]) for s in framed for i in range(len(s) - 1))
    a1 = Counter(w for (_, w) in bigrams)  # distinct left neighbours; nothing precedes <s>
    words = [w for w in vocab.tokens if w != "<s>"]

    def discounts(adjusted: list[int]) -> list[float]:
        t = [sum(1 for a in adjusted if a == j) for j in (1, 2, 3, 4)]
        if 0 in t:
            return [0.0, 0.5, 1.0, 1.5]
        y = t[0] / (t[0] + 2 * t[1])
        d = [0.0, 1 - 2 * y * t[1] / t[0], 2 - 3 * y * t[2] / t[1], 3 - 4 * y * t[3] / t[2]]
        return d if all(0 < d[j] <= j for j in (1, 2, 3)) else [0.0, 0.5, 1.0, 1.5]

    d1, d2 = discounts([a1[v] for v in words if a1[v]]), discounts(list(bigrams.values()))
    assert tables[1].discounts == pytest.approx(d2[1:])

    def p_uni(w: str) -> float:
        total = sum(a1[v] for v in words)
        gamma = sum(d1[min(a1[v], 3)] for v in words if a1[v]) / total
        return max(a1[w] - d1[min(a1[w], 3)], 0) / total + gamma / len(words)

    for h in ["<s>", *letters]:
        ext = {w: c for (x, w), c in bigrams.items() if x == h}
        total = sum(ext.values())
        gamma = sum(d2[min(c, 3)] for c in ext.values()) / total
        for w in words:
            c = ext.get(w, 0)
            want = max(c - d2[min(c, 3)], 0) / total + gamma * p_uni(w)
            got = math.exp(lm.next_log_probs([] if h == "<s>" else [h])[vocab.id(w)])
            assert got == pytest.approx(want, rel=1e-9), (h, w)


def test_sentence_candidate_and_next_word_scores_agree(kn3: NgramLM) -> None:
    (sentence,) = kn3.score_sentences(["the cat sat on the mat"])
    steps = [
        kn3.next_log_probs(sentence.tokens[:i])[kn3.vocab.id(t)]
        for i, t in enumerate([*sentence.tokens, "</s>"])
    ]
    assert sentence.token_log_probs == pytest.approx(steps, abs=1e-12)
    (candidate,) = kn3.score_candidates("the cat", ["sat on"])
    assert candidate.token_log_probs == pytest.approx(steps[2:4], abs=1e-12)
    (no_bos,) = kn3.score_sentences(["the cat sat"], bos=False, eos=False)
    assert len(no_bos.token_log_probs) == 2  # "the" is given


def test_candidates_of_several_requests_in_one_batch_are_each_scored_alone(kn3: NgramLM) -> None:
    """One lookup for every token of every request: each candidate still gets the scores of
    its own context (an empty one, one shorter than the order, one with an unknown word)."""
    requests = [
        ("", ["the cat", "zebra"]),
        ("the", ["cat sat on", "old"]),
        ("my sister walked past the", ["mat", "zebra river"]),
    ]
    batch = kn3.score_candidates_batch(requests)
    for (context, candidates), scores in zip(requests, batch, strict=True):
        n = len(context.split())
        for text, score in zip(candidates, scores, strict=True):
            (whole,) = kn3.score_sentences([f"{context} {text}"], eos=False)
            assert score.token_log_probs == pytest.approx(whole.token_log_probs[n:], abs=1e-12)
            assert score.oov == ("zebra" in text)


def test_a_short_history_is_not_read_as_unknown_words() -> None:
    """Without <s> the history before the first token is empty, not <unk> (id 0, which pads
    the lookup rows): on a corpus with literal <unk>s, as PTB has, the two must differ."""
    text = [s.split() for s in ["<unk> <unk> cat sat", "<unk> cat ran", "a cat sat", "a dog ran"]]
    vocab = Vocabulary.from_corpus(text * 5)
    kn = NgramLM(estimate([vocab.encode(s) for s in text * 5], len(vocab), 3), vocab,
                 Tokenizer("whitespace"))  # fmt: skip
    (score,) = kn.score_sentences(["cat ran"], bos=False, eos=False)
    alone = log10_distribution(kn.tables, np.array([-1, vocab.id("cat")]))[vocab.id("ran")]
    after_unk = log10_distribution(kn.tables, vocab.encode(["<unk>", "cat"]))[vocab.id("ran")]
    assert alone != pytest.approx(after_unk)
    assert score.token_log_probs == pytest.approx([alone * math.log(10)], abs=1e-12)


def test_arpa_round_trip_and_kenlm_reads_the_same_model(tmp_path: Path, kn3: NgramLM) -> None:
    path = tmp_path / "kn3.arpa"
    write_arpa(path, kn3.tables, kn3.vocab)
    tables, vocab = read_arpa(path)
    again = NgramLM(tables, vocab, Tokenizer("whitespace"))
    sentences = ["the cat sat on the mat", "my sister saw a zebra", "a a a", "the"]
    ours = [s.log_prob for s in kn3.score_sentences(sentences)]
    assert [s.log_prob for s in again.score_sentences(sentences)] == pytest.approx(ours, abs=1e-5)
    kenlm = pytest.importorskip("kenlm")
    model = kenlm.Model(str(path))
    theirs = [model.score(s, bos=True, eos=True) * math.log(10) for s in sentences]
    assert theirs == pytest.approx(ours, abs=1e-4)


def test_a_damaged_arpa_file_is_refused_naming_the_line(tmp_path: Path, kn3: NgramLM) -> None:
    path = tmp_path / "kn3.arpa"
    write_arpa(path, kn3.tables, kn3.vocab)
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("\\2-grams:")) + 1
    lines[at] = "x\t" + lines[at].split("\t", 1)[1]
    path.write_text("\n".join(lines))
    with pytest.raises(ArpaError, match=f"line {at + 1}: not a number"):
        read_arpa(path)
    path.write_text("hello\n")
    with pytest.raises(ArpaError, match="not an ARPA file"):
        read_arpa(path)


def test_a_checkpoint_round_trips_and_damage_is_a_checkpoint_error(
    tmp_path: Path, kn3: NgramLM
) -> None:
    save_checkpoint(tmp_path / "m", kn3, {"note": 1})
    loaded = load_checkpoint(tmp_path / "m")
    assert isinstance(loaded, NgramLM) and loaded.order == 3 and loaded.metadata["note"] == 1
    sentences = ["the cat sat on the mat", "a zebra"]
    want = [s.log_prob for s in kn3.score_sentences(sentences)]
    assert [s.log_prob for s in loaded.score_sentences(sentences)] == pytest.approx(want, abs=1e-5)
    tensors = kn3.tensors()
    tensors["2.ids"][0, 0] = len(kn3.vocab) + 7
    broken = NgramLM.__new__(NgramLM)
    broken.__dict__.update(kn3.__dict__)
    broken.tensors = lambda: tensors  # type: ignore[method-assign]
    save_checkpoint(tmp_path / "bad", broken)
    with pytest.raises(CheckpointError, match="holds ids outside"):
        load_checkpoint(tmp_path / "bad")


def test_nextword_ngram_builds_imports_and_evaluates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, test = tmp_path / "train.txt", tmp_path / "test.txt"
    train.write_text("\n".join(" ".join(s) for s in corpus()) + "\n", encoding="utf-8")
    test.write_text("the cat sat on the mat\nmy sister saw a zebra\n", encoding="utf-8")
    out = tmp_path / "kn3"
    assert main(["ngram", "--train", str(train), "--order", "3", "--out", str(out),
                 "--test", str(test)]) == 0  # fmt: skip
    assert (out / "model.arpa").is_file()
    assert main(["eval", "--model", str(out), "--data", str(test)]) == 0
    built = capsys.readouterr().out
    imported = tmp_path / "imported"
    assert main(["ngram", "--import", str(out / "model.arpa"), "--out", str(imported)]) == 0
    assert main(["eval", "--model", str(imported), "--data", str(test)]) == 0
    again = capsys.readouterr().out
    assert (
        '"tokens": 13' in built
        and built.split('"perplexity": ')[1][:6] == again.split('"perplexity": ')[1][:6]
    )
    assert load_checkpoint(out).metadata["test_perplexity"] > 1
    assert main(["ngram", "--train", str(train), "--order", "3", "--out", str(out)]) == 2
    assert "already holds a model" in capsys.readouterr().err
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a b\n", encoding="utf-8")
    assert main(["ngram", "--train", str(tiny), "--out", str(tmp_path / "t")]) == 2
    assert "no 5-grams: the longest sentence is 4 tokens" in capsys.readouterr().err
    assert main(["ngram", "--train", str(tiny), "--order", "2", "--out", str(tmp_path / "t")]) == 0
    assert "as lmplz --discount_fallback" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "t").metadata["discount_fallback"] == [1, 2]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert main(["ngram", "--train", str(empty), "--out", str(tmp_path / "e")]) == 2
    assert "nextword ngram: error:" in capsys.readouterr().err


def test_an_arpa_file_with_a_word_outside_its_unigrams_is_refused(
    tmp_path: Path, kn3: NgramLM
) -> None:
    path = tmp_path / "kn3.arpa"
    write_arpa(path, kn3.tables, kn3.vocab)
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("\\3-grams:")) + 1
    prob, gram = lines[at].split("\t")[:2]
    lines[at] = f"{prob}\t{gram.rsplit(' ', 1)[0]} zebra"
    path.write_text("\n".join(lines))
    with pytest.raises(ArpaError, match=f"line {at + 1}: a word that is no unigram"):
        read_arpa(path)


def test_pruning_drops_rare_ngrams_keeps_the_rest_and_renormalises(tmp_path: Path) -> None:
    """Thresholds 0 0 2 as lmplz takes them: trigrams seen twice or less go (some contexts lose
    every extension), the others keep their probabilities, every context's distribution still
    sums to 1, and KenLM reads the file the same."""
    sentences = corpus(60, seed=5)
    vocab = Vocabulary.from_corpus(sentences)
    ids = [vocab.encode(s) for s in sentences]
    full = estimate(ids, len(vocab), 3)
    pruned = estimate(ids, len(vocab), 3, prune=[0, 0, 2])
    trigrams = Counter(
        tuple(w[i : i + 3]) for s in sentences for w in [["<s>", *s, "</s>"]]
        for i in range(len(w) - 2)
    )  # fmt: skip
    kept = {tuple(vocab.decode(row)) for row in pruned[2].ids()}
    assert kept == {t for t, c in trigrams.items() if c > 2} and len(kept) < len(trigrams)
    assert {t[:2] for t in trigrams} - {t[:2] for t in kept}  # contexts left with none
    assert len(pruned[1].keys) == len(full[1].keys)  # threshold 0: the bigrams all stay
    found, at = full[2].find(pruned[2].keys)
    assert found.all()
    assert pruned[2].log10_prob == pytest.approx(full[2].log10_prob[at], abs=1e-12)
    lm = NgramLM(pruned, vocab, Tokenizer("whitespace"))
    for context in ["", "the", "the cat", "my sister walked", "zebra the"]:
        assert np.exp(lm.next_log_probs(context)).sum() == pytest.approx(1.0, abs=1e-12)
    sentence = "the old man ran to my sister"
    (score,) = lm.score_sentences([sentence])
    steps = [lm.next_log_probs(score.tokens[:i])[vocab.id(t)]
             for i, t in enumerate([*score.tokens, "</s>"])]  # fmt: skip
    assert score.token_log_probs == pytest.approx(steps, abs=1e-12)
    path = tmp_path / "pruned.arpa"
    write_arpa(path, pruned, vocab)
    kenlm = pytest.importorskip("kenlm")
    theirs = kenlm.Model(str(path)).score(sentence, bos=True, eos=True) * math.log(10)
    assert theirs == pytest.approx(score.log_prob, abs=1e-4)


def test_renormalising_an_unpruned_model_gives_back_its_own_backoffs() -> None:
    """Kneser-Ney's backoff is the mass its seen words leave: the pruning's formula with
    nothing pruned must reproduce it (a check of the formula, not of the pruning)."""
    sentences = corpus(80, seed=2)
    vocab = Vocabulary.from_corpus(sentences)
    ids = [vocab.encode(s) for s in sentences]
    full = estimate(ids, len(vocab), 4)
    counts = [np.ones(len(t.keys), dtype=np.int64) for t in full]
    again = prune_tables(full, counts, [0, 0, 0, 0])
    for a, b in zip(again, full, strict=True):
        assert a.log10_backoff == pytest.approx(b.log10_backoff, abs=1e-9)


@pytest.mark.parametrize(
    ("prune", "message"),
    [(["1"], "0 for the unigrams"), (["0", "2", "1"], "must not decrease"),
     (["0", "-1"], "≥ 0"), (["0", "0", "0", "1"], "4 prune thresholds for an order-3")],
)  # fmt: skip
def test_bad_prune_thresholds_are_refused_naming_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], prune: list[str], message: str
) -> None:
    train = tmp_path / "train.txt"
    train.write_text("\n".join(" ".join(s) for s in corpus(50)) + "\n", encoding="utf-8")
    args = ["ngram", "--train", str(train), "--order", "3", "--out", str(tmp_path / "m")]
    assert main([*args, "--prune", *prune]) == 2
    err = capsys.readouterr().err
    assert "--prune" in err and message in err
    assert not (tmp_path / "m").exists()
    assert main([*args, "--prune", "0", "1"]) == 0
    assert load_checkpoint(tmp_path / "m").metadata["training"]["prune"] == [0, 1, 1]


def test_an_order_pruned_to_nothing_backs_off_through_it() -> None:
    """Thresholds that empty the trigrams leave a model that still scores (γ = 1 there)."""
    sentences = corpus(60, seed=5)
    vocab = Vocabulary.from_corpus(sentences)
    tables = estimate([vocab.encode(s) for s in sentences], len(vocab), 3, prune=[0, 0, 10**6])
    assert len(tables[2].keys) == 0
    lm = NgramLM(tables, vocab, Tokenizer("whitespace"))
    (score,) = lm.score_sentences(["the cat sat on the mat"])
    steps = [lm.next_log_probs(score.tokens[:i])[vocab.id(t)]
             for i, t in enumerate([*score.tokens, "</s>"])]  # fmt: skip
    assert score.token_log_probs == pytest.approx(steps, abs=1e-12)
    assert np.exp(lm.next_log_probs("the cat")).sum() == pytest.approx(1.0, abs=1e-12)


def test_predict_reads_a_history_shorter_than_the_order_whole() -> None:
    """Order 4 after "the": the history is <s> the (2 of the 3 words an order-4 model reads);
    the whole distribution must agree with the candidates call word for word."""
    sentences = corpus(200, seed=1)
    vocab = Vocabulary.from_corpus(sentences)
    kn4 = NgramLM(estimate([vocab.encode(s) for s in sentences], len(vocab), 4), vocab,
                  Tokenizer("whitespace"))  # fmt: skip
    for context in ["", "the", "the cat", "the cat sat"]:
        words = ["cat", "old", "sat", "mat"]
        scores = kn4.score_candidates(context, words)
        whole = kn4.next_log_probs(context)
        assert [whole[vocab.id(w)] for w in words] == pytest.approx(
            [s.log_prob for s in scores], abs=1e-12
        ), context
