"""The models a server holds: loaded in the background at start-up, warmed, then ready.

Loading runs in a thread so that ``/healthz`` answers at once and ``/readyz`` (and every scoring
request) says 503 until the models are loaded and have answered one forward pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import schemas
from app.batching import CandidateBatcher
from app.core.config import Settings
from app.metrics import MODEL_LOADS
from app.service import cache_used, endpoints
from model.inference.checkpoint import CheckpointError, load_checkpoint
from model.inference.language_model import LanguageModel
from model.values import is_number

log = logging.getLogger("nextword")


class ModelNotFoundError(LookupError):
    """A request names a model this server did not load."""


class NotReadyError(RuntimeError):
    """The models are still loading (or failed to load)."""


@dataclass
class LoadedModel:
    name: str
    path: Path
    lm: LanguageModel
    loaded_at: str  # UTC, ISO 8601
    load_seconds: float
    batcher: CandidateBatcher

    def describe(self) -> schemas.ModelDescription:
        """What /v1/models says about this model.

        Metadata is what training wrote, checked only to be an object: each field is shown when
        it has the expected type and left out (None) otherwise, so a hand-edited checkpoint still
        serves and describes itself.
        """
        lm, meta = self.lm, self.lm.metadata
        training, corpus = _object(meta.get("training")), _object(meta.get("corpus"))
        train = _text(corpus.get("train")) or _text(training.get("train"))
        cache = lm.cache_stats()
        return schemas.ModelDescription(
            name=self.name,
            checkpoint=self.path.name,  # the directory's name: no server paths in answers
            task=lm.task,
            architecture=lm.architecture(),
            parameters=lm.num_parameters(),
            bidirectional=bool(lm.architecture().get("bidirectional", False)),
            endpoints=endpoints(lm.calls),
            vocab_size=len(lm.vocab),
            tokenizer=lm.tokenizer.to_dict(),
            training_corpus=None if not train else schemas.TrainingCorpus(
                file=Path(train).name, sha256=_text(corpus.get("train_sha256")),
            ),
            training_tokens=_number(corpus.get("train_tokens")),
            valid_perplexity=_number(meta.get("valid_perplexity")),
            test_perplexity=_number(meta.get("test_perplexity")),
            epoch=_number(meta.get("epoch")),
            trained_at=_text(meta.get("trained_at")),
            checksum=lm.checksum,
            loaded_at=self.loaded_at,
            load_seconds=round(self.load_seconds, 4),
            network_steps=lm.steps_run,
            prefix_cache=None if cache is None else schemas.PrefixCacheStats(**cache),
            open_vocabulary=None if lm.spelling is None
            else schemas.OpenVocabulary(**lm.spelling.describe()),
            cache=cache_used(lm),
            rerank=None if lm.rerank is None else schemas.RerankUsed(**lm.rerank.to_dict()),
        )  # fmt: skip


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> int | float | None:
    return value if is_number(value, finite=True) else None


class ModelRegistry:
    """Name → loaded model, plus the loading state the health endpoints report."""

    def __init__(
        self,
        specs: list[tuple[str, Path]],
        default: str | None = None,
        on_change: Callable[[ModelRegistry], None] | None = None,
        settings: Settings | None = None,
        cache_observer: Callable[[str], Callable[[bool, int], None]] | None = None,
    ) -> None:
        self.specs = specs
        self.on_change = on_change  # called after every load and state change (metrics)
        self.settings = settings or Settings()
        self.cache_observer = cache_observer  # model name → observer of its prefix cache
        self.default = default or specs[0][0]
        if self.default not in {name for name, _ in specs}:
            raise ValueError(f"default model {self.default!r} is not among {[n for n, _ in specs]}")
        self.models: dict[str, LoadedModel] = {}
        self.state = "loading"  # loading | ready | failed
        self.error: str | None = None
        self._lock = threading.Lock()
        self._reloading = threading.Lock()  # one reload at a time: the last one asked wins
        self._reload_asked, self._reloader_running = False, False  # guarded by _lock

    @classmethod
    def from_models(
        cls,
        models: dict[str, LanguageModel],
        default: str | None = None,
        settings: Settings | None = None,
    ) -> ModelRegistry:
        """A ready registry of models already in memory (tests, embedding the app)."""
        specs = [(name, Path(f"<memory:{name}>")) for name in models]
        registry = cls(specs, default, settings=settings)
        for name, lm in models.items():
            registry.add(name, Path(f"<memory:{name}>"), lm, 0.0)
        registry.state = "ready"
        return registry

    def add(self, name: str, path: Path, lm: LanguageModel, seconds: float) -> None:
        """Warm ``lm`` and make it the model called ``name`` (replacing any old one atomically)."""
        s = self.settings
        if s.prefix_cache_entries > 0:
            observer = self.cache_observer(name) if self.cache_observer else None
            lm.use_prefix_cache(s.prefix_cache_entries, int(s.prefix_cache_mb * 2**20), observer)
        lm.self_check()  # warm up: one forward pass before any request sees the model
        loaded_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        batcher = CandidateBatcher(lm, s.batch_window_ms, s.batch_max)
        with self._lock:
            old = self.models.get(name)
            self.models[name] = LoadedModel(name, path, lm, loaded_at, seconds, batcher)
        if old is not None:
            old.batcher.close()  # its thread ends; requests holding the old model still finish
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(self)

    def load_all(self) -> None:
        """Load every checkpoint; on any failure the state is 'failed' with the reason.

        It holds the reload lock: a SIGHUP that arrives during the first load reloads after it,
        so the checkpoint written last is the one served.
        """
        name = self.default
        try:
            with self._reloading:
                for name, path in self.specs:
                    start = time.perf_counter()
                    self.add_checkpoint(name, path, load_checkpoint(path), start)
                    MODEL_LOADS.labels(name, "start", "loaded").inc()
                    seconds = time.perf_counter() - start
                    log.info("model %s loaded from %s in %.2f s", name, path, seconds)
                self.state = "ready"
        except Exception as e:
            MODEL_LOADS.labels(name, "start", "failed").inc()
            self.state, self.error = "failed", self.redact(str(e))
            log.error("loading models failed: %s", e)
        self._changed()

    def reload(self, name: str) -> LoadedModel:
        """Load ``name``'s checkpoint again and swap it in; on any error the old model stays.

        Requests already running keep the model object they started with, so none is dropped.
        """
        path = dict(self.specs).get(name)
        if path is None:
            known = [n for n, _ in self.specs]
            raise ModelNotFoundError(f"unknown model {name!r}; this server has {known}")
        try:
            with self._reloading:
                loaded = self._reload(name, path)
        except Exception:
            MODEL_LOADS.labels(name, "reload", "refused").inc()
            raise
        MODEL_LOADS.labels(name, "reload", "loaded").inc()
        return loaded

    def _reload(self, name: str, path: Path) -> LoadedModel:
        start = time.perf_counter()
        lm = load_checkpoint(path)  # raises CheckpointError for a damaged checkpoint
        old = self.models.get(name)
        if old is not None and old.lm.calls != lm.calls:
            raise CheckpointError(
                f"{path}: a {lm.task} model cannot replace the {old.lm.task} one in place "
                "(the endpoints differ); restart"
            )
        self.add_checkpoint(name, path, lm, start)
        log.info("model %s reloaded from %s (%s)", name, path, lm.checksum)
        if self.state != "ready" and all(n in self.models for n, _ in self.specs):
            self.state, self.error = "ready", None  # a failed start recovers once all models load
            self._changed()
        return self.models[name]

    def add_checkpoint(self, name: str, path: Path, lm: LanguageModel, started: float) -> None:
        """``add`` for a model loaded from ``path``: a failed warm-up names the checkpoint."""
        try:
            self.add(name, path, lm, time.perf_counter() - started)
        except CheckpointError:
            raise
        except Exception as e:  # e.g. weights so large that the forward pass overflows
            raise CheckpointError(f"{path}: loaded, but the model does not answer: {e}") from e

    def request_reload_all(self) -> None:
        """Reload every model in the background (SIGHUP). Requests that arrive while a reload
        runs are folded into one more reload after it, so the newest checkpoint always wins and
        a burst of signals costs two loads, not one per signal."""
        with self._lock:
            self._reload_asked = True
            if self._reloader_running:
                return
            self._reloader_running = True
        threading.Thread(
            target=self._reload_while_asked, name="nextword-reload", daemon=True
        ).start()

    def _reload_while_asked(self) -> None:
        while True:
            with self._lock:
                if not self._reload_asked:
                    self._reloader_running = False
                    return
                self._reload_asked = False
            self.reload_all()

    def reload_all(self) -> None:
        """Reload every model (SIGHUP); a model that fails to load keeps its old version."""
        for name, _ in self.specs:
            try:
                self.reload(name)
            except Exception as e:
                log.error("reloading model %s failed, the old one keeps serving: %s", name, e)

    def redact(self, message: str) -> str:
        """``message`` with each checkpoint directory shown by its name only: what clients see
        of an error (/readyz, a refused reload); the log keeps the full paths."""
        names = {}
        for _, path in self.specs:
            names[str(path.expanduser().resolve())] = names[str(path)] = path.name
        for full in sorted(names, key=len, reverse=True):
            message = message.replace(full, names[full])
        return message

    def start_loading(self) -> threading.Thread:
        thread = threading.Thread(target=self.load_all, name="nextword-model-loader", daemon=True)
        thread.start()
        return thread

    def get(self, name: str | None = None) -> LoadedModel:
        """The model called ``name`` (the default when None)."""
        if self.state != "ready":
            raise NotReadyError(self.error or "models are loading")
        name = name or self.default
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFoundError(
                f"unknown model {name!r}; this server has {sorted(self.models)}"
            ) from None
