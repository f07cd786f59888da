"""What counts as a secret in gateway.yaml's settings: references, and values shaped like keys."""

from __future__ import annotations

import pytest

from llmctl.config.secret_refs import looks_like_a_key, secret_reference_problem, secrets_in


def test_what_looks_like_a_key() -> None:
    assert looks_like_a_key("sk-ant-api03-abcdefghijklmnop")
    assert looks_like_a_key("AKIAIOSFODNN7EXAMPLE")
    assert looks_like_a_key("a8Fj3kLm9QwErTyUiOp2ZxCvBnM4sDfGh")
    # Model ids and callback names are long too, but made of words.
    for value in ("Meta-Llama-3.1-8B-Instruct-Q4_K_M", "qwen2.5-coder-7b-instruct-q4_k_m-gguf", "langfuse"):
        assert not looks_like_a_key(value), value


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("os.environ/OPENAI_API_KEY", None),
        ("os.environ/LITELLM_MASTER_KEY", "master key"),
        ("os.environ/LLMCTL_API_KEY_VLLM", "generates for backends"),
        ("os.environ/", "secrets.env"),
        ("hunter2", "secrets.env"),
    ],
)
def test_a_secret_is_only_ever_a_reference_to_a_name_of_the_users(value: str, problem: str | None) -> None:
    found = secret_reference_problem(value)
    assert found is None if problem is None else (found is not None and problem in found)


def test_secrets_are_found_by_place_in_nested_settings() -> None:
    data = {
        "a": {"api_key": "literal-secret", "token": "os.environ/TOKEN", "max_tokens": 5},
        "b": [{"nested_password": "x"}, "sk-abcdefghijklmnopqrstu"],
    }
    found = list(secrets_in(data, ("root",)))
    assert [at for at, _ in found] == [
        ("root", "a", "api_key"),
        ("root", "b", 0, "nested_password"),
        ("root", "b", 1),
    ]
    assert not any("literal-secret" in why or "sk-abcdef" in why for _, why in found)
