"""Helpers shared by tests (importable, unlike conftest)."""

from __future__ import annotations

from typing import Any

from core.settings import Settings, load_settings

API_KEY = "sk-test-cometapi-key-123456"


def make_settings(**overrides: Any) -> Settings:
    """Settings that ignore the developer's .env and environment for the given fields."""
    values: dict[str, Any] = {
        "cometapi_api_key": API_KEY,
        "retry_base_delay": 0.01,
        "retry_max_wait": 3.0,
        "breaker_cooldown": 30.0,
        "first_token_timeout": 5.0,
        "idle_timeout": 5.0,
        "total_timeout": 30.0,
        "lock_ttl_seconds": 3.0,
        "log_format": "text",
    }
    values.update(overrides)
    return load_settings(_env_file=None, **values)
