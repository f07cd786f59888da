"""Rendering the config into systemd units and the gateway's config."""
