"""FastAPI's own OpenTelemetry instrumentation follows GENGATE_OPENTELEMETRY: off by default,
so no request looks for OpenTelemetry providers."""

import pytest

from app.core.config import Settings
from app.main import create_app


@pytest.mark.parametrize("on", [False, True])
def test_fastapi_telemetry_follows_the_setting(settings: Settings, on: bool) -> None:
    app = create_app(settings.model_copy(update={"opentelemetry": on}))
    # FastAPI keeps its resolved telemetry configuration here; it has no public reader.
    config = app._telemetry
    assert (config["tracing"], config["metrics"], config["logs"]) == (on, on, on)
