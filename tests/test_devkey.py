from pathlib import Path

from app.core.config import Settings
from app.devkey import dev_key_path, ensure_dev_key
from app.keys.service import authenticate
from app.runtime import Runtime
from tests.support.backends import fresh_database


async def _ensure(runtime: Runtime, settings: Settings) -> str | None:
    async with runtime.sessions() as s:
        key = await ensure_dev_key(s, settings)
        await s.commit()
        return key


async def test_dev_key_is_made_once_and_remade_after_a_reset(
    runtime: Runtime, settings: Settings, template_database_url: str, tmp_path: Path
) -> None:
    key = await _ensure(runtime, settings)
    assert key and dev_key_path(settings).read_text().strip() == key
    assert await _ensure(runtime, settings) is None
    async with runtime.sessions() as s:
        assert (await authenticate(s, token=key)).tier == "pro"

    # A wiped database makes the saved key useless: a new one is issued.
    await runtime.close()
    (tmp_path / "reset").mkdir()
    url = fresh_database(template_database_url, tmp_path / "reset")
    reset = await Runtime.start(settings.model_copy(update={"database_url": url}))
    try:
        again = await _ensure(reset, settings)
    finally:
        await reset.close()
    assert again and again != key
