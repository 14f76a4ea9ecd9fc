from pathlib import Path

import pytest

from app.core.config import Settings


def _settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(_env_file=None, var_dir=tmp_path, **values)  # type: ignore[call-arg]


def test_defaults_are_the_embedded_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GENGATE_DATABASE_URL", "GENGATE_REDIS_URL", "GENGATE_ENV"):
        monkeypatch.delenv(name, raising=False)
    settings = _settings(tmp_path)
    assert settings.resolved_database_url == f"sqlite+aiosqlite:///{tmp_path}/gengate.db"
    assert settings.redis_url is None and settings.is_sqlite
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.resolved_media_root == tmp_path / "media"


def test_plain_database_urls_get_the_async_driver(tmp_path: Path) -> None:
    pg = _settings(tmp_path, database_url="postgresql://u@h:5432/db")
    assert pg.resolved_database_url == "postgresql+psycopg://u@h:5432/db"
    assert _settings(tmp_path, database_url="sqlite:///x.db").resolved_database_url == (
        "sqlite+aiosqlite:///x.db"
    )


def test_development_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    first = _settings(tmp_path, env="development").resolve_signing_secret()
    again = _settings(tmp_path, env="development").resolve_signing_secret()
    assert first == again and len(first) >= 48
    assert (tmp_path / "signing-secret").stat().st_mode & 0o077 == 0


@pytest.mark.parametrize("secret", [None, "", "changeme", "secret"])
def test_production_refuses_missing_or_placeholder_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, secret: str | None
) -> None:
    monkeypatch.delenv("GENGATE_SIGNING_SECRET", raising=False)
    settings = _settings(tmp_path, env="production", signing_secret=secret)
    with pytest.raises(RuntimeError, match="GENGATE_SIGNING_SECRET"):
        settings.resolve_signing_secret()
    assert not (tmp_path / "signing-secret").exists()


def test_environment_variables_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENGATE_PORT", "9123")
    monkeypatch.setenv("GENGATE_HOST", "0.0.0.0")
    monkeypatch.setenv("GENGATE_ALLOWED_HOSTS", '["api.example.com"]')
    settings = _settings(tmp_path)
    assert (settings.host, settings.port) == ("0.0.0.0", 9123)
    assert settings.allowed_hosts == ["api.example.com"]


def test_unknown_tier_falls_back_to_default(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert settings.tier_limits("nope") == settings.tiers["standard"]
