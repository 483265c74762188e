"""Checks for what a checkpoint directory holds, each failing with a message naming the file.

``model.inference.checkpoint`` reads the files; this module decides whether what it read can be
trusted: config.json's fields (JSON types, names, sizes, the form of hashes), nesting depth and
duplicate keys in any JSON file, and the dtype and finiteness of tensors. The model, tokenizer and
vocabulary sections are checked by their own ``from_dict``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from model.values import show

FORMAT = "nextword-rnnlm"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
DATA_FILE_RE = re.compile(r"^[a-z_]+\.[0-9a-f]{12}\.(json|safetensors)$")
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
REQUIRED_ROLES = ("vocab", "weights")
FLOAT_DTYPES = ("float16", "float32", "float64")
MAX_JSON_DEPTH = 32  # config.json nests 4 deep; far deeper is damage, and would recurse later


class CheckpointError(Exception):
    """A checkpoint cannot be written or read; the message names the file and the problem."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: a repeated key would make the file ambiguous, so it is an error."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError(f"key {show(key)} appears twice in one object")
        obj[key] = value
    return obj


def parse_json(path: Path, data: bytes) -> Any:
    """JSON from a checkpoint file; any way it cannot be parsed is a CheckpointError naming it."""
    try:
        value = json.loads(data, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise CheckpointError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, integers over 4300 digits
        raise CheckpointError(f"{path}: not valid JSON ({e})") from None
    too_deep = _too_deep(value, MAX_JSON_DEPTH)
    if too_deep is not None:
        raise CheckpointError(
            f"{path}: {too_deep} is nested more than {MAX_JSON_DEPTH} levels deep"
        )
    return value


def _too_deep(value: Any, limit: int) -> str | None:
    """The place (``metadata.a[0]``) where parsed JSON nests deeper than ``limit``, if any.

    Iterative on purpose: deep nesting is what it guards against (later code that recurses,
    such as a JSON encoder, would fail far from the file).
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, where = stack.pop()
        if len(where) >= limit:
            place = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in where)
            return place.lstrip(".")[:80]
        if not isinstance(item, dict | list):
            continue
        pairs = item.items() if isinstance(item, dict) else enumerate(item)
        stack.extend((v, (*where, k)) for k, v in pairs if isinstance(v, dict | list))
    return None


def check_config(path: Path, config: Any) -> None:
    """Everything the loader relies on in config.json, so damage never surfaces as a TypeError."""
    _check_header(path, config)
    _check_files(path, config["files"])
    _check_roles(path, config["roles"], config["files"])


def _check_header(path: Path, config: Any) -> None:
    """The top level: format, a supported version, and each section of the right JSON type."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a {FORMAT} config (found {type(config).__name__})")
    if config.get("format") != FORMAT:
        found = show(config.get("format"))
        raise CheckpointError(f"{path}: not a {FORMAT} config (format is {found})")
    version = config.get("format_version")
    if type(version) is not int or version < 1:
        raise CheckpointError(f"{path}: format_version must be an integer ≥ 1, got {show(version)}")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version} is not supported by this nextword "
            f"(supports up to {FORMAT_VERSION}); upgrade nextword"
        )
    for key in ("model", "tokenizer", "files", "roles"):
        if not isinstance(config.get(key), dict):
            raise CheckpointError(f"{path}: missing or malformed field {key!r}: must be an object")
    if not isinstance(config.get("metadata", {}), dict):
        raise CheckpointError(f"{path}: metadata must be an object, got {show(config['metadata'])}")
    if config.get("dtype", "float32") not in FLOAT_DTYPES:
        raise CheckpointError(
            f"{path}: dtype must be one of {FLOAT_DTYPES}, got {show(config['dtype'])}"
        )


def _check_files(path: Path, files: dict[str, Any]) -> None:
    """Each ``files`` entry: a data file name of ours, its sha256 (64 hex) and size in bytes."""
    for name, entry in files.items():
        where = f"{path}: files[{show(name)}]"
        if not DATA_FILE_RE.fullmatch(name):
            raise CheckpointError(f"{where}: not a checkpoint data file name (role.<sha12>.suffix)")
        if not isinstance(entry, dict):
            raise CheckpointError(f"{where} must be an object, got {show(entry)}")
        digest, size = entry.get("sha256"), entry.get("bytes")
        if not (isinstance(digest, str) and _SHA256_RE.fullmatch(digest)):
            raise CheckpointError(
                f"{where}.sha256 must be 64 lowercase hex digits, got {show(digest)}"
            )
        if type(size) is not int or size < 0:
            raise CheckpointError(f"{where}.bytes must be an integer ≥ 0, got {show(size)}")


def _check_roles(path: Path, roles: dict[str, Any], files: dict[str, Any]) -> None:
    """Each role names a listed file written for it (``vocab`` JSON, tensor groups safetensors)."""
    for role in REQUIRED_ROLES:
        if role not in roles:
            raise CheckpointError(f"{path}: roles lists no {role} file")
    for role, name in roles.items():
        suffix = "json" if role == "vocab" else "safetensors"
        if not isinstance(name, str) or name not in files:
            raise CheckpointError(
                f"{path}: roles[{show(role)}] must name a file listed in files, got {show(name)}"
            )
        if not (name.startswith(f"{role}.") and name.endswith(f".{suffix}")):
            raise CheckpointError(
                f"{path}: roles[{show(role)}] names {name!r}, not a {role}.<sha12>.{suffix} file"
            )


def non_finite_problem(name: str, tensor: np.ndarray) -> str | None:
    """What is not finite in ``tensor`` ("tensor 'x' has 1 non-finite value (inf) at row 7")."""
    if tensor.dtype.kind not in "fc":
        return None
    bad = ~np.isfinite(tensor)
    count = int(np.count_nonzero(bad))
    if count == 0:
        return None
    values = tensor[bad]
    found = {"nan": np.isnan(values), "inf": values == np.inf, "-inf": values == -np.inf}
    kinds = ", ".join(kind for kind, hits in found.items() if hits.any())
    plural = "value" if count == 1 else "values"
    return f"tensor {name!r} has {count} non-finite {plural} ({kinds}){_where(bad)}"


def _where(bad: np.ndarray) -> str:
    """Where the bad values are by leading index: for embedding and output rows, the token id."""
    if bad.ndim == 0:
        return ""
    rows = np.unique(np.nonzero(bad)[0])
    unit, units = ("index", "indices") if bad.ndim == 1 else ("row", "rows")
    if len(rows) == 1:
        return f" at {unit} {rows[0]}"
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    return f" at {units} {', '.join(str(r) for r in rows[:5])}{more}"


def check_finite(path: Path, tensors: Mapping[str, np.ndarray], note: str = "") -> None:
    """Raise naming the first tensor with a NaN or infinity: it would poison every answer."""
    for name, tensor in tensors.items():
        problem = non_finite_problem(name, tensor)
        if problem:
            raise CheckpointError(f"{path}: {problem}{note}")


def check_dtypes(path: Path, tensors: Mapping[str, np.ndarray], dtype: str | None) -> None:
    """Weights are floats, and all of the dtype config.json records (when it does)."""
    for name, tensor in tensors.items():
        if tensor.dtype.name not in FLOAT_DTYPES or (dtype and tensor.dtype.name != dtype):
            expected = dtype or f"one of {FLOAT_DTYPES}"
            raise CheckpointError(
                f"{path}: tensor {name!r} has dtype {tensor.dtype}, expected {expected}"
            )


@contextmanager
def as_checkpoint_error(directory: Path) -> Iterator[None]:
    """The safety net: damage no check foresaw still ends as a CheckpointError naming the place."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{directory}: cannot be loaded ({type(e).__name__}: {e})") from e
