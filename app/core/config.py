"""Service settings, from environment variables prefixed ``NEXTWORD_`` (or a ``.env`` file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from model.inference.history import MAX_HISTORY_TOKENS


class Settings(BaseSettings):
    """Every limit the service enforces is here; the README lists them."""

    model_config = SettingsConfigDict(env_prefix="NEXTWORD_", env_file=".env", extra="ignore")

    # checkpoints: comma-separated "DIR" or "NAME=DIR" entries (the name defaults to DIR's name)
    model_dir: str = "models/default"
    default_model: str | None = (
        None  # the model used when a request names none (default: the first)
    )
    max_candidates: int = Field(100, ge=1)  # candidates per /v1/candidates or /v1/fill request
    max_sentences: int = Field(128, ge=1)  # sentences per /v1/score, hypotheses per /v1/rerank
    max_tokens: int = Field(256, ge=1)  # tokens in a context, a candidate, or a sentence
    max_k: int = Field(1000, ge=1)  # largest k for /v1/predict
    # history read before a request; the oldest beyond it are dropped
    max_history_tokens: int = Field(MAX_HISTORY_TOKENS, ge=0)
    max_body_bytes: int = Field(1_000_000, ge=1024)  # larger request bodies get 413
    body_timeout_s: float = Field(10, gt=0)  # a body not received in this time gets 408
    max_concurrency: int = Field(64, ge=1)  # requests in progress per worker; beyond: 503
    max_queue_s: float = Field(10, gt=0)  # a client's queued work beyond this (est.): 503
    header_timeout_s: float = Field(10, gt=0)  # request headers not complete in this time: closed
    max_connections: int = Field(512, ge=1)  # per worker; beyond it the longest-idle is closed
    keep_alive_s: int = Field(5, ge=1)  # idle keep-alive connections are closed after this
    log_level: str = "info"
    # prefix-state cache per model (0 entries turns it off) and cross-request batching
    prefix_cache_entries: int = Field(4096, ge=0)
    prefix_cache_mb: float = Field(64, ge=0)
    batch_window_ms: float = Field(0, ge=0, le=1000)  # 0: every request is scored at once, alone
    batch_max: int = Field(64, ge=1)
    reload_token: str | None = None  # enables POST /v1/models/{name}/reload with this bearer token

    def model_specs(self) -> list[tuple[str, Path]]:
        """[(name, directory)] from ``model_dir``."""
        specs = []
        for entry in (e.strip() for e in self.model_dir.split(",")):
            if not entry:
                continue
            name, _, path = entry.partition("=") if "=" in entry else ("", "", entry)
            directory = Path(path).expanduser()
            specs.append((name or directory.resolve().name, directory))
        names = [n for n, _ in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"NEXTWORD_MODEL_DIR: duplicate model names {names}; use NAME=DIR")
        if not specs:
            raise ValueError("NEXTWORD_MODEL_DIR names no model directory")
        return specs
