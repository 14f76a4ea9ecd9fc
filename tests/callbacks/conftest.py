from __future__ import annotations

import json

import pytest

from app.core.config import Settings


@pytest.fixture
def settings_env(settings_env: dict[str, str]) -> dict[str, str]:
    """Callbacks may reach receivers on loopback; retries come seconds apart."""
    return {
        **settings_env,
        "GENGATE_OUTBOUND_ALLOWLIST": json.dumps(["127.0.0.1/32"]),
        "GENGATE_CALLBACK_RETRY_SCHEDULE": "[0.2, 0.2, 0.2]",
        "GENGATE_CALLBACK_TIMEOUT_SECONDS": "2",
    }


@pytest.fixture
def callback_settings(settings: Settings) -> Settings:
    return settings
