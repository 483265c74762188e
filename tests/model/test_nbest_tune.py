"""``nextword tune --nbest``: malformed lines named, weights fitted where the model helps, the
error rates in and out of sample, and a copy whose ``rerank`` section the service defaults to."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.cli import main
from model.inference.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.inference.ngram_lm import NgramLM
from model.inference.rerank_weights import RerankWeights
from model.ngram.kneser_ney import estimate
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from model.training.nbest import NbestError, NbestList, read_nbest, tune_nbest
from tests.model.test_history import TEXT


@pytest.fixture
def kn() -> NgramLM:
    vocab = Vocabulary.from_corpus(TEXT)
    return NgramLM(estimate([vocab.encode(s) for s in TEXT * 3], len(vocab), 3), vocab,
                   Tokenizer("whitespace"))  # fmt: skip


def lists(n: int = 40, seed: int = 0) -> list[dict[str, Any]]:
    """A recogniser that slightly prefers a scrambled sentence to the right one."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        words = TEXT[k % len(TEXT)]
        scrambled = list(rng.permutation(words))
        if scrambled == words:
            scrambled = words[::-1]
        out.append({"id": k, "reference": " ".join(words), "hypotheses": [
            {"text": " ".join(scrambled), "score": -1.0},
            {"text": " ".join(words), "score": -1.5},
        ]})  # fmt: skip
    return out


def write(path: Path, records: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", r"x.jsonl:2: not JSON"),
        ("[1, 2]", r"x.jsonl:2: must be a JSON object"),
        ({"hypotheses": [{"text": "a"}]}, r"x.jsonl:2: reference must be"),
        ({"reference": "a", "hypotheses": []}, r"x.jsonl:2: hypotheses must be a list of 1"),
        ({"reference": "a", "hypotheses": [{"txt": "a"}]}, r"hypotheses\[0\]: must be an object"),
        ({"reference": "a", "hypotheses": [{"text": "a", "score": "1"}]},
         r"hypotheses\[0\]\.score must be a finite number"),
        ({"reference": "a", "hypotheses": [{"text": "a"}], "bias": "x"}, r"bias must be a list"),
        ('{"reference": "a", "hypotheses": [{"text": "a", "score": 1' + "0" * 400 + "}]}",
         r"hypotheses\[0\]\.score must be a finite number"),
        ("[" * 100_000 + "]" * 100_000, r"x.jsonl:2: not JSON"),
        ({"reference": "a", "hypotheses": [{"text": "a" * 20_001}]}, r"at most 20,000"),
    ],
)  # fmt: skip
def test_a_malformed_line_is_named_by_line_and_field(
    tmp_path: Path, line: Any, message: str
) -> None:
    path = write(tmp_path / "x.jsonl", [lists(1)[0], line])
    with pytest.raises(NbestError, match=message):
        read_nbest(path)


def test_the_weights_are_fitted_where_the_model_helps(kn: NgramLM) -> None:
    items = [
        NbestList(r["reference"], [h["text"] for h in r["hypotheses"]],
                  np.array([h["score"] for h in r["hypotheses"]]))
        for r in lists()
    ]  # fmt: skip
    messages: list[str] = []
    report = tune_nbest(kn, items, messages.append)
    assert report["first_pass"]["wer"] > 0 and report["reranked"]["wer"] == 0.0
    assert report["reranked_cross_validated"]["wer"] == 0.0 and report["oracle"]["wer"] == 0.0
    assert report["lm_weight"] > 0
    low, high = report["cross_validated_minus_first_pass_ci95"]
    assert low <= high < 0  # reranking clearly better
    assert any("cross-validated" in m for m in messages)


def test_the_command_writes_a_copy_with_the_weights_and_the_loader_checks_them(
    tmp_path: Path, kn: NgramLM, capsys: pytest.CaptureFixture[str]
) -> None:
    model = save_checkpoint(tmp_path / "kn", kn)
    dev = write(tmp_path / "dev.jsonl", lists())
    out = tmp_path / "tuned"
    assert main(["tune", "--model", str(model), "--nbest", str(dev), "--out", str(out)]) == 0
    assert "first pass" in capsys.readouterr().err
    tuned = load_checkpoint(out)
    assert tuned.rerank is not None and tuned.rerank.lm_weight > 0
    assert tuned.metadata["rerank_fit"]["lists"] == 40
    config = json.loads((out / "config.json").read_text())
    assert config["rerank"] == tuned.rerank.to_dict()
    config["rerank"] = {"lm_weight": "heavy", "length_bonus": 0}
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: rerank: rerank lm_weight must be"):
        load_checkpoint(out)
    bad = write(tmp_path / "bad.jsonl", [lists(1)[0], "{"])
    assert main(["tune", "--model", str(model), "--nbest", str(bad), "--out",
                 str(tmp_path / "x")]) == 2  # fmt: skip
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: one of --text and --nbest is required
        main(["tune", "--model", str(model), "--out", str(tmp_path / "y")])


def test_rerank_weights_are_checked() -> None:
    with pytest.raises(ValueError, match="lm_weight must be a number in"):
        RerankWeights(float("nan"), 0.0)
    with pytest.raises(ValueError, match="hold lm_weight and length_bonus"):
        RerankWeights.from_dict({"lm_weight": 1})


def test_a_line_separator_inside_a_string_is_not_a_line_break(tmp_path: Path) -> None:
    record = {"reference": "a\u2028b", "hypotheses": [{"text": "a b"}]}
    path = tmp_path / "sep.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n" + json.dumps(lists(1)[0]))
    items = read_nbest(path)
    assert len(items) == 2 and items[0].reference == "a\u2028b"


def scored_items(records: list[dict[str, Any]]) -> list[NbestList]:
    return [
        NbestList(r["reference"], [h["text"] for h in r["hypotheses"]],
                  np.array([h["score"] for h in r["hypotheses"]]), r.get("bias"), f"x:{k}")
        for k, r in enumerate(records)
    ]  # fmt: skip


def test_the_written_weights_rank_as_rerank_does(kn: NgramLM) -> None:
    """The service ranks by score + lm_weight · lm + length_bonus · n: with the weights tune
    reports, it picks what tune picked (lengths differ, so the bonus matters)."""
    from model.training.nbest import score_lists

    rng = np.random.default_rng(3)
    records = []
    for k in range(40):
        words = TEXT[k % len(TEXT)]
        records.append({"reference": " ".join(words), "hypotheses": [
            {"text": " ".join(words[:-1]), "score": -1.0},  # a deletion
            {"text": " ".join(words), "score": -1.4 - 0.2 * rng.random()},
            {"text": " ".join([*words, "the"]), "score": -1.2},  # an insertion
        ]})  # fmt: skip
    items = scored_items(records)
    report = tune_nbest(kn, items, lambda _: None)
    scored = score_lists(kn, items)
    errors = 0
    for item, lm, n, errs in zip(items, scored.lm, scored.tokens, scored.word_errors, strict=True):
        combined = item.scores + report["lm_weight"] * lm + report["length_bonus"] * n
        errors += int(errs[int(np.argmax(combined))])
    words = sum(len(r["reference"].split()) for r in records)
    assert round(100 * errors / words, 2) == report["reranked"]["wer"]
    assert report["reranked"]["wer"] < report["first_pass"]["wer"]


def test_one_list_has_no_cross_validated_figure(kn: NgramLM) -> None:
    report = tune_nbest(kn, scored_items(lists(1)), lambda _: None)
    assert report["reranked_cross_validated"] is None
    assert report["cross_validated_minus_first_pass_ci95"] is None


def test_a_bias_line_the_model_cannot_take_is_named(kn: NgramLM) -> None:
    records = [*lists(2), {**lists(1)[0], "bias": ["dog"]}]
    with pytest.raises(NbestError, match="x:2: bias needs a model with a recurrent network"):
        tune_nbest(kn, scored_items(records), lambda _: None)
