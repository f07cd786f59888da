"""What the gateway's supervisor passes to each LiteLLM child in its environment."""

from __future__ import annotations

from llmctl.gateway_runtime import REDIS_BREAKER_VARIABLE
from llmctl.gateway_runtime.generation import child_environment


def test_children_get_no_redis_variable_llmctl_did_not_set_nor_the_supervisors_own() -> None:
    env = {
        "PATH": "/usr/bin",
        "LITELLM_MASTER_KEY": "sk-x",
        "LLMCTL_REDIS_PASSWORD": "secret",  # read by name from gateway.yaml (os.environ/...)
        REDIS_BREAKER_VARIABLE: "5",
        "REDIS_URL": "rediss://elsewhere:6379/0",  # the user's, for another program
        "REDIS_SSL": "true",
        "REDIS_DB": "7",
        "LISTEN_FDS": "1",
        "NOTIFY_SOCKET": "/run/user/1000/systemd/notify",
    }
    assert child_environment(env) == {
        "PATH": "/usr/bin",
        "LITELLM_MASTER_KEY": "sk-x",
        "LLMCTL_REDIS_PASSWORD": "secret",
        REDIS_BREAKER_VARIABLE: "5",
    }
