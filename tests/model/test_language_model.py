"""The interface every kind implements: what scores report, typed errors, the one normaliser."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.inference.checkpoint import load_checkpoint, save_checkpoint
from model.inference.gap_filling_lm import GapFillingLM
from model.inference.language_model import Call, InputError, UnsupportedCallError
from model.inference.recurrent_lm import RecurrentLM
from model.network.bidirectional import BiRNNLM
from model.network.layers import exp_rows, log_softmax, log_softmax_at, softmax
from model.network.recurrent import ModelConfig


@pytest.fixture
def gap_lm(tiny_lm: RecurrentLM) -> GapFillingLM:
    config = ModelConfig(len(tiny_lm.vocab), "gru", embed_size=4, hidden_size=5, bidirectional=True)
    return GapFillingLM(BiRNNLM(config, seed=1, dtype=np.float64), tiny_lm.vocab, tiny_lm.tokenizer)


def test_the_loader_builds_the_kind_the_checkpoint_holds(
    tmp_path: Path, tiny_lm: RecurrentLM, gap_lm: GapFillingLM
) -> None:
    save_checkpoint(tmp_path / "ltr", tiny_lm)
    save_checkpoint(tmp_path / "gap", gap_lm)
    ltr, gap = load_checkpoint(tmp_path / "ltr"), load_checkpoint(tmp_path / "gap")
    assert type(ltr) is RecurrentLM and ltr.calls == frozenset(Call)
    assert type(gap) is GapFillingLM and gap.calls == {Call.FILL} and gap.task == "gap-filling"


def test_candidate_scores_say_which_targets_were_outside_the_vocabulary(
    tiny_lm: RecurrentLM,
) -> None:
    zebra_cat, cat, new_zebra = tiny_lm.score_candidates("the", ["zebra cat", "cat", "new zebra"])
    assert (zebra_cat.oov, zebra_cat.oov_targets) == (True, [0])
    assert (cat.oov, cat.oov_targets) == (False, [])
    assert (new_zebra.oov, new_zebra.oov_targets) == (True, [1])


@pytest.mark.parametrize(("bos", "want"), [(True, [0, 2]), (False, [1])])
def test_sentence_scores_index_oov_targets_among_the_scored_tokens(
    tiny_lm: RecurrentLM, bos: bool, want: list[int]
) -> None:
    (score,) = tiny_lm.score_sentences([["zebra", "cat", "gnu"]], bos=bos)
    assert score.oov_positions == [0, 2]  # into tokens
    assert score.oov_targets == want  # into targets: without <s>, "zebra" is context only
    assert all(score.targets[i] in ("zebra", "gnu") for i in score.oov_targets)


def test_the_sentence_method_of_fill_reports_oov_targets_in_the_whole_sentence(
    tiny_lm: RecurrentLM,
) -> None:
    _, (score,) = tiny_lm.fill("zebra", "the", ["cat"])
    assert score.oov is False  # the candidate itself is known
    assert score.oov_targets == [0]  # "zebra", the first target of <s> zebra cat the </s>


def test_a_gap_filling_model_refuses_left_to_right_calls_with_a_typed_error(
    gap_lm: GapFillingLM,
) -> None:
    with pytest.raises(UnsupportedCallError) as caught:
        gap_lm.top_k("the")
    assert caught.value.call is Call.PREDICT and caught.value.calls == {Call.FILL}
    with pytest.raises(UnsupportedCallError, match="does not serve score"):
        gap_lm.score_sentences(["the cat"])
    gap_lm.require(Call.FILL)  # served: no error


def test_input_errors_name_the_argument_and_the_item(
    tiny_lm: RecurrentLM, gap_lm: GapFillingLM
) -> None:
    for call in (
        lambda: tiny_lm.score_candidates("the", ["cat", "  "]),
        lambda: gap_lm.fill("the", "sat", ["cat", ""]),
    ):
        with pytest.raises(InputError) as caught:
            call()
        assert (caught.value.argument, caught.value.index) == ("candidates", 1)
    with pytest.raises(InputError) as caught:
        tiny_lm.score_sentences(["the cat", "dog"], bos=False, eos=False)
    assert (caught.value.argument, caught.value.index) == ("sentences", 1)


@pytest.mark.parametrize("shift", [True, False])
def test_log_softmax_at_picks_entries_of_the_full_log_softmax(shift: bool) -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (6, 11))
    full = log_softmax(logits)
    rows, cols = np.array([0, 0, 3, 5, 5]), np.array([1, 10, 4, 0, 0])
    got, total = log_softmax_at(logits.copy(), rows, cols, shift=shift)
    np.testing.assert_allclose(got, full[rows, cols], atol=1e-12)
    c = logits.max(axis=1) if shift else 0.0
    np.testing.assert_allclose(total, np.exp(logits - np.reshape(c, (-1, 1))).sum(axis=1))


def test_the_shift_keeps_huge_logits_finite() -> None:
    logits = np.array([[1000.0, 999.0, -1000.0]])
    z = logits.copy()
    c, total = exp_rows(z)
    assert c[0] == 1000.0 and np.isfinite(total).all()
    np.testing.assert_allclose(
        softmax(logits)[0], [1 / (1 + np.e**-1), 1 / (1 + np.e), 0], atol=1e-12
    )
    np.testing.assert_allclose(np.exp(log_softmax(logits)), softmax(logits), atol=1e-12)


def test_whole_row_softmaxes_keep_numpys_pairwise_sums_and_the_input_type() -> None:
    x = np.random.default_rng(1).normal(0, 4, (5, 1000)).astype(np.float32)
    shifted = x - x.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    assert np.array_equal(log_softmax(x), shifted - np.log(exps.sum(axis=-1, keepdims=True)))
    assert np.array_equal(softmax(x), exps / exps.sum(axis=-1, keepdims=True))
    assert softmax(x.astype(np.float16)).dtype == np.float16
    assert log_softmax(np.array([1, 2, 3])).dtype == np.float64
