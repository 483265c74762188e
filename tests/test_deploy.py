"""The container, compose and Kubernetes files agree with each other and with the app.

These run without a Docker daemon; .ci/run builds and runs the image for real.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.recurrent_lm import RecurrentLM

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def dockerfile_value(pattern: str) -> str:
    match = re.search(pattern, DOCKERFILE, re.M)
    assert match, pattern
    return match.group(1)


UID = dockerfile_value(r"^ARG UID=(\d+)")
PORT = dockerfile_value(r"^EXPOSE (\d+)")
MODEL_DIR = dockerfile_value(r"^\s+NEXTWORD_MODEL_DIR=(\S+)")


@pytest.fixture
def routes(tiny_lm: RecurrentLM) -> set[str]:
    app = create_app(Settings(), ModelRegistry.from_models({"m": tiny_lm}))
    return set(app.openapi()["paths"])


def test_dockerfile_is_multi_stage_non_root_with_a_healthcheck_and_a_default_model() -> None:
    assert DOCKERFILE.count("\nFROM ") == 2
    assert "ARG BASE_IMAGE=python:3.12-slim" in DOCKERFILE
    assert re.search(r"^USER \$\{UID\}", DOCKERFILE, re.M) and UID != "0"
    assert re.search(r'HEALTHCHECK .*\n.*"app.healthcheck", "/healthz"', DOCKERFILE)
    assert "nextword train --preset default --out /models/default" in DOCKERFILE
    assert MODEL_DIR == "/models/default"
    assert dockerfile_value(r"^\s+NEXTWORD_PORT=(\d+)") == PORT
    assert dockerfile_value(r"^\s+NEXTWORD_HOST=(\S+)") == "0.0.0.0"


def test_dockerignore_keeps_the_context_small_but_keeps_the_wheelhouse() -> None:
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert {".git", ".venv", "tests", "/runs"} <= set(ignored)
    assert not any(line.startswith("wheelhouse") for line in ignored)


def test_compose_serves_the_image_and_trains_into_the_same_volume(routes: set[str]) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    api, train = compose["services"]["api"], compose["services"]["train"]
    assert api["ports"] == [f"{PORT}:{PORT}"]
    assert api["environment"]["NEXTWORD_MODEL_DIR"] == MODEL_DIR
    assert api["read_only"] is True and "/tmp" in api["tmpfs"]
    assert api["restart"] == "unless-stopped" and api["deploy"]["resources"]["limits"]["cpus"]
    assert api["healthcheck"]["test"] == ["CMD", "python3", "-m", "app.healthcheck", "/readyz"]
    assert "/readyz" in routes
    assert train["profiles"] == ["train"]
    assert train["entrypoint"][:2] == ["nextword", "train"] and MODEL_DIR in train["entrypoint"]
    assert "models:/models:ro" in api["volumes"] and "models:/models" in train["volumes"]
    assert "models" in compose["volumes"]


def test_kubernetes_manifests_match_the_image_and_the_app(routes: set[str]) -> None:
    docs = {}
    for path in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[doc["kind"]] = doc
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "Kustomization"} <= set(docs)
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert str(pod["securityContext"]["runAsUser"]) == UID
    assert str(container["ports"][0]["containerPort"]) == PORT
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz"} <= routes
    assert container["resources"]["requests"] and container["resources"]["limits"]
    env = {e["name"]: e["value"] for e in container["env"]}
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    name, path = env["NEXTWORD_MODEL_DIR"].split("=")
    assert path in mounts and name == Path(MODEL_DIR).name  # the same model name as in Docker
    (init,) = pod["initContainers"]
    assert {e["name"]: e["value"] for e in init["env"]}["MODEL_SOURCE"] == MODEL_DIR
    service = docs["Service"]["spec"]
    assert service["ports"][0]["targetPort"] == container["ports"][0]["name"]
    assert service["selector"] == docs["Deployment"]["spec"]["selector"]["matchLabels"]
    hpa = docs["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == docs["Deployment"]["metadata"]["name"]
    assert hpa["minReplicas"] >= 2


def test_the_health_check_command_follows_the_server_port(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import healthcheck

    monkeypatch.setenv("NEXTWORD_PORT", "9")  # nothing listens on the discard port
    assert healthcheck.main(["healthcheck", "/healthz"]) == 1
