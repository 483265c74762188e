"""Checkpoints: one directory per model, written atomically, loaded without pickle.

Layout of a checkpoint directory::

    config.json                        format version, architecture, tokenizer, metadata, and
                                       the name, size and sha256 of every other file below
    vocab.<sha12>.json                 the vocabulary: {"tokens": [...], "counts": [...]}
    weights.<sha12>.safetensors        the parameters, by the names in RNNLM.params

``config.json`` is the commit point. A save writes the data files under new names (their content
hash), then replaces ``config.json`` in one atomic rename, then deletes data files that no
longer belong to it. A crash at any moment leaves either the old or the new checkpoint whole,
and files in the directory that are not ours (training logs, plots) are never touched.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from model.bidirectional import BiRNNLM
from model.network import RNNLM, ModelConfig
from model.scoring import LanguageModel
from model.tokenize import Tokenizer
from model.vocab import Vocabulary

FORMAT = "nextword-rnnlm"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
FILE_MODE = 0o644
_DATA_FILE_RE = re.compile(r"^[a-z_]+\.[0-9a-f]{12}\.(json|safetensors)$")


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


# ------------------------------------------------------------------ writing
def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a part.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the file is
    renamed over ``path`` (rename is atomic within a file system).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(
            fd, FILE_MODE
        )  # mkstemp makes 0600; a server running as another user must read it
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _data_file(directory: Path, stem: str, suffix: str, data: bytes) -> tuple[str, dict[str, Any]]:
    """Write a content-addressed data file; return its name and its entry for config.json."""
    digest = hashlib.sha256(data).hexdigest()
    name = f"{stem}.{digest[:12]}.{suffix}"
    if not (directory / name).exists():
        write_atomic(directory / name, data)
    return name, {"sha256": digest, "bytes": len(data)}


def save_checkpoint(
    directory: str | Path,
    lm: LanguageModel,
    metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> Path:
    """Save ``lm`` in ``directory`` (created if needed), atomically replacing any checkpoint there.

    - metadata: JSON-serialisable training metadata and metrics, stored in config.json.
    - extra_tensors: more named tensor groups to keep with the model, e.g. optimiser state for
      resuming (``{"optimizer": {...}}``); read back with ``load_tensors``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    files: dict[str, dict[str, Any]] = {}
    roles: dict[str, str] = {}
    vocab_bytes = json.dumps(lm.vocab.to_dict(), ensure_ascii=False).encode("utf-8")
    groups = {"weights": lm.net.params, **(extra_tensors or {})}
    blobs = [("vocab", "json", vocab_bytes)] + [
        (
            role,
            "safetensors",
            save_safetensors({k: np.require(v, requirements="C") for k, v in t.items()}),
        )
        for role, t in groups.items()
    ]
    for role, suffix, data in blobs:
        name, entry = _data_file(directory, role, suffix, data)
        files[name], roles[role] = entry, name
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": lm.net.config.to_dict(),
        "tokenizer": lm.tokenizer.to_dict(),
        "dtype": str(lm.net.dtype),
        "files": files,
        "roles": roles,
        "metadata": dict(metadata or {}),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False).encode())
    for stale in directory.iterdir():  # data files of the replaced checkpoint, or of a crashed save
        if _DATA_FILE_RE.match(stale.name) and stale.name not in files:
            stale.unlink(missing_ok=True)
    return directory


# ------------------------------------------------------------------ reading
def read_config(directory: str | Path) -> dict[str, Any]:
    """Parse and check ``config.json``; raise CheckpointError naming the problem."""
    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise CheckpointError(f"{directory}: not a directory")
    try:
        config = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path}: missing; {directory} is not a nextword checkpoint"
        ) from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{path}: not a {FORMAT} config (found {found!r})")
    version = config.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported by this nextword "
            f"(supports up to {FORMAT_VERSION}); upgrade nextword"
        )
    for key in ("model", "tokenizer", "files", "roles"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{path}: missing or malformed field {key!r}")
    return config


def _read_verified(directory: Path, config: dict[str, Any], role: str) -> bytes:
    """The bytes of the data file playing ``role``, checked against its size and sha256."""
    name = config["roles"].get(role)
    if name is None or name not in config["files"]:
        raise CheckpointError(f"{directory / CONFIG_FILE}: lists no {role} file")
    path, entry = directory / name, config["files"][name]
    if not isinstance(entry, dict):
        raise CheckpointError(f"{directory / CONFIG_FILE}: malformed entry for {name}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (listed in {CONFIG_FILE})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    if len(data) != entry.get("bytes"):
        raise CheckpointError(
            f"{path}: truncated or padded: {len(data)} bytes, expected {entry.get('bytes')}"
        )
    if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
        raise CheckpointError(f"{path}: corrupted: sha256 does not match {CONFIG_FILE}")
    return data


def load_tensors(
    directory: str | Path, role: str, config: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """The verified tensor group ``role`` ("weights", or a group saved via ``extra_tensors``)."""
    directory = Path(directory)
    config = read_config(directory) if config is None else config
    data = _read_verified(directory, config, role)
    try:
        return load_safetensors(data)
    except SafetensorError as e:
        raise CheckpointError(
            f"{directory / config['roles'][role]}: unreadable safetensors ({e})"
        ) from None


def load_checkpoint(directory: str | Path, dtype: type | np.dtype = np.float32) -> LanguageModel:
    """Rebuild the LanguageModel saved in ``directory``; every file is verified before use.

    A read that fails because a concurrent save replaced ``config.json`` meanwhile is retried.
    """
    directory = Path(directory)
    for _ in range(3):
        before = _config_stamp(directory)
        try:
            return _load(directory, dtype)
        except CheckpointError:
            if _config_stamp(directory) == before:
                raise
    return _load(directory, dtype)


def _config_stamp(directory: Path) -> tuple[int, int, int] | None:
    try:
        st = (directory / CONFIG_FILE).stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _load(directory: Path, dtype: type | np.dtype) -> LanguageModel:
    config = read_config(directory)
    where = directory / CONFIG_FILE
    try:
        model_config = ModelConfig.from_dict(config["model"])
        tokenizer = Tokenizer.from_dict(config["tokenizer"])
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{where}: invalid model or tokenizer config ({e})") from None
    vocab_path = directory / config["roles"].get("vocab", "vocab")
    try:
        vocab = Vocabulary.from_dict(json.loads(_read_verified(directory, config, "vocab")))
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{vocab_path}: invalid vocabulary ({e})") from None
    if len(vocab) != model_config.vocab_size:
        expected = model_config.vocab_size
        raise CheckpointError(
            f"{vocab_path}: {len(vocab)} tokens, but {where} says vocab_size {expected}"
        )
    params = load_tensors(directory, "weights", config)
    try:
        network = BiRNNLM if model_config.bidirectional else RNNLM
        net = network(model_config, params, dtype=dtype)
    except ValueError as e:
        raise CheckpointError(
            f"{directory / config['roles']['weights']}: does not match {where}: {e}"
        ) from None
    checksum = config["files"][config["roles"]["weights"]]["sha256"]
    return LanguageModel(net, vocab, tokenizer, dict(config.get("metadata") or {}), checksum)
