"""Checkpoints: one directory per model, written atomically, loaded without pickle.

Layout of a checkpoint directory::

    config.json                        format version, architecture, tokenizer, metadata, and
                                       the name, size and sha256 of every other file below;
                                       optional sections: spelling (the open vocabulary),
                                       cache (a neural cache's theta, weight and size) and
                                       rerank (/v1/rerank's tuned default weights)
    vocab.<sha12>.json                 the vocabulary: {"tokens": [...], "counts": [...]}
    weights.<sha12>.safetensors        the parameters, by the names in RNNLM.params
    start_state.<sha12>.safetensors    optional: the state a sentence read alone starts from
                                       ("{layer}.{k}", (1, H) each; zero when absent)

``config.json`` is the commit point. A save writes the data files under new names (their content
hash), then replaces ``config.json`` in one atomic rename, then deletes data files that no
longer belong to it. A crash at any moment leaves either the old or the new checkpoint whole,
and files in the directory that are not ours (training logs, plots) are never touched.

Reading trusts nothing in the directory: every field of config.json and the vocabulary is
checked for its JSON type and range, every data file for its size and sha256, and the weights
for their names, shapes, dtype and finiteness. Any damage is a ``CheckpointError`` whose
message names the file and the field, so a refused reload says what to repair.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from model.inference.checkpoint_checks import (
    CONFIG_FILE,
    DATA_FILE_RE,
    FORMAT,
    FORMAT_VERSION,
    CheckpointError,
    as_checkpoint_error,
    check_config,
    check_dtypes,
    check_finite,
    parse_json,
)
from model.inference.gap_filling_lm import GapFillingLM
from model.inference.interpolated_lm import MAX_COMPONENTS, InterpolatedLM, normalised_weights
from model.inference.language_model import LanguageModel
from model.inference.network_lm import NetworkLM
from model.inference.neural_cache import CacheSettings
from model.inference.ngram_lm import NgramLM
from model.inference.recurrent_lm import RecurrentLM
from model.inference.rerank_weights import RerankWeights
from model.inference.spelling import SpellingError, SpellingModel
from model.network.bidirectional import BiRNNLM
from model.network.recurrent import RNNLM, ModelConfig, NetworkState
from model.ngram.checks import MAX_ORDER as MAX_NGRAM_ORDER
from model.ngram.checks import MIN_IDS
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary
from model.values import is_int

__all__ = [
    "CONFIG_FILE",
    "CheckpointError",
    "language_model",
    "load_checkpoint",
    "load_network_checkpoint",
    "load_tensors",
    "read_config",
    "save_checkpoint",
    "write_atomic",
]

FILE_MODE = 0o644
COMPONENTS_DIR = "components"  # an interpolation's copies of its models: components/<sha12>
COMPONENT_RE = re.compile(r"[0-9a-f]{12}")
START_ROLE = "start_state"  # a stream-trained model's sentence start state (optional)
SPELLING_ROLE = "spelling"  # the open vocabulary's character model (optional, any kind)
CACHE_SECTION = "cache"  # the neural cache's settings (optional, kinds with hidden states)
RERANK_SECTION = "rerank"  # /v1/rerank's default weights, tuned on N-best lists (optional)
T = TypeVar("T")


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
    lm: NetworkLM[Any] | NgramLM | InterpolatedLM,
    metadata: Mapping[str, Any] | None = None,
    extra_tensors: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> Path:
    """Save ``lm`` in ``directory`` (created if needed), atomically replacing any checkpoint there.

    - metadata: JSON-serialisable training metadata and metrics, stored in config.json.
    - extra_tensors: more named tensor groups to keep with the model, e.g. optimiser state for
      resuming (``{"optimizer": {...}}``); read back with ``load_tensors``.

    An interpolation's components are copied (verified) into ``components/<sha12>`` first, so
    the directory is whole by itself and can be moved; its config.json records the sha256 of
    each component's config.json, which commits to the component's files in turn.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    architecture = lm.architecture()
    if isinstance(lm, InterpolatedLM):
        architecture = _save_components(directory, lm)
    files: dict[str, dict[str, Any]] = {}
    roles: dict[str, str] = {}
    vocab_bytes = json.dumps(lm.vocab.to_dict(), ensure_ascii=False).encode("utf-8")
    weights = lm.tensors() if isinstance(lm, NgramLM | InterpolatedLM) else lm.net.params
    groups = {"weights": weights, **(extra_tensors or {})}
    if lm.spelling is not None:  # the open vocabulary, whatever the kind
        groups[SPELLING_ROLE] = lm.spelling.tensors()
    if isinstance(lm, NetworkLM) and isinstance(lm.net, RNNLM) and lm.net.start is not None:
        groups[START_ROLE] = {
            f"{layer}.{k}": t.astype(lm.net.dtype)
            for layer, ts in enumerate(lm.net.start)
            for k, t in enumerate(ts)
        }
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
        "model": architecture,
        "tokenizer": lm.tokenizer.to_dict(),
        "dtype": str(lm.net.dtype) if isinstance(lm, NetworkLM) else "float32",
        "files": files,
        "roles": roles,
        "metadata": dict(metadata or {}),
        **({} if lm.spelling is None else {SPELLING_ROLE: lm.spelling.to_dict()}),
        **_cache_section(lm),
        **({} if lm.rerank is None else {RERANK_SECTION: lm.rerank.to_dict()}),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False).encode())
    for stale in directory.iterdir():  # data files of the replaced checkpoint, or of a crashed save
        if DATA_FILE_RE.match(stale.name) and stale.name not in files:
            stale.unlink(missing_ok=True)
    if isinstance(lm, InterpolatedLM):
        _drop_stale_components(directory, architecture)
    return directory


def _cache_section(lm: LanguageModel) -> dict[str, Any]:
    """config.json's ``cache`` section: the neural cache mixed into every score, if any. An
    interpolation writes one only when its recurrent components share it (on loading it is
    given to each); components with caches of their own keep them in their own configs."""
    if isinstance(lm, InterpolatedLM):
        caches = {c.neural_cache() for c in lm.components if c.caches_history()}
        if len(caches) > 1:
            return {}
    settings = lm.neural_cache()
    return {} if settings is None else {CACHE_SECTION: settings.to_dict()}


def save_spelling(directory: str | Path, spelling: SpellingModel | None) -> None:
    """Give the checkpoint in ``directory`` this spelling model (None: none), leaving every
    other file as it is: its data file is written first, then config.json atomically, and the
    result is loaded (and so checked) before the replaced spelling file is removed."""
    directory = Path(directory)
    config = read_config(directory)
    old = config["roles"].pop(SPELLING_ROLE, None)
    config.pop(SPELLING_ROLE, None)
    if spelling is not None:
        data = save_safetensors(spelling.tensors())
        name, entry = _data_file(directory, SPELLING_ROLE, "safetensors", data)
        config["files"][name], config["roles"][SPELLING_ROLE] = entry, name
        config[SPELLING_ROLE] = spelling.to_dict()
    if old is not None and old not in config["roles"].values():
        config["files"].pop(old, None)
    config["saved_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_atomic(directory / CONFIG_FILE, json.dumps(config, indent=2, ensure_ascii=False).encode())
    load_checkpoint(directory)  # what was written loads
    if old is not None and old not in config["files"]:
        (directory / old).unlink(missing_ok=True)


def _save_components(directory: Path, lm: InterpolatedLM) -> dict[str, Any]:
    """Copy each component's checkpoint into ``components/<sha12>`` (named by the sha256 of its
    config.json); the model section naming them.

    Every source is read and verified before anything is written (a source may even be a
    component of the checkpoint being replaced), and each must still hold the weights the
    component was loaded from (a training run saving a new best model meanwhile is refused).
    The directories are new names, so until config.json is replaced the old checkpoint is whole;
    the ones it no longer lists are removed after.
    """
    if lm.sources is None:
        raise ValueError("an interpolation is saved from the checkpoints of its components")
    copies = []
    for name, source, component in zip(lm.names, lm.sources, lm.components, strict=True):
        raw, config, data = read_checkpoint_files(source)
        weights = model_checksum(config)
        if component.checksum is not None and weights != component.checksum:
            raise CheckpointError(
                f"{source}: its weights changed since the model was loaded (sha256 {weights[:12]} "
                f"instead of {component.checksum[:12]}); combine again"
            )
        copies.append((name, hashlib.sha256(raw).hexdigest(), raw, data))
    entries = []
    for name, digest, raw, data in copies:
        target = directory / COMPONENTS_DIR / digest[:12]
        if not (target / CONFIG_FILE).is_file() or _read_regular(target / CONFIG_FILE) != raw:
            target.mkdir(parents=True, exist_ok=True)
            for file_name, blob in data.items():
                write_atomic(target / file_name, blob)
            write_atomic(target / CONFIG_FILE, raw)
        entries.append({"name": name, "path": f"{COMPONENTS_DIR}/{digest[:12]}",
                        "config_sha256": digest})  # fmt: skip
    return {"kind": "interpolation", "components": entries}


def _drop_stale_components(directory: Path, architecture: dict[str, Any]) -> None:
    """After the commit: remove component copies the new config.json does not list."""
    listed = {entry["path"] for entry in architecture.get("components", [])}
    parent = directory / COMPONENTS_DIR
    for child in parent.iterdir() if parent.is_dir() else []:
        if f"{COMPONENTS_DIR}/{child.name}" not in listed and COMPONENT_RE.fullmatch(child.name):
            shutil.rmtree(child, ignore_errors=True)


def read_checkpoint_files(source: Path) -> tuple[bytes, dict[str, Any], dict[str, bytes]]:
    """A checkpoint's config.json bytes, parsed config and verified data files, read once."""
    with as_checkpoint_error(source):
        if not source.is_dir():
            raise CheckpointError(f"{source}: not a directory")
        path = source / CONFIG_FILE
        try:
            raw = _read_regular(path)
        except OSError as e:
            raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
        config = parse_json(path, raw)
        check_config(path, config)
        data = {
            name: _read_verified(source, config, role) for role, name in config["roles"].items()
        }
        return raw, config, data


# ------------------------------------------------------------------ reading
def read_config(directory: str | Path) -> dict[str, Any]:
    """Parse and check ``config.json``; raise CheckpointError naming the problem.

    Everything the loader relies on is checked here (types, names, sizes, hashes' form), so a
    damaged file fails with a message naming config.json and the field, never a TypeError later.
    """
    directory = Path(directory)
    with as_checkpoint_error(directory):
        if not directory.is_dir():
            raise CheckpointError(f"{directory}: not a directory")
        path = directory / CONFIG_FILE
        try:
            data = _read_regular(path)
        except FileNotFoundError:
            raise CheckpointError(
                f"{path}: missing; {directory} is not a nextword checkpoint"
            ) from None
        except OSError as e:
            raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
        config = parse_json(path, data)
        check_config(path, config)
        checked: dict[str, Any] = config
        return checked


def _read_regular(path: Path) -> bytes:
    """The bytes of ``path``, which must be a regular file (a symbolic link to one will do).

    Anything else is refused before it is opened: reading a FIFO blocks until a writer comes,
    which may be never, and a device such as /dev/zero never ends. The file is opened without
    blocking and checked again, in case it was replaced in between.
    """
    if not stat.S_ISREG(path.stat().st_mode):
        raise CheckpointError(f"{path}: not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CheckpointError(f"{path}: not a regular file")
        return f.read()


def _read_verified(directory: Path, config: dict[str, Any], role: str) -> bytes:
    """The bytes of the data file playing ``role``, checked against its size and sha256."""
    name = config["roles"].get(role)
    if name is None:
        raise CheckpointError(f"{directory / CONFIG_FILE}: lists no {role} file")
    path, entry = directory / name, config["files"][name]
    data = _read_sized(path, entry["bytes"])
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"{path}: corrupted: sha256 does not match {CONFIG_FILE}")
    return data


def _read_sized(path: Path, expected: int) -> bytes:
    """A listed data file's bytes; its size is checked before reading (a huge file is not read)."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise CheckpointError(f"{path}: not a regular file (listed in {CONFIG_FILE})")
        data = path.read_bytes() if size == expected else b""
    except FileNotFoundError:
        raise CheckpointError(f"{path}: missing (listed in {CONFIG_FILE})") from None
    except OSError as e:
        raise CheckpointError(f"{path}: cannot be read ({e.strerror})") from None
    if size != expected or len(data) != expected:
        raise CheckpointError(f"{path}: truncated or padded: {size} bytes, expected {expected}")
    return data


def load_tensors(
    directory: str | Path,
    role: str,
    config: dict[str, Any] | None = None,
    *,
    finite: bool = True,
) -> dict[str, np.ndarray]:
    """The verified tensor group ``role`` ("weights", or a group saved via ``extra_tensors``).

    With ``finite`` (the default) a NaN or infinity in any floating tensor is a CheckpointError:
    weights, optimiser moments and carried states are all finite in a healthy run.
    """
    directory = Path(directory)
    with as_checkpoint_error(directory):
        config = read_config(directory) if config is None else config
        data = _read_verified(directory, config, role)
        path = directory / config["roles"][role]
        tensors = _parse_safetensors(path, data)
        if finite:
            check_finite(path, tensors)
        return tensors


def _parse_safetensors(path: Path, data: bytes) -> dict[str, np.ndarray]:
    """The tensors in verified bytes; a malformed file is a CheckpointError naming it."""
    try:
        return load_safetensors(data)
    except SafetensorError as e:
        raise CheckpointError(f"{path}: unreadable safetensors ({e})") from None
    except KeyError as e:  # safetensors.numpy has no numpy type for it (BF16, F8_*)
        raise CheckpointError(f"{path}: unsupported tensor dtype {e}") from None


def load_checkpoint(
    directory: str | Path, dtype: type | np.dtype[Any] = np.float32
) -> RecurrentLM | GapFillingLM | NgramLM | InterpolatedLM:
    """Rebuild the model saved in ``directory``; every file is verified before use.

    This is the one place that reads which kind of model a checkpoint holds: the rest of the
    project calls the ``LanguageModel`` interface and never asks.

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


def load_network_checkpoint(directory: str | Path) -> RecurrentLM | GapFillingLM:
    """``load_checkpoint`` for a caller that needs a network (training, resuming)."""
    lm = load_checkpoint(directory)
    if isinstance(lm, NgramLM | InterpolatedLM):
        raise CheckpointError(
            f"{directory}: holds an {lm.architecture()['kind']} model, not a network"
        )
    return lm


def _config_stamp(directory: Path) -> tuple[int, int, int] | None:
    try:
        st = (directory / CONFIG_FILE).stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def _load(
    directory: Path, dtype: type | np.dtype[Any]
) -> RecurrentLM | GapFillingLM | NgramLM | InterpolatedLM:
    """The model of the checkpoint's kind, with its spelling model (every kind may have one)."""
    with as_checkpoint_error(directory):
        config = read_config(directory)
        lm = _load_kind(directory, config, dtype)
        if (SPELLING_ROLE in config) != (SPELLING_ROLE in config["roles"]):
            raise CheckpointError(
                f"{directory / CONFIG_FILE}: a spelling section needs its spelling file, and "
                "the reverse"
            )
        if SPELLING_ROLE in config:
            tensors = load_tensors(directory, SPELLING_ROLE, config)
            try:
                lm.use_spelling(SpellingModel.from_parts(config[SPELLING_ROLE], tensors))
            except SpellingError as e:
                raise CheckpointError(f"{directory / CONFIG_FILE}: {e}") from None
        if CACHE_SECTION in config:  # any kind with hidden states; the others refuse it
            try:
                lm.use_neural_cache(CacheSettings.from_dict(config[CACHE_SECTION]))
            except ValueError as e:
                raise CheckpointError(f"{directory / CONFIG_FILE}: {CACHE_SECTION}: {e}") from None
        if RERANK_SECTION in config:
            try:
                lm.rerank = RerankWeights.from_dict(config[RERANK_SECTION])
            except ValueError as e:
                raise CheckpointError(f"{directory / CONFIG_FILE}: {RERANK_SECTION}: {e}") from None
        return lm


def _load_kind(
    directory: Path, config: dict[str, Any], dtype: type | np.dtype[Any]
) -> RecurrentLM | GapFillingLM | NgramLM | InterpolatedLM:
    where = directory / CONFIG_FILE
    kind = config["model"].get("kind")
    if START_ROLE in config["roles"] and (kind or config["model"].get("bidirectional")):
        raise CheckpointError(
            f"{where}: roles lists a {START_ROLE} file, which only a left-to-right "
            "recurrent model has"
        )
    if kind == "ngram":
        return _load_ngram(directory, config)
    if kind == "interpolation":
        return _load_interpolation(directory, config, dtype)
    model_config = _section(where, "model", ModelConfig.from_dict, config)
    tokenizer = _section(where, "tokenizer", Tokenizer.from_dict, config)
    vocab = _load_vocab(directory, config, model_config.vocab_size)
    params = _load_params(directory, config)
    checksum = model_checksum(config)
    metadata = dict(config.get("metadata", {}))
    network = BiRNNLM if model_config.bidirectional else RNNLM
    net = _build(network, model_config, params, dtype, directory, config)
    if isinstance(net, RNNLM) and START_ROLE in config["roles"]:
        net.start = _load_start_state(directory, config, net)
    return language_model(net, vocab, tokenizer, metadata, checksum)


def language_model(
    net: RNNLM | BiRNNLM,
    vocab: Vocabulary,
    tokenizer: Tokenizer,
    metadata: dict[str, Any] | None = None,
    checksum: str | None = None,
) -> RecurrentLM | GapFillingLM:
    """The servable model of ``net``'s kind (what a checkpoint of ``net`` loads as)."""
    if isinstance(net, BiRNNLM):
        return GapFillingLM(net, vocab, tokenizer, metadata, checksum)
    return RecurrentLM(net, vocab, tokenizer, metadata, checksum)


def _section(where: Path, key: str, from_dict: Callable[[Any], T], config: dict[str, Any]) -> T:
    """Build one config.json section; its own checks name the field, we add the file."""
    try:
        return from_dict(config[key])
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where}: {key}: {e}") from None


def _load_ngram(directory: Path, config: dict[str, Any]) -> NgramLM:
    """An n-gram model: its tables are int32 ids and float32 log10 values, sorted as written."""
    where = directory / CONFIG_FILE
    section = config["model"]
    order, size = section.get("order"), section.get("vocab_size")
    if set(section) != {"kind", "order", "vocab_size"}:
        raise CheckpointError(f"{where}: model: an n-gram section has kind, order and vocab_size")
    if not (is_int(order) and 1 <= order <= MAX_NGRAM_ORDER):
        raise CheckpointError(
            f"{where}: model: order must be 1 to {MAX_NGRAM_ORDER}, got {order!r}"
        )
    if not (is_int(size) and size >= MIN_IDS):
        raise CheckpointError(
            f"{where}: model: vocab_size must be an integer ≥ {MIN_IDS}, got {size!r}"
        )
    tokenizer = _section(where, "tokenizer", Tokenizer.from_dict, config)
    vocab = _load_vocab(directory, config, size)
    path = directory / config["roles"]["weights"]
    tensors = load_tensors(directory, "weights", config)
    expected = {f"{k}.{part}" for k in range(1, order + 1)
                for part in ("ids", "log10_prob", "log10_backoff")}  # fmt: skip
    if set(tensors) != expected:
        raise CheckpointError(f"{path}: expected the tensors {sorted(expected)}")
    for name, tensor in tensors.items():
        want = "int32" if name.endswith(".ids") else "float32"
        if tensor.dtype.name != want:
            raise CheckpointError(f"{path}: tensor {name!r} has dtype {tensor.dtype}, not {want}")
        if name.endswith(".ids") and tensor.size and not 0 <= tensor.min() <= tensor.max() < size:
            raise CheckpointError(f"{path}: tensor {name!r} holds ids outside 0..{size - 1}")
    try:
        tables = NgramLM.tables_from(tensors, order)
        checksum = config["files"][config["roles"]["weights"]]["sha256"]
        return NgramLM(tables, vocab, tokenizer, dict(config.get("metadata", {})), checksum)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None


def _load_interpolation(
    directory: Path, config: dict[str, Any], dtype: type | np.dtype[Any]
) -> InterpolatedLM:
    """The components from ``components/<sha12>``, each matching the sha256 recorded for its
    config.json, and the weights (a float64 vector summing to 1)."""
    where = directory / CONFIG_FILE
    section, entries = config["model"], config["model"].get("components")
    if set(section) != {"kind", "components"} or not isinstance(entries, list):
        raise CheckpointError(f"{where}: model: an interpolation section has kind and components")
    if not 2 <= len(entries) <= MAX_COMPONENTS:
        raise CheckpointError(
            f"{where}: model.components: 2 to {MAX_COMPONENTS} models, got {len(entries)}"
        )
    components, names, sources = [], [], []
    for i, entry in enumerate(entries):
        field = f"{where}: model.components[{i}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "path", "config_sha256"}:
            raise CheckpointError(f"{field}: must be an object of name, path and config_sha256")
        digest = entry["config_sha256"]
        if not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
            raise CheckpointError(f"{field}: config_sha256 must be 64 lowercase hex digits")
        expected_path = f"{COMPONENTS_DIR}/{digest[:12]}"
        if entry["path"] != expected_path or not isinstance(entry["name"], str):
            raise CheckpointError(f"{field}: path must be {expected_path!r}, name a string")
        source = directory / expected_path
        try:
            raw = _read_regular(source / CONFIG_FILE)
        except OSError as e:
            raise CheckpointError(
                f"{source / CONFIG_FILE}: cannot be read ({e.strerror})"
            ) from None
        if hashlib.sha256(raw).hexdigest() != entry["config_sha256"]:
            raise CheckpointError(
                f"{source / CONFIG_FILE}: does not match the config_sha256 that {where} records "
                "for it (the component was changed or replaced)"
            )
        components.append(_load(source, dtype))
        names.append(entry["name"])
        sources.append(source)
    path = directory / config["roles"]["weights"]
    tensors = load_tensors(directory, "weights", config)
    if set(tensors) != {"weights"} or tensors["weights"].dtype != np.float64:
        raise CheckpointError(f"{path}: expected one float64 tensor 'weights'")
    vocab = _load_vocab(directory, config, len(components[0].vocab))
    if vocab.tokens != components[0].vocab.tokens:
        raise CheckpointError(f"{path}: the vocabulary is not the components' vocabulary")
    try:
        weights, _ = normalised_weights(tensors["weights"], len(components))
        checksum = config["files"][config["roles"]["weights"]]["sha256"]
        metadata = dict(config.get("metadata", {}))
        return InterpolatedLM(components, weights, names, metadata, checksum, sources)
    except ValueError as e:
        raise CheckpointError(f"{where}: {e}") from None


def _load_vocab(directory: Path, config: dict[str, Any], vocab_size: int) -> Vocabulary:
    path = directory / config["roles"]["vocab"]
    data = parse_json(path, _read_verified(directory, config, "vocab"))
    try:
        vocab = Vocabulary.from_dict(data)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: invalid vocabulary: {e}") from None
    if len(vocab) != vocab_size:
        expected = vocab_size
        raise CheckpointError(
            f"{path}: {len(vocab)} tokens, but {directory / CONFIG_FILE} says vocab_size {expected}"
        )
    return vocab


def _load_params(directory: Path, config: dict[str, Any]) -> dict[str, np.ndarray]:
    """The verified weights: float and finite (their shapes are the network's to check)."""
    params = load_tensors(directory, "weights", config)
    check_dtypes(directory / config["roles"]["weights"], params, config.get("dtype"))
    return params


def model_checksum(config: dict[str, Any]) -> str:
    """What identifies a model's numbers: the sha256 of its weights file, or, for a model with
    a start state, the sha256 of both files' sha256s (a new start state is another model)."""
    weights = str(config["files"][config["roles"]["weights"]]["sha256"])
    if START_ROLE not in config["roles"]:
        return weights
    start = str(config["files"][config["roles"][START_ROLE]]["sha256"])
    return hashlib.sha256(f"{weights}:{start}".encode()).hexdigest()


def _load_start_state(directory: Path, config: dict[str, Any], net: RNNLM) -> NetworkState:
    """The saved start state (model/inference/start_state.py): one (1, H) tensor per cell
    state of each layer, finite, in the network's dtype."""
    tensors = load_tensors(directory, START_ROLE, config)
    path = directory / config["roles"][START_ROLE]
    check_dtypes(path, tensors, config.get("dtype"))
    zero = net.init_state(1)
    expected = {f"{layer}.{k}": t.shape for layer, ts in enumerate(zero) for k, t in enumerate(ts)}
    got = {name: t.shape for name, t in tensors.items()}
    if got != expected:
        raise CheckpointError(f"{path}: expected the tensors {expected}, found {got}")
    return [
        tuple(tensors[f"{layer}.{k}"].astype(net.dtype) for k in range(len(ts)))
        for layer, ts in enumerate(zero)
    ]


def _build(
    network: type[RNNLM] | type[BiRNNLM],
    model_config: ModelConfig,
    params: dict[str, np.ndarray],
    dtype: type | np.dtype[Any],
    directory: Path,
    config: dict[str, Any],
) -> RNNLM | BiRNNLM:
    """The network from its weights, which must have its shapes and stay finite in ``dtype``."""
    path = directory / config["roles"]["weights"]
    try:
        with np.errstate(over="ignore"):  # an overflowing cast is reported just below
            net = network(model_config, params, dtype=dtype)
    except ValueError as e:
        raise CheckpointError(f"{path}: does not match {directory / CONFIG_FILE}: {e}") from None
    check_finite(path, net.params, f" after conversion to {np.dtype(dtype)} (out of its range)")
    return net
