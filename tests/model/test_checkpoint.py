"""Checkpoints: exact round trip, atomic replacement, and clear errors for damaged directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import model.inference.checkpoint as checkpoint
from model.inference.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_tensors,
    save_checkpoint,
)
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

SENTENCES = ["the cat sat on the mat", "new york", "zebra"]


def data_file(directory: Path, role: str) -> Path:
    config = json.loads((directory / "config.json").read_text())
    return directory / config["roles"][role]


def test_save_then_load_gives_identical_outputs(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    save_checkpoint(tmp_path / "m", tiny_lm, metadata={"valid_perplexity": 123.4})
    loaded = load_checkpoint(tmp_path / "m", dtype=np.float64)
    for name, p in tiny_lm.net.params.items():
        np.testing.assert_array_equal(loaded.net.params[name], p)
    assert loaded.net.config == tiny_lm.net.config
    assert loaded.tokenizer == tiny_lm.tokenizer
    assert loaded.vocab.tokens == tiny_lm.vocab.tokens
    assert loaded.metadata["valid_perplexity"] == 123.4
    assert loaded.checksum is not None and len(loaded.checksum) == 64
    for a, b in zip(
        loaded.score_sentences(SENTENCES), tiny_lm.score_sentences(SENTENCES), strict=True
    ):
        assert a.token_log_probs == b.token_log_probs


def test_checkpoint_layout_is_json_and_safetensors(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    config = json.loads((tmp_path / "config.json").read_text())
    assert (
        config["format"] == "nextword-rnnlm"
        and config["format_version"] == checkpoint.FORMAT_VERSION
    )
    assert config["model"]["cell"] == "lstm" and config["tokenizer"]["name"] == "whitespace"
    assert data_file(tmp_path, "weights").suffix == ".safetensors"
    assert json.loads(data_file(tmp_path, "vocab").read_text())["tokens"][:3] == [
        "<unk>",
        "<s>",
        "</s>",
    ]


def test_extra_tensor_groups_round_trip(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    state = {"m.embedding.W": np.ones((2, 3), dtype=np.float32), "t": np.array(7)}
    save_checkpoint(tmp_path, tiny_lm, extra_tensors={"optimizer": state})
    loaded = load_tensors(tmp_path, "optimizer")
    np.testing.assert_array_equal(loaded["m.embedding.W"], state["m.embedding.W"])
    assert int(loaded["t"]) == 7


def test_saving_again_replaces_the_model_and_keeps_foreign_files(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    old_weights = data_file(tmp_path, "weights")
    other = RNNLM(tiny_lm.net.config, seed=99, dtype=np.float64)
    save_checkpoint(tmp_path, RecurrentLM(other, tiny_lm.vocab, tiny_lm.tokenizer))
    assert not old_weights.exists()  # the replaced checkpoint's data is cleaned up
    assert (tmp_path / "metrics.jsonl").read_text() == "{}\n"
    loaded = load_checkpoint(tmp_path, dtype=np.float64)
    np.testing.assert_array_equal(loaded.net.params["output.b"], other.params["output.b"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [
            "config.json",
            "metrics.jsonl",
            data_file(tmp_path, "weights").name,
            data_file(tmp_path, "vocab").name,
        ]
    )


def test_a_save_that_dies_before_the_commit_leaves_the_old_checkpoint_whole(
    tmp_path: Path, tiny_lm: RecurrentLM, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    real_write = checkpoint.write_atomic

    def dies_at_commit(path: Path, data: bytes) -> None:
        if path.name == "config.json":
            raise KeyboardInterrupt  # the process is killed just before the commit point
        real_write(path, data)

    monkeypatch.setattr(checkpoint, "write_atomic", dies_at_commit)
    other = RNNLM(tiny_lm.net.config, seed=5, dtype=np.float64)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, RecurrentLM(other, tiny_lm.vocab, tiny_lm.tokenizer))
    loaded = load_checkpoint(tmp_path, dtype=np.float64)  # still the first model, intact
    np.testing.assert_array_equal(loaded.net.params["rnn.0.Wh"], tiny_lm.net.params["rnn.0.Wh"])


def test_write_atomic_leaves_no_partial_file_when_interrupted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    target.write_bytes(b"old")

    def fail(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.write_atomic(target, b"new content")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # the temporary file is gone


def test_truncated_weights_are_reported_with_the_file_name(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    weights = data_file(tmp_path, "weights")
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{weights.name}: truncated or padded: 100 bytes"):
        load_checkpoint(tmp_path)


def test_a_flipped_byte_is_reported_as_corruption(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    weights = data_file(tmp_path, "weights")
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{weights.name}: corrupted: sha256 does not match"):
        load_checkpoint(tmp_path)


def test_weights_that_do_not_match_the_config_are_reported(
    tmp_path: Path, tiny_lm: RecurrentLM
) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["hidden_size"] = 7  # as if the config had been edited by hand
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match="does not match .*config.json: parameter .* has shape"
    ):
        load_checkpoint(tmp_path)


def test_missing_and_unreadable_configs_are_reported(tmp_path: Path) -> None:
    with pytest.raises(
        CheckpointError, match="config.json: missing; .* is not a nextword checkpoint"
    ):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a directory"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "config.json").write_text('{"format": "nextword-rnnlm", "format_version": 1, ')
    with pytest.raises(CheckpointError, match="config.json: not valid JSON"):
        load_checkpoint(tmp_path)


def test_a_newer_format_version_asks_for_an_upgrade(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    config = json.loads((tmp_path / "config.json").read_text())
    config["format_version"] = checkpoint.FORMAT_VERSION + 1
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        CheckpointError, match="format_version 2 is not supported .* upgrade nextword"
    ):
        load_checkpoint(tmp_path)


def test_a_deleted_data_file_is_reported(tmp_path: Path, tiny_lm: RecurrentLM) -> None:
    save_checkpoint(tmp_path, tiny_lm)
    vocab = data_file(tmp_path, "vocab")
    vocab.unlink()
    with pytest.raises(CheckpointError, match=f"{vocab.name}: missing \\(listed in config.json\\)"):
        load_checkpoint(tmp_path)


def test_a_vocabulary_of_the_wrong_size_is_reported(tmp_path: Path) -> None:
    vocab_tokens = ["<unk>", "<s>", "</s>", "a", "b"]
    net = RNNLM(ModelConfig(vocab_size=5, embed_size=3, hidden_size=3))
    save_checkpoint(tmp_path, RecurrentLM(net, Vocabulary(vocab_tokens), Tokenizer()))
    config = json.loads((tmp_path / "config.json").read_text())
    config["model"]["vocab_size"] = 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="5 tokens, but .*config.json says vocab_size 6"):
        load_checkpoint(tmp_path)
