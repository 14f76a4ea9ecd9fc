"""Settings: one validated object, read from `GENGATE_*` environment variables and `.env`."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Values that must never reach production: copied from examples or left empty.
_PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev", "development"})


# A max_active_tasks this large means "no limit": it is not counted on create (counting is
# bounded by the limit, so an exact count against a huge limit would scan a key's whole backlog).
UNLIMITED_ACTIVE_TASKS = 1_000_000


class TierLimits(BaseModel):
    """What one tier of API key may do."""

    create_per_minute: int = Field(gt=0, description="jobs.createTask calls per window")
    query_per_minute: int = Field(gt=0, description="jobs.recordInfo calls per window")
    max_active_tasks: int = Field(
        gt=0,
        description=f"tasks in state waiting at once; {UNLIMITED_ACTIVE_TASKS} or more: no limit",
    )
    window_seconds: int = Field(default=60, gt=0)


def _default_tiers() -> dict[str, TierLimits]:
    return {
        "free": TierLimits(create_per_minute=10, query_per_minute=120, max_active_tasks=2),
        "standard": TierLimits(create_per_minute=60, query_per_minute=600, max_active_tasks=10),
        "pro": TierLimits(create_per_minute=600, query_per_minute=6000, max_active_tasks=100),
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GENGATE_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    env: Literal["development", "production", "test"] = "development"
    var_dir: Path = Path("var")
    database_url: str | None = None
    redis_url: str | None = None
    # Namespaces every Redis key so several deployments (or test runs) can share one server.
    redis_prefix: str = "gengate"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, gt=0, lt=65536)
    media_root: Path | None = None
    signing_secret: str | None = None
    allowed_hosts: list[str] = ["127.0.0.1", "localhost", "[::1]"]
    tiers: dict[str, TierLimits] = Field(default_factory=_default_tiers)
    default_tier: str = "standard"
    dev_credits: int = 10_000
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    db_pool_size: int = Field(default=20, gt=0)
    # How long a process trusts a resolved API key before reading it again. Revocations reach
    # every process at once through Redis; without Redis, other processes (the CLI, a second
    # API process) are only bounded by this. None: 60 s with Redis, 5 s without.
    key_cache_seconds: float | None = Field(default=None, ge=0)

    # Jobs and workers
    catalog_path: Path | None = None
    workers_in_process: bool = True
    worker_concurrency: int = Field(default=2, gt=0, le=64)
    lease_seconds: float = Field(default=30.0, gt=0)
    # The lease scan is the safety net; wake-ups make pickup immediate.
    scan_interval_seconds: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=3, gt=0)
    retry_backoff_seconds: float = Field(default=2.0, ge=0)

    # Media and outbound URLs
    public_url: str | None = None
    media_url_ttl_seconds: int = Field(default=3600, gt=0)
    allow_private_urls: bool = False
    fetch_max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    fetch_timeout_seconds: float = Field(default=15.0, gt=0)

    # Uploads (POST /api/v1/files, MCP upload_image)
    upload_max_bytes: int = Field(
        default=20 * 1024 * 1024, gt=0, description="Largest accepted upload, in bytes"
    )
    upload_max_pixels: int = Field(
        default=40_000_000,
        gt=0,
        description="Largest accepted upload in pixels (width x height): no decompression bombs",
    )
    upload_ttl_seconds: int = Field(
        default=24 * 3600,
        gt=0,
        description="How long an upload is kept; its signed URL is valid until then",
    )

    # The offline `local` provider: a fixed delay per task, and (for tests and demos)
    # prompt directives such as [[fail:provider_error]] or [[delay:2000]].
    local_delay_ms: int = Field(default=0, ge=0)
    local_fault_injection: bool = False

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        """Accept the plain URLs operators paste and pick the async driver we ship."""
        if value is None:
            return None
        for plain, driver in (
            ("postgresql://", "postgresql+psycopg://"),
            ("postgres://", "postgresql+psycopg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if value.startswith(plain):
                return driver + value[len(plain) :]
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.var_dir / 'gengate.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def resolved_media_root(self) -> Path:
        return self.media_root or self.var_dir / "media"

    @property
    def resolved_key_cache_seconds(self) -> float:
        if self.key_cache_seconds is not None:
            return self.key_cache_seconds
        return 60.0 if self.redis_url else 5.0

    def tier_limits(self, tier: str) -> TierLimits:
        return self.tiers.get(tier) or self.tiers[self.default_tier]

    def resolve_signing_secret(self) -> str:
        """Return the signing secret, creating a development one under var_dir when needed.

        Raises RuntimeError outside development when the secret is missing or a placeholder.
        """
        if self.signing_secret and self.signing_secret.strip().lower() not in _PLACEHOLDER_SECRETS:
            return self.signing_secret
        if self.env == "production":
            raise RuntimeError(
                "GENGATE_SIGNING_SECRET is missing or a placeholder; set a long random value"
            )
        path = self.var_dir / "signing-secret"
        if path.exists():
            return path.read_text().strip()
        self.var_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        path.write_text(secret)
        path.chmod(0o600)
        return secret
