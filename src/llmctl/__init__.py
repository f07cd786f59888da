"""llmctl: a local LLM inference stack as systemd user services, from one declarative config."""

__version__ = "0.1.0"
