"""Schemathesis against the app's own OpenAPI document: generated requests to every operation,
valid and invalid. No 5xx, and every response conforms to the documented schema and codes."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import positive_data_acceptance

from app.core.config import Settings
from app.main import create_app
from app.registry import ModelRegistry
from model.inference.recurrent_lm import RecurrentLM
from model.network.recurrent import RNNLM, ModelConfig
from model.text.tokenize import Tokenizer
from model.text.vocab import Vocabulary


def fuzz_app():
    vocab = Vocabulary(["<unk>", "<s>", "</s>", "the", "cat", "sat", "on", "mat"])
    lm = RecurrentLM(
        RNNLM(ModelConfig(len(vocab), embed_size=8, hidden_size=8), seed=0), vocab, Tokenizer()
    )
    # a body-size limit well above what the fuzzer sends: 413 is tested on its own (test_errors)
    limits = Settings(
        max_candidates=20, max_sentences=20, max_tokens=64, max_k=50, max_body_bytes=50_000_000
    )
    return create_app(limits, ModelRegistry.from_models({"tiny": lm}, settings=limits))


schema = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app())


@pytest.mark.slow  # hundreds of generated requests: `make test-fast` skips them
@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_operation_answers_within_its_schema(case: schemathesis.Case) -> None:
    # Every default check runs except "schema-valid requests are accepted": the document carries
    # the configured limits (maxItems, maximum), but not the tokens a string has after
    # tokenisation, so a schema-valid text over max_tokens is rightly refused with 422.
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
