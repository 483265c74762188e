"""The pyctcdecode language-model adapter: its scores are the model's, combined as pyctcdecode's
KenLM model combines them (alpha, beta, OOV offset, sentence end), one network step per word
in process, the same numbers over HTTP, and pyctcdecode's beam search decodes with it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.adapters.pyctcdecode_lm import AVG_TOKEN_LEN, NextwordCTCLM, unigrams_of
from model.adapters.spelling import treebank_split
from model.inference.recurrent_lm import RecurrentLM
from model.inference.spelling import SpellingModel
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from tests.conftest import perturbed
from tests.model.served import served_client

LN10 = math.log(10.0)


def lp(lm: RecurrentLM, context: list[str], tokens: list[str]) -> float:
    return lm.score_candidates(context, [tokens])[0].log_prob


def test_word_scores_are_the_models_weighted_as_pyctcdecode_does(tiny_lm: RecurrentLM) -> None:
    ctc = NextwordCTCLM.in_process(tiny_lm, alpha=0.7, beta=1.25, unk_score_offset=-4.0)
    state = ctc.get_start_state()
    score, state = ctc.score(state, "the")
    assert score == pytest.approx(0.7 * lp(tiny_lm, [], ["the"]) + 1.25, abs=1e-12)
    score, state = ctc.score(state, "cat")
    assert score == pytest.approx(0.7 * lp(tiny_lm, ["the"], ["cat"]) + 1.25, abs=1e-12)
    last, after = ctc.score(state, "sat", is_last_word=True)  # the word, then </s>
    want = lp(tiny_lm, ["the", "cat"], ["sat", "</s>"])
    assert last == pytest.approx(0.7 * want + 1.25, abs=1e-12)
    assert after == ("the", "cat", "sat")
    zebra, _ = ctc.score(state, "zebra")  # outside the vocabulary: <unk> plus the offset
    assert zebra == pytest.approx(
        0.7 * (lp(tiny_lm, ["the", "cat"], ["zebra"]) - 4.0 * LN10) + 1.25
    )
    end, same = ctc.score(state, "", is_last_word=True)  # nothing spelt: </s> alone, no bonus
    assert end == pytest.approx(0.7 * lp(tiny_lm, ["the", "cat"], ["</s>"])) and same == state
    ctc.reset_params(score_boundary=False)
    plain, _ = ctc.score(state, "sat", is_last_word=True)
    assert plain == pytest.approx(0.7 * lp(tiny_lm, ["the", "cat"], ["sat"]) + 1.25, abs=1e-12)


def test_partial_words_and_parameters(tiny_lm: RecurrentLM) -> None:
    ctc = NextwordCTCLM.in_process(tiny_lm, unk_score_offset=-3.0)
    assert ctc.score_partial_token("yo") == 0.0 and ctc.score_partial_token("york") == 0.0
    assert ctc.score_partial_token("yx") == -3.0
    long = "x" * (AVG_TOKEN_LEN + 3)
    assert ctc.score_partial_token(long) == pytest.approx(-3.0 * len(long) / AVG_TOKEN_LEN)
    assert ctc.score_partial_token("</") == -3.0  # the specials are not words
    assert ctc.order > 1000  # no history pruning: a recurrent model reads the whole text
    for bad in ({"alpha": "1"}, {"beta": float("nan")}, {"unk_score_offset": True}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ctc.reset_params(**bad)
    with pytest.raises(ValueError, match="score_boundary"):
        ctc.reset_params(score_boundary=1)


def test_each_word_costs_one_network_step_with_the_prefix_cache(tiny_lm: RecurrentLM) -> None:
    ctc = NextwordCTCLM.in_process(tiny_lm)
    assert tiny_lm.cache_stats() is not None  # turned on by the adapter
    state = ctc.get_start_state()
    steps = []
    for word in ["the", "cat", "sat", "on", "the", "mat"]:
        before = tiny_lm.steps_run
        _, state = ctc.score(state, word)
        steps.append(tiny_lm.steps_run - before)
    assert steps[1:] == [1] * 5  # the context read one word further, from the cached prefix


def test_over_http_the_scores_are_the_same(tiny_lm: RecurrentLM) -> None:
    with served_client(tiny_lm) as client:
        remote = NextwordCTCLM.http(client, unigrams_of(tiny_lm), alpha=0.6, beta=0.5)
        local = NextwordCTCLM.in_process(tiny_lm, alpha=0.6, beta=0.5)
        a, b = remote.get_start_state(), local.get_start_state()
        for i, word in enumerate(["the", "new", "york", "zebra", "ran"]):
            (sa, a), (sb, b) = (m.score(s, word, is_last_word=i == 4)
                                for m, s in ((remote, a), (local, b)))  # fmt: skip
            assert sa == pytest.approx(sb, abs=1e-5) and a == b
        assert remote.score_partial_token("ne") == local.score_partial_token("ne") == 0.0


def test_pyctcdecode_decodes_with_it(tiny_lm: RecurrentLM) -> None:
    """Two spellings the acoustics cannot tell apart ("cat" / "mat" after "the"): with the
    adapter, pyctcdecode's beam search picks the one the model prefers."""
    pyctcdecode = pytest.importorskip("pyctcdecode")
    labels = ["", " ", *"acehmt"]
    index = {c: i for i, c in enumerate(labels)}
    frames = []
    for ch in "the ?at":  # one frame per character, "?" = c or m with equal probability
        row = np.full(len(labels), 1e-4)
        if ch == "?":
            row[index["c"]] = row[index["m"]] = 0.5
        else:
            row[index[ch]] = 1.0
        frames.append(np.log(row / row.sum()))
    logits = np.array(frames)
    lm = NextwordCTCLM.in_process(tiny_lm, alpha=1.0, beta=0.0)
    decoder = pyctcdecode.BeamSearchDecoderCTC(pyctcdecode.Alphabet.build_alphabet(labels), lm)
    text = decoder.decode(logits)
    preferred = max(["cat", "mat"], key=lambda w: lp(tiny_lm, ["the"], [w, "</s>"]))
    assert text == f"the {preferred}"
    assert lm.calls > 0


def test_treebank_split_cuts_clitics_as_penn_treebank_does() -> None:
    cases = {
        "daewoo's": ["daewoo", "'s"],
        "don't": ["do", "n't"],
        "can't": ["ca", "n't"],
        "rivals'": ["rivals", "'"],
        "they’re": ["they", "'re"],  # the typographic apostrophe
        "dog'": ["dog", "'"],  # half spelt: the start of a clitic
        "don'": ["do", "n'"],
        "'s": ["'s"],
        "york": ["york"],
        "": [],
    }
    assert {word: treebank_split(word) for word in cases} == cases


@pytest.fixture
def clitic_lm() -> RecurrentLM:
    """A tiny float64 model over a treebank-style vocabulary: clitics are tokens."""
    vocab = Vocabulary(["<unk>", "<s>", "</s>", "the", "dog", "do", "ran", "'s", "n't"])
    config = ModelConfig(vocab_size=len(vocab), cell="gru", num_layers=1, embed_size=4,
                         hidden_size=3)  # fmt: skip
    net = perturbed(RNNLM(config, seed=5, dtype=np.float64), seed=6)
    return RecurrentLM(net, vocab, Tokenizer("whitespace"))


def test_a_written_clitic_is_scored_as_the_models_tokens(clitic_lm: RecurrentLM) -> None:
    plain = NextwordCTCLM.in_process(clitic_lm, alpha=1.0, beta=0.5, unk_score_offset=-4.0)
    split = NextwordCTCLM.in_process(
        clitic_lm, tokenize=treebank_split, alpha=1.0, beta=0.5, unk_score_offset=-4.0
    )
    state = ("the",)
    score, after = split.score(state, "dog's")
    assert score == pytest.approx(lp(clitic_lm, ["the"], ["dog", "'s"]) + 0.5, abs=1e-12)
    assert after == ("the", "dog", "'s")
    whole, _ = plain.score(state, "dog's")  # one OOV token without the split
    assert whole == pytest.approx(lp(clitic_lm, ["the"], ["dog's"]) - 4.0 * LN10 + 0.5)
    for partial in ("dog'", "dog's", "do", "don'", "don't"):
        assert split.score_partial_token(partial) == 0.0, partial
    assert plain.score_partial_token("dog'") == -4.0  # no word of the vocabulary starts so
    assert split.score_partial_token("dogx'") == -4.0  # "dogx" is no word
    assert split.score_partial_token("dog'x") == -4.0  # no clitic starts "'x"


def test_a_spoken_form_model_reads_a_decoders_capitals_in_process_and_over_http(
    tiny_lm: RecurrentLM,
) -> None:
    """A decoder with upper-case labels (wav2vec2's) spells "NEW"; a model trained with
    --normalize spoken knows "new". Whole words and partial ones are read in its form, in
    process and over HTTP (partial words got the OOV offset, and over HTTP every word was
    <unk>: the words were sent as written)."""
    spoken = RecurrentLM(tiny_lm.net, tiny_lm.vocab, Tokenizer("whitespace", normalize="spoken"))
    with served_client(spoken) as client:
        remote = NextwordCTCLM.http(client, unigrams_of(spoken), alpha=1.0, beta=0.0)
        local = NextwordCTCLM.in_process(spoken, alpha=1.0, beta=0.0)
        for adapter in (remote, local):
            assert adapter.score_partial_token("NE") == 0.0
            score, state = adapter.score((), "NEW")
            assert state == ("new",)
            assert score == pytest.approx(lp(tiny_lm, [], ["new"]), abs=1e-5)


def test_an_open_vocabulary_prices_oov_words_by_spelling_in_process_and_over_http(
    tiny_lm: RecurrentLM,
) -> None:
    """With a spelling model, a whole OOV word scores <unk> plus its spelling's share and no
    offset (detected in process and from /v1/models); partial words keep pyctcdecode's offset."""
    tiny_lm.use_spelling(SpellingModel.train(["the", "cat", "zebra", "zoo"], order=3))
    assert tiny_lm.spelling is not None
    local = NextwordCTCLM.in_process(tiny_lm, alpha=0.7, beta=1.0, unk_score_offset=-4.0)
    assert local.open_vocabulary
    state = ("the", "cat")
    want = lp(tiny_lm, list(state), ["zebra"]) + tiny_lm.spelling.log_prob("zebra")
    assert local.score(state, "zebra")[0] == pytest.approx(0.7 * want + 1.0, abs=1e-9)
    assert local.score_partial_token("zq") == -4.0
    with served_client(tiny_lm) as client:
        remote = NextwordCTCLM.http(client, unigrams_of(tiny_lm), alpha=0.7, beta=1.0,
                                    unk_score_offset=-4.0)  # fmt: skip
        assert remote.open_vocabulary
        assert remote.score(state, "zebra")[0] == pytest.approx(0.7 * want + 1.0, abs=1e-5)
    # open_vocabulary=False: the old pricing, <unk>'s whole probability plus the offset
    unk = lp(tiny_lm, list(state), ["zebra"])
    closed = NextwordCTCLM.in_process(tiny_lm, unk_score_offset=-4.0, open_vocabulary=False)
    assert closed.score(state, "zebra")[0] == pytest.approx(0.5 * (unk - 4.0 * LN10) + 1.5)
    with served_client(tiny_lm) as client:
        remote = NextwordCTCLM.http(client, unigrams_of(tiny_lm), unk_score_offset=-4.0,
                                    open_vocabulary=False)  # fmt: skip
        assert remote.score(state, "zebra")[0] == pytest.approx(
            0.5 * (unk - 4.0 * LN10) + 1.5, abs=1e-5
        )


def test_a_history_is_read_before_each_utterance_in_process_and_over_http(
    tiny_lm: RecurrentLM,
) -> None:
    """``use_history``: the words after the text before them, as the service's ``history`` reads
    it (``<s> h </s> <s> words``); None goes back to a sentence alone."""
    history = ["the dog ran", "new york"]
    before = ["the", "dog", "ran", "</s>", "<s>", "new", "york", "</s>", "<s>"]
    local = NextwordCTCLM.in_process(tiny_lm, alpha=1.0, beta=0.0)
    local.use_history(history)
    with served_client(tiny_lm) as client:
        remote = NextwordCTCLM.http(client, unigrams_of(tiny_lm), alpha=1.0, beta=0.0)
        remote.use_history(history)
        for ctc in (local, remote):
            first, state = ctc.score(ctc.get_start_state(), "the")
            assert first == pytest.approx(lp(tiny_lm, before, ["the"]), abs=1e-9)
            second, _ = ctc.score(state, "cat", is_last_word=True)
            assert second == pytest.approx(lp(tiny_lm, [*before, "the"], ["cat", "</s>"]), abs=1e-9)
            assert first != pytest.approx(lp(tiny_lm, [], ["the"]), abs=1e-6)  # it mattered
            ctc.use_history(None)
            alone, _ = ctc.score(ctc.get_start_state(), "the")
            assert alone == pytest.approx(lp(tiny_lm, [], ["the"]), abs=1e-9)


def test_a_bias_is_mixed_in_in_process_and_over_http(tiny_lm: RecurrentLM) -> None:
    """``use_bias``: the words scored as the service's ``bias`` scores them; None: no bias."""
    from model.inference.bias import Bias

    biased = tiny_lm.with_bias(Bias((("new", "york"), ("dog",)), (1.0, 1.0), 0.2, 0.5))
    local = NextwordCTCLM.in_process(tiny_lm, alpha=1.0, beta=0.0)
    local.use_bias(["new york", "dog"], 0.2)
    with served_client(tiny_lm) as client:
        remote = NextwordCTCLM.http(client, unigrams_of(tiny_lm), alpha=1.0, beta=0.0)
        remote.use_bias(["new york", "dog"], 0.2)
        for ctc in (local, remote):
            first, state = ctc.score(ctc.get_start_state(), "new")
            assert first == pytest.approx(lp(biased, [], ["new"]), abs=1e-9)
            second, _ = ctc.score(state, "york", is_last_word=True)
            assert second == pytest.approx(lp(biased, ["new"], ["york", "</s>"]), abs=1e-9)
            assert first != pytest.approx(lp(tiny_lm, [], ["new"]), abs=1e-6)  # it mattered
            ctc.use_bias(None)
            plain, _ = ctc.score(ctc.get_start_state(), "new")
            assert plain == pytest.approx(lp(tiny_lm, [], ["new"]), abs=1e-9)


def test_a_partial_word_of_a_biased_name_is_not_penalised(tiny_lm: RecurrentLM) -> None:
    ctc = NextwordCTCLM.in_process(tiny_lm, unk_score_offset=-10.0)
    assert ctc.score_partial_token("ween") == -10.0  # no word of the vocabulary starts so
    ctc.use_bias(["Weena", "the weena"])
    assert ctc.score_partial_token("Ween") == 0.0 == ctc.score_partial_token("ween")
    assert ctc.score_partial_token("weenx") == -10.0
    ctc.use_bias(None)
    assert ctc.score_partial_token("ween") == -10.0
