"""Every way a checkpoint directory can be damaged is a CheckpointError naming the file and field.

Each case changes one thing in a freshly saved tiny checkpoint: a field of config.json, the
vocabulary file or the weights file. When a data file changes, its sha256 and size entries are
recomputed, so that the check under test fires rather than the hash check.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

import model.inference.checkpoint as checkpoint
from model.inference.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_tensors,
    save_checkpoint,
)
from model.inference.recurrent_lm import RecurrentLM
from model.network.bidirectional import BiRNNLM
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary

TOKENS = ["<unk>", "<s>", "</s>", "a", "b", "c"]
COUNTS = [0, 4, 4, 3, 2, 1]
CONFIG = ModelConfig(vocab_size=6, cell="gru", num_layers=1, embed_size=2, hidden_size=2)
Json = Any
Edit = Callable[[dict[str, np.ndarray]], None]  # changes the tensors of a weights file


def tiny_lm(config: ModelConfig = CONFIG, dtype: type = np.float32) -> RecurrentLM:
    network = BiRNNLM if config.bidirectional else RNNLM
    net = network(config, seed=1, dtype=dtype)
    vocab, tokenizer = Vocabulary(TOKENS, COUNTS), Tokenizer("words", lowercase=True)
    return RecurrentLM(net, vocab, tokenizer)


class Checkpoint:
    """A saved checkpoint directory, and the edits the cases make to it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.config_path = directory / "config.json"

    def config(self) -> dict[str, Json]:
        return json.loads(self.config_path.read_text())

    def write_config(self, config: Json) -> None:
        self.config_path.write_text(json.dumps(config))

    def file(self, role: str) -> Path:
        return self.directory / self.config()["roles"][role]

    def replace_data(self, role: str, data: bytes) -> None:
        """New bytes for a data file, with its sha256 and size entries in config.json to match."""
        config = self.config()
        name = config["roles"][role]
        (self.directory / name).write_bytes(data)
        config["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        self.write_config(config)

    def tensors(self) -> dict[str, np.ndarray]:
        return load_safetensors(self.file("weights").read_bytes())


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("saved") / "m"
    save_checkpoint(directory, tiny_lm())
    return directory


@pytest.fixture
def ckpt(saved: Path, tmp_path: Path) -> Checkpoint:
    shutil.copytree(saved, tmp_path / "m")
    return Checkpoint(tmp_path / "m")


def load_error(directory: Path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(directory)
    return str(info.value)


# ------------------------------------------------------------------ config.json, field by field
def nested(value: Json, levels: int = 100) -> Json:
    for _ in range(levels):
        value = [value]
    return value


COMMON_SWAPS: dict[str, Callable[[Json], Json]] = {
    "null": lambda v: None,
    "list": lambda v: [v],
    "dict": lambda v: {"value": v},
    "nested": nested,
}
SWAPS: dict[type, dict[str, Callable[[Json], Json]]] = {
    int: {
        "float": float,
        "str": str,
        "bool": lambda v: True,
        "negative": lambda v: -1,
        "huge": lambda v: 10**30,
        "inf": lambda v: float("inf"),
    },
    float: {  # an int dropout is accepted on purpose: a TOML "dropout = 0" saves one
        "str": str,
        "bool": lambda v: False,
        "negative": lambda v: -0.5,
        "one": lambda v: 1.0,
        "huge": lambda v: 1e300,
        "inf": lambda v: float("inf"),
        "nan": lambda v: float("nan"),
    },
    str: {
        "int": lambda v: 1,
        "float": lambda v: 1.5,
        "bool": lambda v: True,
        "empty": lambda v: "",
        "unknown": lambda v: "transformer",
        "huge": lambda v: "x" * 100_000,
    },
    bool: {"int": int, "float": float, "str": lambda v: str(v).lower()},
}
MODEL_FIELDS = {
    "vocab_size": int,
    "cell": str,
    "activation": str,
    "num_layers": int,
    "embed_size": int,
    "hidden_size": int,
    "dropout": float,
    "tie_weights": bool,
    "bidirectional": bool,
}
# (path into config.json, its JSON type); "<vocab>" and "<weights>" stand for those files' names
FIELDS: list[tuple[tuple[str, ...], type]] = [
    *((("model", name), kind) for name, kind in MODEL_FIELDS.items()),
    (("tokenizer", "name"), str),
    (("tokenizer", "lowercase"), bool),
    (("format",), str),
    (("format_version",), int),
    (("dtype",), str),
    *((("files", f"<{role}>", "sha256"), str) for role in ("vocab", "weights")),
    *((("files", f"<{role}>", "bytes"), int) for role in ("vocab", "weights")),
    (("roles", "vocab"), str),
    (("roles", "weights"), str),
]


def resolve(config: Json, path: tuple[str, ...]) -> tuple[Json, str]:
    """The object holding ``path``'s last key, and that key (file placeholders resolved)."""
    keys = [config["roles"][k[1:-1]] if k.startswith("<") else k for k in path]
    holder = config
    for key in keys[:-1]:
        holder = holder[key]
    return holder, keys[-1]


def field_cases() -> list[Any]:
    cases = []
    for path, kind in FIELDS:
        for label, swap in (SWAPS[kind] | COMMON_SWAPS).items():
            if path == ("files", "<vocab>", "bytes") and label == "huge":
                continue  # a well-formed size that does not match: covered by the weights case
            cases.append(pytest.param(path, swap, id=f"{'.'.join(path)}-{label}"))
    return cases


@pytest.mark.parametrize(("path", "swap"), field_cases())
def test_a_field_of_the_wrong_type_or_range_is_named(
    ckpt: Checkpoint, path: tuple[str, ...], swap: Callable[[Json], Json]
) -> None:
    config = ckpt.config()
    holder, key = resolve(config, path)
    holder[key] = swap(holder[key])
    ckpt.write_config(config)
    message = load_error(ckpt.directory)
    if path == ("files", "<weights>", "bytes") and swap is SWAPS[int]["huge"]:
        assert f"{ckpt.file('weights').name}: truncated or padded" in message
    else:
        assert "config.json: " in message and path[-1] in message


def delete(*keys: str) -> Callable[[Json], None]:
    def mutate(config: Json) -> None:
        holder, key = resolve(config, keys)
        del holder[key]

    return mutate


def put(value: Json, *keys: str) -> Callable[[Json], None]:
    def mutate(config: Json) -> None:
        holder, key = resolve(config, keys)
        holder[key] = value

    return mutate


def rename_file(new_name: str, role: str = "weights") -> Callable[[Json], None]:
    def mutate(config: Json) -> None:
        config["files"][new_name] = config["files"].pop(config["roles"][role])
        config["roles"][role] = new_name

    return mutate


def swap_roles(config: Json) -> None:
    roles = config["roles"]
    roles["vocab"], roles["weights"] = roles["weights"], roles["vocab"]


STRUCTURE_CASES = [
    *(
        pytest.param(put(value, section), section, id=f"{section}-{label}")
        for section in ("model", "tokenizer", "files", "roles", "metadata")
        for label, value in [("null", None), ("list", []), ("str", "x"), ("int", 1)]
    ),
    *(
        pytest.param(delete(section), section, id=f"{section}-missing")
        for section in ("format", "format_version", "model", "tokenizer", "files", "roles")
    ),
    pytest.param(put(nested({}), "metadata", "deep"), "metadata.deep", id="metadata-nested"),
    pytest.param(put(4, "model", "heads"), "heads", id="model-unknown-key"),
    pytest.param(delete("model", "vocab_size"), "vocab_size", id="model-no-vocab-size"),
    pytest.param(put(True, "tokenizer", "normalize"), "normalize", id="tokenizer-unknown-key"),
    pytest.param(delete("tokenizer", "name"), "name", id="tokenizer-no-name"),
    pytest.param(delete("roles", "weights"), "weights", id="roles-no-weights"),
    pytest.param(delete("roles", "vocab"), "vocab", id="roles-no-vocab"),
    pytest.param(put("<vocab>", "roles", "Bad-Role"), "Bad-Role", id="roles-bad-name"),
    pytest.param(swap_roles, "roles", id="roles-swapped"),
    pytest.param(delete("files", "<weights>"), "weights", id="files-entry-missing"),
    pytest.param(put("x", "files", "<weights>"), "files", id="files-entry-str"),
    pytest.param(put(None, "files", "<vocab>"), "files", id="files-entry-null"),
    pytest.param(delete("files", "<vocab>", "sha256"), "sha256", id="files-no-sha256"),
    pytest.param(delete("files", "<vocab>", "bytes"), "bytes", id="files-no-bytes"),
    pytest.param(put("A" * 64, "files", "<vocab>", "sha256"), "sha256", id="sha256-upper"),
    pytest.param(rename_file("../../etc/passwd"), "passwd", id="files-path-traversal"),
    pytest.param(rename_file("weights.safetensors"), "weights.safetensors", id="files-bad-name"),
    pytest.param(put(2, "format_version"), "upgrade nextword", id="format-version-newer"),
]


@pytest.mark.parametrize(("mutate", "named"), STRUCTURE_CASES)
def test_a_malformed_section_is_named(
    ckpt: Checkpoint, mutate: Callable[[Json], None], named: str
) -> None:
    config = ckpt.config()
    mutate(config)
    ckpt.write_config(config)
    message = load_error(ckpt.directory)
    assert "config.json: " in message and named in message


def text_edit(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new, 1)

    return edit


TEXT_CASES = [
    pytest.param(lambda t: "[]", "found list", id="top-level-list"),
    pytest.param(lambda t: '"config"', "found str", id="top-level-str"),
    pytest.param(lambda t: "42", "found int", id="top-level-number"),
    pytest.param(lambda t: "null", "found NoneType", id="top-level-null"),
    pytest.param(lambda t: "", "not valid JSON", id="empty"),
    pytest.param(lambda t: t[: len(t) // 2], "not valid JSON", id="cut-in-half"),
    pytest.param(lambda t: "[" * 100_000 + "]" * 100_000, "nested too deeply", id="deep-list"),
    pytest.param(lambda t: '{"a":' * 50_000 + "1" + "}" * 50_000, "nested", id="deep-object"),
    pytest.param(text_edit("{", '{"format_version": 1, '), "twice", id="duplicate-key"),
    pytest.param(text_edit('"hidden_size": 2', '"hidden_size": 1e999'), "hidden", id="1e999"),
    pytest.param(
        text_edit('"bytes": ', '"bytes": 1' + "0" * 5000 + ", "), "JSON", id="5000-digits"
    ),
    pytest.param(text_edit('"dropout": 0.0', '"dropout": NaN'), "dropout", id="NaN-literal"),
]


@pytest.mark.parametrize(("edit", "named"), TEXT_CASES)
def test_config_json_that_does_not_parse_as_one_is_named(
    ckpt: Checkpoint, edit: Callable[[str], str], named: str
) -> None:
    ckpt.config_path.write_text(edit(json.dumps(ckpt.config())))
    message = load_error(ckpt.directory)
    assert "config.json: " in message and named in message


def test_invalid_utf8_in_config_json_is_named(ckpt: Checkpoint) -> None:
    ckpt.config_path.write_bytes(b'{"format": "\xff\xfe"}')
    assert "config.json: not valid JSON" in load_error(ckpt.directory)


def test_bytes_given_as_a_string_names_the_entry(ckpt: Checkpoint) -> None:
    config = ckpt.config()
    name = config["roles"]["weights"]
    size = config["files"][name]["bytes"]
    config["files"][name]["bytes"] = str(size)
    ckpt.write_config(config)
    assert load_error(ckpt.directory).endswith(
        f"config.json: files['{name}'].bytes must be an integer ≥ 0, got '{size}'"
    )


# ------------------------------------------------------------------ the vocabulary file
def vocab_json(**changes: Json) -> bytes:
    data = {"tokens": TOKENS, "counts": COUNTS} | changes
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


VOCAB_CASES = [
    pytest.param(b"[]", "must be an object", id="list"),
    pytest.param(b'"tokens"', "must be an object", id="str"),
    pytest.param(b'{"tokens": [', "not valid JSON", id="cut"),
    pytest.param(b"\xff\xfe\x00\x01", "not valid JSON", id="not-utf8"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, "nested too deeply", id="deep"),
    pytest.param(vocab_json(tokens=nested(TOKENS)), "nested", id="nested"),
    pytest.param(vocab_json(tokens=...), "tokens is missing", id="no-tokens"),
    pytest.param(vocab_json(tokens="abc"), "tokens must be a list", id="tokens-str"),
    pytest.param(vocab_json(tokens=None), "tokens must be a list", id="tokens-null"),
    pytest.param(vocab_json(tokens=[*TOKENS[:3], 5, "b", "c"]), "tokens[3]", id="token-int"),
    pytest.param(vocab_json(tokens=[*TOKENS[:3], "", "b", "c"]), "tokens[3]", id="token-empty"),
    pytest.param(vocab_json(tokens=[*TOKENS[:3], ["a"], "b", "c"]), "tokens[3]", id="token-list"),
    pytest.param(vocab_json(tokens=[*TOKENS[:5], "a"]), "duplicate", id="duplicate"),
    pytest.param(vocab_json(tokens=["<s>", "<unk>", *TOKENS[2:]]), "start with", id="specials"),
    pytest.param(vocab_json(tokens=[*TOKENS, "d"], counts=[*COUNTS, 1]), "7 tokens", id="size"),
    pytest.param(vocab_json(counts="1 2 3"), "counts must be a list", id="counts-str"),
    pytest.param(vocab_json(counts=None), "counts must be a list", id="counts-null"),
    pytest.param(vocab_json(counts=["0", *COUNTS[1:]]), "counts[0]", id="count-str"),
    pytest.param(vocab_json(counts=[0, 4, -4, 3, 2, 1]), "counts[2]", id="count-negative"),
    pytest.param(vocab_json(counts=[0, True, 4, 3, 2, 1]), "counts[1]", id="count-bool"),
    pytest.param(vocab_json(counts=[0.0, *COUNTS[1:]]), "counts[0]", id="count-float"),
    pytest.param(vocab_json(counts=COUNTS[:-1]), "5 counts for 6 tokens", id="counts-short"),
    pytest.param(vocab_json(ids=[0, 1]), "unknown vocabulary keys", id="unknown-key"),
    pytest.param(b'{"tokens": [], "tokens": []}', "twice", id="duplicate-key"),
    pytest.param(b'{"tokens": [], "counts": [1' + b"0" * 5000 + b"]}", "JSON", id="5000-digits"),
]


@pytest.mark.parametrize(("data", "named"), VOCAB_CASES)
def test_a_damaged_vocabulary_file_is_named(ckpt: Checkpoint, data: bytes, named: str) -> None:
    ckpt.replace_data("vocab", data)
    message = load_error(ckpt.directory)
    assert f"{ckpt.file('vocab').name}: " in message and named in message


def test_a_data_file_replaced_by_a_directory_is_named(ckpt: Checkpoint) -> None:
    vocab = ckpt.file("vocab")
    vocab.unlink()
    vocab.mkdir()
    assert f"{vocab.name}: not a regular file" in load_error(ckpt.directory)


def test_a_config_json_that_is_no_regular_file_is_refused_without_reading_it(
    ckpt: Checkpoint,
) -> None:
    """A FIFO named config.json would block a reader until something writes to it: forever."""
    ckpt.config_path.unlink()
    os.mkfifo(ckpt.config_path)
    failed: list[str] = []
    loader = threading.Thread(target=lambda: failed.append(load_error(ckpt.directory)), daemon=True)
    loader.start()
    loader.join(timeout=10)
    if loader.is_alive():  # it blocks in open(): a writer that closes at once sets it free
        os.close(os.open(ckpt.config_path, os.O_WRONLY | os.O_NONBLOCK))
        loader.join(timeout=10)
        pytest.fail("loading a checkpoint whose config.json is a FIFO blocked")
    assert failed == [f"{ckpt.config_path}: not a regular file"]


# ------------------------------------------------------------------ the weights file
def safetensors_header(header: dict[str, Json], payload: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + payload


def edit_tensors(edit: Edit) -> Callable[[Checkpoint], bytes]:
    def make(ckpt: Checkpoint) -> bytes:
        tensors = ckpt.tensors()
        edit(tensors)
        return save_safetensors(tensors)

    return make


def set_value(name: str, index: tuple[int, ...], value: float) -> Edit:
    def edit(tensors: dict[str, np.ndarray]) -> None:
        tensors[name][index] = value

    return edit


def set_tensor(name: str, value: Callable[[np.ndarray | None], np.ndarray]) -> Edit:
    def edit(tensors: dict[str, np.ndarray]) -> None:
        tensors[name] = value(tensors.get(name))

    return edit


def two_bad_rows(tensors: dict[str, np.ndarray]) -> None:
    tensors["output.W"][1, 0], tensors["output.W"][3, 1] = np.nan, -np.inf


WEIGHTS_CASES = [
    pytest.param(lambda c: b"not safetensors at all", "unreadable safetensors", id="garbage"),
    pytest.param(lambda c: b"", "unreadable safetensors", id="empty"),
    pytest.param(
        lambda c: safetensors_header(
            {"x": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}, b"\0\0"
        ),
        "unsupported tensor dtype 'BF16'",
        id="bf16",
    ),
    pytest.param(
        edit_tensors(set_tensor("output.b", lambda t: t.astype(np.int32))),
        "tensor 'output.b' has dtype int32, expected float32",
        id="int32",
    ),
    pytest.param(
        edit_tensors(set_tensor("output.b", lambda t: t.astype(np.float64))),
        "tensor 'output.b' has dtype float64, expected float32",
        id="float64-in-float32-checkpoint",
    ),
    pytest.param(
        edit_tensors(set_tensor("output.b", lambda t: t.astype(bool))),
        "tensor 'output.b' has dtype bool",
        id="bool",
    ),
    pytest.param(
        edit_tensors(set_tensor("embedding.W", lambda t: np.ascontiguousarray(t.T))),
        "parameter embedding.W has shape (2, 6), expected (6, 2)",
        id="transposed",
    ),
    pytest.param(
        edit_tensors(lambda t: t.pop("output.b")), "missing ['output.b']", id="missing-tensor"
    ),
    pytest.param(
        edit_tensors(set_tensor("extra.W", lambda t: np.zeros((2, 2), np.float32))),
        "extra ['extra.W']",
        id="extra-tensor",
    ),
    pytest.param(
        edit_tensors(set_value("embedding.W", (4, 1), np.inf)),
        "tensor 'embedding.W' has 1 non-finite value (inf) at row 4",
        id="inf-embedding-row",
    ),
    pytest.param(
        edit_tensors(set_value("output.b", (2,), np.nan)),
        "tensor 'output.b' has 1 non-finite value (nan) at index 2",
        id="nan-bias",
    ),
    pytest.param(
        edit_tensors(two_bad_rows),
        "tensor 'output.W' has 2 non-finite values (nan, -inf) at rows 1, 3",
        id="two-rows",
    ),
]


@pytest.mark.parametrize(("make", "named"), WEIGHTS_CASES)
def test_a_damaged_weights_file_is_named(
    ckpt: Checkpoint, make: Callable[[Checkpoint], bytes], named: str
) -> None:
    ckpt.replace_data("weights", make(ckpt))
    message = load_error(ckpt.directory)
    assert f"{ckpt.file('weights').name}: " in message and named in message


@pytest.mark.parametrize(
    ("config", "tensor"),
    [
        pytest.param(CONFIG, "embedding.W", id="left-to-right"),
        pytest.param(
            ModelConfig(**{**CONFIG.to_dict(), "bidirectional": True}),
            "fwd.embedding.W",
            id="bidirectional",
        ),
    ],
)
def test_a_saved_model_with_inf_in_an_embedding_row_does_not_load(
    tmp_path: Path, config: ModelConfig, tensor: str
) -> None:
    lm = tiny_lm(config)
    lm.net.params[tensor][4, 0] = np.inf  # saved normally: the hashes match the damage
    save_checkpoint(tmp_path, lm)
    weights = Checkpoint(tmp_path).file("weights")
    assert load_error(tmp_path) == (
        f"{weights}: tensor '{tensor}' has 1 non-finite value (inf) at row 4"
    )


def test_weights_beyond_the_load_dtype_range_are_refused(tmp_path: Path) -> None:
    lm = tiny_lm(dtype=np.float64)
    lm.net.params["output.b"][3] = 1e300  # finite in float64, inf once cast to float32
    save_checkpoint(tmp_path, lm)
    message = load_error(tmp_path)
    assert "tensor 'output.b' has 1 non-finite value (inf) at index 3" in message
    assert "after conversion to float32" in message
    assert load_checkpoint(tmp_path, dtype=np.float64).net.params["output.b"][3] == 1e300


# ------------------------------------------------------------------ resume tensors, safety net
def test_load_tensors_refuses_non_finite_resume_state_unless_asked(tmp_path: Path) -> None:
    moments = {"m.embedding.W": np.array([[0.0, np.nan]]), "t": np.array(3)}
    save_checkpoint(tmp_path, tiny_lm(), extra_tensors={"optimizer": moments})
    with pytest.raises(CheckpointError, match=r"optimizer\.[0-9a-f]{12}\.safetensors: tensor "):
        load_tensors(tmp_path, "optimizer")
    loaded = load_tensors(tmp_path, "optimizer", finite=False)
    assert np.isnan(loaded["m.embedding.W"][0, 1]) and int(loaded["t"]) == 3


def test_an_unforeseen_failure_is_still_a_checkpoint_error(
    ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_: object) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(checkpoint, "_build", boom)
    assert load_error(ckpt.directory) == (
        f"{ckpt.directory}: cannot be loaded (ZeroDivisionError: boom)"
    )


def test_a_load_racing_a_save_is_retried_and_gets_the_new_model(
    ckpt: Checkpoint, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_read_config = checkpoint.read_config
    newer = RNNLM(CONFIG, seed=7)
    calls = []

    def read_then_replaced(directory: Path) -> dict[str, Json]:
        config = real_read_config(directory)
        if not calls:  # a save lands after this reader has read config.json
            save_checkpoint(directory, RecurrentLM(newer, tiny_lm().vocab, Tokenizer()))
        calls.append(directory)
        return config

    monkeypatch.setattr(checkpoint, "read_config", read_then_replaced)
    loaded = load_checkpoint(ckpt.directory)
    assert len(calls) == 2
    np.testing.assert_array_equal(loaded.net.params["output.W"], newer.params["output.W"])


def test_fields_written_by_older_versions_still_load(ckpt: Checkpoint) -> None:
    config = ckpt.config()
    del config["model"]["bidirectional"]  # added after the first checkpoints were saved
    config["model"]["dropout"] = 0  # a TOML "dropout = 0" is an int
    del config["tokenizer"]["lowercase"]
    ckpt.write_config(config)
    lm = load_checkpoint(ckpt.directory)
    assert lm.net.config == CONFIG and lm.tokenizer == Tokenizer("words")
