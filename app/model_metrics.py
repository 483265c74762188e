"""The registry mirrored in the metrics: one info series per served model, and readiness."""

from __future__ import annotations

from app.metrics import MODEL_INFO, MODEL_LOAD_SECONDS, READY
from app.registry import ModelRegistry

_published: set[tuple[str, ...]] = set()  # the model_info label sets this process has set to 1


def publish(registry: ModelRegistry) -> None:
    """Set each served model's info series to 1 and every series no longer served to 0 (a
    reloaded model's old checksum); ``clear()`` would do nothing with several workers."""
    served: set[tuple[str, ...]] = set()
    for m in registry.models.values():
        architecture = m.lm.architecture()
        cell = str(architecture.get("cell", "-"))  # "-": a kind without cells
        kind = str(architecture.get("kind", "recurrent" if "cell" in architecture else "-"))
        labels: tuple[str, ...] = (m.name, kind, cell, str(len(m.lm.vocab)), m.lm.checksum or "")
        MODEL_INFO.labels(*labels).set(1)
        served.add(labels)
        MODEL_LOAD_SECONDS.labels(m.name).set(m.load_seconds)
    for labels in _published - served:
        MODEL_INFO.labels(*labels).set(0)
    _published.clear()
    _published.update(served)
    READY.set(1 if registry.state == "ready" else 0)
