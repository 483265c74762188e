"""The flashlight-text adapter: its scores are the model's log-probabilities by word index, a
history is read once per state, the same numbers over HTTP, and flashlight's lexicon beam search
decodes with it."""

from __future__ import annotations

import numpy as np
import pytest

from model.adapters.flashlight_lm import flashlight_lm
from model.adapters.scoring import http_scorer, served_tokenizer, unigrams_of
from model.inference.recurrent_lm import RecurrentLM
from model.inference.spelling import SpellingModel
from model.text.tokenize import Tokenizer
from tests.model.served import served_client

pytest.importorskip("flashlight.lib.text.decoder")


def lp(lm: RecurrentLM, context: list[str], tokens: list[str]) -> float:
    return lm.score_candidates(context, [tokens])[0].log_prob


def test_scores_are_the_models_by_word_index(tiny_lm: RecurrentLM) -> None:
    words = ["the", "cat", "sat", "zebra"]
    fl = flashlight_lm(tiny_lm, words, oov_penalty=-2.0)
    root = fl.start(False)
    the, s1 = fl.score(root, 0)
    assert s1 == pytest.approx(lp(tiny_lm, [], ["the"]), abs=1e-12)
    cat, s2 = fl.score(the, 1)
    assert s2 == pytest.approx(lp(tiny_lm, ["the"], ["cat"]), abs=1e-12)
    _, zebra = fl.score(cat, 3)  # outside the vocabulary: <unk>, plus the penalty
    assert zebra == pytest.approx(lp(tiny_lm, ["the", "cat"], ["zebra"]) - 2.0, abs=1e-12)
    _, end = fl.finish(cat)
    assert end == pytest.approx(lp(tiny_lm, ["the", "cat"], ["</s>"]), abs=1e-12)
    calls = fl.calls
    again, s2_again = fl.score(the, 1)  # the same child state: answered from the map
    assert again is cat and s2_again == s2 and fl.calls == calls
    with pytest.raises(IndexError, match="word index 9"):
        fl.score(root, 9)
    fl.start(False)  # a new utterance empties the map
    assert fl.histories and len(fl.histories) == 1


def test_over_http_the_scores_are_the_same(tiny_lm: RecurrentLM) -> None:
    words = unigrams_of(tiny_lm)
    with served_client(tiny_lm) as client:
        remote, local = flashlight_lm(http_scorer(client), words), flashlight_lm(tiny_lm, words)
        a, b = remote.start(False), local.start(False)
        for word in ["the", "new", "york", "ran"]:
            (a, sa), (b, sb) = remote.score(a, words.index(word)), local.score(b, words.index(word))
            assert sa == pytest.approx(sb, abs=1e-5)
        assert remote.finish(a)[1] == pytest.approx(local.finish(b)[1], abs=1e-5)


def test_flashlight_decodes_with_it(tiny_lm: RecurrentLM) -> None:
    """Two spellings the emissions cannot tell apart ("cat" / "mat" after "the"): flashlight's
    lexicon decoder with the adapter picks the one the model prefers."""
    from flashlight.lib.text import decoder as fld

    tokens = ["-", "|", *"acehmt"]  # blank, word boundary (silence), letters
    index = {c: i for i, c in enumerate(tokens)}
    words = ["the", "cat", "mat"]
    frames = []
    for ch in "|the|?at|":  # one frame per character, "?" = c or m with equal probability
        row = np.full(len(tokens), 1e-4)
        if ch == "?":
            row[index["c"]] = row[index["m"]] = 0.5
        else:
            row[index[ch]] = 1.0
        frames.append(np.log(row / row.sum()))
    emissions = np.ascontiguousarray(np.array(frames, dtype=np.float32))
    lm = flashlight_lm(tiny_lm, words)
    trie = fld.Trie(len(tokens), index["|"])
    start = lm.start(False)
    for k, word in enumerate(words):
        trie.insert([index[c] for c in word] + [index["|"]], k, lm.score(start, k)[1])
    trie.smear(fld.SmearingMode.MAX)
    options = fld.LexiconDecoderOptions(
        beam_size=10, beam_size_token=len(tokens), beam_threshold=50.0, lm_weight=2.0,
        word_score=0.0, unk_score=float("-inf"), sil_score=0.0, log_add=False,
        criterion_type=fld.CriterionType.CTC,
    )  # fmt: skip
    decoder = fld.LexiconDecoder(options, trie, lm, index["|"], index["-"], -1, [], False)
    best = decoder.decode(emissions.ctypes.data, len(emissions), len(tokens))[0]
    decoded = [words[w] for w in best.words if w >= 0]
    preferred = max(["cat", "mat"], key=lambda w: lp(tiny_lm, ["the"], [w, "</s>"]))
    assert decoded == ["the", preferred]
    assert lm.calls > 0


def test_lexicon_words_are_read_in_the_models_form(tiny_lm: RecurrentLM) -> None:
    """Upper-case lexicon words for a model trained with --normalize spoken: each is cut into
    the model's tokens (in process by its tokenizer, over HTTP by the served one), not scored
    as one unknown token."""
    spoken = RecurrentLM(tiny_lm.net, tiny_lm.vocab, Tokenizer("whitespace", normalize="spoken"))
    words = ["THE", "NEW", "YORK", "..."]
    with served_client(spoken) as client:
        remote = flashlight_lm(http_scorer(client), words, tokenize=served_tokenizer(client))
        for fl in (remote, flashlight_lm(spoken, words)):
            state = fl.start(False)
            state, first = fl.score(state, 0)
            state, second = fl.score(state, 1)
            assert first == pytest.approx(lp(tiny_lm, [], ["the"]), abs=1e-5)
            assert second == pytest.approx(lp(tiny_lm, ["the"], ["new"]), abs=1e-5)
            state, nothing = fl.score(state, 3)  # only punctuation: no tokens, no step
            assert nothing == 0.0 and fl.histories[state] == ("the", "new")


def test_an_open_vocabulary_prices_lexicon_words_outside_it_by_spelling(
    tiny_lm: RecurrentLM,
) -> None:
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat", "zebra"], order=3))
    assert tiny_lm.spelling is not None
    words = ["the", "zebra"]
    fl = flashlight_lm(tiny_lm, words)
    the, _ = fl.score(fl.start(False), 0)
    _, zebra = fl.score(the, 1)
    want = lp(tiny_lm, ["the"], ["zebra"]) + tiny_lm.spelling.log_prob("zebra")
    assert zebra == pytest.approx(want, abs=1e-9)
    with served_client(tiny_lm) as client:
        remote = flashlight_lm(http_scorer(client), words)
        a, _ = remote.score(remote.start(False), 0)
        assert remote.score(a, 1)[1] == pytest.approx(want, abs=1e-5)


def test_a_history_is_read_before_each_utterance(tiny_lm: RecurrentLM) -> None:
    words = ["the", "cat", "sat"]
    before = ["new", "york", "</s>", "<s>"]
    with served_client(tiny_lm) as client:
        for lm in (flashlight_lm(tiny_lm, words), flashlight_lm(http_scorer(client), words)):
            lm.use_history([["new", "york"]])
            state = lm.start(False)
            _, score = lm.score(state, 1)
            assert score == pytest.approx(
                tiny_lm.score_candidates(before, [["cat"]])[0].log_prob, abs=1e-9
            )


def test_a_bias_is_mixed_in(tiny_lm: RecurrentLM) -> None:
    from model.inference.bias import Bias

    words = ["the", "cat", "sat"]
    biased = tiny_lm.with_bias(Bias((("cat",),), (1.0,), 0.3, 0.5))
    with served_client(tiny_lm) as client:
        for lm in (flashlight_lm(tiny_lm, words), flashlight_lm(http_scorer(client), words)):
            lm.use_bias(["cat"], 0.3)
            _, score = lm.score(lm.start(False), 1)
            assert score == pytest.approx(biased.score_candidates([], [["cat"]])[0].log_prob,
                                          abs=1e-9)  # fmt: skip
            lm.use_bias(None)
            _, plain = lm.score(lm.start(False), 1)
            assert plain == pytest.approx(tiny_lm.score_candidates([], [["cat"]])[0].log_prob,
                                          abs=1e-9)  # fmt: skip
