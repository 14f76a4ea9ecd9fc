"""Settings: one validated object, read from `GENGATE_*` environment variables and `.env`."""

from __future__ import annotations

import ipaddress
import re
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_HOST_NAME = re.compile(
    r"(?i)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*\.?"
)
# Seconds between callback attempts: 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h.
DEFAULT_CALLBACK_SCHEDULE = (5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
# Values that must never reach production: copied from examples or left empty.
_PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev", "development"})


# Retention never goes below a day: X-Request-Id idempotency keys live at least 24 h.
MIN_RETENTION_DAYS = 1

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
    window_seconds: int = Field(default=60, gt=0, description="seconds in a rate-limit window")


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

    # Every field has a description: README's configuration table is generated from them
    # (app/core/settings_doc.py), and a test keeps the two in step.
    env: Literal["development", "production", "test"] = Field(
        default="development",
        description="`development` (what `make run` uses) migrates the database and creates a "
        "dev account and key on start; `production` refuses to start without a real "
        "`GENGATE_SIGNING_SECRET`; `test` is for the test suite",
    )
    var_dir: Path = Field(
        default=Path("var"),
        description="Where the embedded mode keeps its state: the SQLite database, media, the "
        "generated signing secret and the dev API key",
    )
    database_url: str | None = Field(
        default=None,
        description="e.g. `postgresql://user@host:5432/gengate`; none: the SQLite file "
        "`gengate.db` under `GENGATE_VAR_DIR`",
    )
    redis_url: str | None = Field(
        default=None,
        description="e.g. `redis://127.0.0.1:6379/0`: rate limits, wake-ups and key "
        "revocations shared by every process; none: rate limits kept inside each process, "
        "wake-ups and revocations through PostgreSQL NOTIFY (on SQLite, inside the process)",
    )
    redis_prefix: str = Field(
        default="gengate",
        description="Prefix of every Redis key and channel, so several deployments (or test "
        "runs) can share one Redis",
    )
    host: str = Field(default="127.0.0.1", description="Where `gengate serve` listens")
    port: int = Field(default=8000, gt=0, lt=65536, description="Where `gengate serve` listens")
    media_root: Path | None = Field(
        default=None,
        description="Where result files are stored; none: `media` under `GENGATE_VAR_DIR`",
    )
    signing_secret: str | None = Field(
        default=None,
        description="Signs media URLs. Required in production; in development a random one "
        "is generated into `GENGATE_VAR_DIR/signing-secret`",
    )
    allowed_hosts: list[str] = Field(
        default=["127.0.0.1", "localhost", "[::1]"],
        description="Host headers the MCP endpoint accepts (JSON list; against DNS "
        "rebinding): add your public host name when serving beyond this machine",
    )
    tiers: dict[str, TierLimits] = Field(
        default_factory=_default_tiers,
        description="Rate-limit tiers, JSON `{name: limits}`: the defaults are in the tiers "
        "table below",
    )
    default_tier: str = Field(
        default="standard",
        description="Tier of a key made by `gengate keys create` without `--tier`; also the "
        "limits of a key whose tier is no longer in `GENGATE_TIERS`",
    )
    dev_credits: int = Field(
        default=10_000,
        description="Credits of the development account that the first `make run` creates",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level of the server and the workers"
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="`text`: readable lines; `json`: one JSON object per line, with the "
        "correlation id and task id of the work it is about (see Logs under Operating)",
    )
    opentelemetry: bool = Field(
        default=False,
        description="FastAPI's own OpenTelemetry spans, metrics and logs, through the "
        "OpenTelemetry providers configured in the process. Off: no request looks for them "
        "(a check that costs 3% of a read)",
    )
    metrics_token: str | None = Field(
        default=None,
        description="Bearer token that `GET /metrics` (and a worker's metrics port) asks "
        "for; none: metrics are answered only to loopback clients that did not come "
        "through a proxy (they include business figures: tasks, credits)",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        gt=0,
        lt=65536,
        description="Where `gengate worker` serves `GET /metrics` (at `GENGATE_HOST`); none: "
        "it serves none",
    )
    db_pool_size: int = Field(
        default=20,
        gt=0,
        description="Database connections per process (PostgreSQL); requests wait for a free one",
    )
    db_driver_pool_size: int = Field(
        default=10,
        ge=0,
        description="PostgreSQL: more connections per process, for the statements every request "
        "runs (recordInfo's reads, createTask's create) on psycopg's own pool as prepared "
        "statements, beside the engine's pool. 0: those run on the engine's pool too (slower; "
        "needed behind a PgBouncer in transaction mode older than 1.21)",
    )
    key_cache_seconds: float | None = Field(
        default=None,
        ge=0,
        description="How long a process trusts a resolved API key before reading it again. "
        "Revocations reach every process at once through Redis, or without Redis through "
        "PostgreSQL NOTIFY; on SQLite, other processes (the CLI, a second API process) are "
        "bounded only by this. none: 60 with Redis, 5 without",
    )
    task_view_cache_seconds: float | None = Field(
        default=None,
        ge=0,
        description="How long a process may answer recordInfo for an unchanged task from "
        "memory. Changes reach every process at once through Redis or PostgreSQL NOTIFY (or "
        "within the process); this bounds what a change made elsewhere on SQLite can leave "
        "unseen. 0: off. "
        "none: 30 with Redis, 2 without",
    )

    # Jobs and workers
    catalog_path: Path | None = Field(
        default=None,
        description="A model catalog to use instead of the packaged `app/catalog/models.toml`",
    )
    workers_in_process: bool = Field(
        default=True,
        description="Run workers inside the API process; `false` on the API replicas of a "
        "scaled-out deployment, which then runs `gengate worker` processes",
    )
    worker_concurrency: int = Field(
        default=2, gt=0, le=64, description="Tasks one process's workers run at once"
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="How long a claimed task stays with a worker that stopped renewing it; "
        "then another worker takes it over",
    )
    shutdown_grace_seconds: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="On SIGTERM/SIGINT: how long open requests and running tasks get to "
        "finish; tasks still running then are given back to the queue at once for another "
        "worker",
    )
    scan_interval_seconds: float = Field(
        default=1.0,
        gt=0,
        description="How often workers look for due work; wake-ups make pickup immediate, the "
        "scan is the safety net",
    )
    max_attempts: int = Field(
        default=3,
        gt=0,
        description="Tries of a task whose provider is unavailable before it fails with "
        "`provider_error` (and is refunded)",
    )
    retry_backoff_seconds: float = Field(
        default=2.0,
        ge=0,
        description="Wait before retrying an unavailable provider; doubles with every attempt",
    )

    # Channels: which upstream serves each model
    channels_path: Path | None = Field(
        default=None,
        description="The channel file (TOML, one `[[channel]]` per upstream route); none: every "
        "model runs on the offline `local` renderer",
    )
    poll_concurrency: int = Field(
        default=100,
        gt=0,
        le=2000,
        description="Upstream polls one process runs at once (beside `worker_concurrency` "
        "submissions)",
    )
    breaker_failures: int = Field(
        default=5,
        gt=0,
        le=1000,
        description="Consecutive upstream failures that open a channel's circuit breaker",
    )
    breaker_cooldown_seconds: float = Field(
        default=30.0,
        gt=0,
        le=86400,
        description="How long an open breaker keeps a channel out before one trial request",
    )

    # The imagine surface (/v1/imagine, /v1/reimagine)
    styles_path: Path | None = Field(
        default=None,
        description="A style catalog to use instead of the packaged `app/imagine/styles.toml`",
    )
    imagine_text_model: str = Field(
        default="gpt-image-2-text-to-image",
        description="The model /v1/imagine uses when a request names none and gives no `reference`",
    )
    imagine_image_model: str = Field(
        default="gpt-image-2-image-to-image",
        description="The model /v1/imagine uses when a request names none and gives a "
        "`reference`; also what a `variation` runs, unless the source's model takes images",
    )
    imagine_upscale_model: str = Field(
        default="image-upscale",
        description="The model a /v1/reimagine `upscale` of an image runs",
    )
    imagine_video_upscale_model: str | None = Field(
        default=None,
        description="The model a /v1/reimagine `upscale` of a video runs; none: upscaling a "
        "video is refused",
    )

    # Media and outbound URLs
    public_url: str | None = Field(
        default=None,
        description="Base of the signed media URLs, e.g. `https://gen.example.com`; none: the "
        "request's own base URL",
    )
    media_url_ttl_seconds: int = Field(
        default=3600,
        gt=0,
        description="How long a signed result URL stays valid; reading the task again mints "
        "fresh ones",
    )
    media_backend: Literal["local", "s3"] = Field(
        default="local",
        description="Where result files and uploads are stored: `local` (under "
        "`GENGATE_MEDIA_ROOT`) or `s3` (an S3-compatible bucket, `GENGATE_S3_*`; credentials "
        "from the standard `AWS_*` environment variables). URLs are gengate's own either way",
    )
    s3_bucket: str | None = Field(
        default=None, description="The bucket of the `s3` media backend (required for it)"
    )
    s3_endpoint_url: str | None = Field(
        default=None,
        description="S3-compatible endpoint, e.g. `http://127.0.0.1:9000` (MinIO; `http://` "
        "is allowed only when named here); none: AWS",
    )
    s3_region: str | None = Field(
        default=None,
        description="Region of the bucket; none: `AWS_REGION` / `AWS_DEFAULT_REGION`, else "
        "`us-east-1`",
    )
    s3_prefix: str | None = Field(
        default=None,
        description="Key prefix inside the bucket, e.g. `gengate`: a file's key is "
        "`<prefix>/<its relative path>`, the path the `local` backend uses under its root; "
        "none: keys start at the bucket's root",
    )
    allow_private_urls: bool = Field(
        default=False,
        description="Let input URLs and `callBackUrl` point at loopback, private and "
        "link-local addresses: for trying gengate with local files, never in production",
    )
    fetch_max_bytes: int = Field(
        default=20 * 1024 * 1024,
        gt=0,
        description="Largest input file gengate downloads, in bytes (20 MiB)",
    )
    fetch_timeout_seconds: float = Field(
        default=15.0, gt=0, description="Time limit for downloading one input file"
    )
    url_check_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        description="How long a create may spend resolving its URLs' host names to refuse "
        "private addresses up front; names not resolved in time are checked at fetch",
    )

    outbound_allowlist: list[str] = Field(
        default_factory=list,
        description="JSON list of host names and CIDRs that input fetches and callbacks may "
        'reach even though they are private (e.g. `["127.0.0.1/32", "hooks.internal"]`); '
        "finer than `GENGATE_ALLOW_PRIVATE_URLS`",
    )

    # Callbacks (Standard Webhooks)
    callback_retry_schedule: list[float] = Field(
        default_factory=lambda: [float(wait) for wait in DEFAULT_CALLBACK_SCHEDULE],
        description="JSON list of seconds between callback attempts (each with up to 10% "
        "jitter); its length + 1 attempts in all. The default spans about three days",
    )
    callback_timeout_seconds: float = Field(
        default=15.0, gt=0, le=300, description="A callback attempt succeeds on a 2xx within this"
    )
    callback_concurrency: int = Field(
        default=100, gt=0, le=10_000, description="Callback deliveries one worker sends at once"
    )
    callback_per_host_concurrency: int = Field(
        default=50,
        gt=0,
        le=10_000,
        description="Callback deliveries one worker sends to one host at once, so a slow "
        "receiver cannot hold every slot",
    )
    callback_url_ttl_seconds: int = Field(
        default=7 * 24 * 3600,
        gt=0,
        description="Validity of the result URLs in a callback body (at least 24 h: the body "
        "is fixed at the first attempt and retries run for about three days)",
    )

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

    # Retention (see Retention under Operating)
    retention_days: int | None = Field(
        default=None,
        description="Finished tasks older than this many days are deleted with their result "
        "files and callback deliveries (never the credit ledger), as are X-Request-Id keys; "
        f"at least {MIN_RETENTION_DAYS}. none: everything is kept; deleting customer data is "
        "the operator's choice",
    )
    prune_interval_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="How often one process of the deployment prunes, when "
        "`GENGATE_RETENTION_DAYS` is set",
    )
    prune_batch_size: int = Field(
        default=200,
        gt=0,
        le=10_000,
        description="Tasks deleted per transaction while pruning, so a backlog never holds "
        "long locks",
    )

    # OAuth for MCP clients
    oauth_access_token_seconds: int = Field(
        default=3600,
        gt=0,
        le=86400,
        description="How long an OAuth access token for the MCP endpoint lives; clients then "
        "use their refresh token",
    )
    oauth_refresh_token_days: int = Field(
        default=30,
        gt=0,
        le=365,
        description="How long an unused OAuth refresh token stays valid; each refresh issues "
        "a new one and retires the old",
    )

    # The web console
    console_session_hours: int = Field(
        default=12,
        gt=0,
        le=720,
        description="How long a console sign-in lasts; revoking the key that signed in ends "
        "its sessions at once",
    )

    # The offline `local` provider
    local_delay_ms: int = Field(
        default=0,
        ge=0,
        description="Milliseconds the offline `local` provider waits per task (to watch a "
        "task queue and generate)",
    )
    local_fault_injection: bool = Field(
        default=False,
        description="Honour the prompt directives `[[fail:provider_error]]` and "
        "`[[delay:2000]]` in the `local` provider, for demos and tests",
    )

    @field_validator("callback_retry_schedule")
    @classmethod
    def _schedule(cls, value: list[float]) -> list[float]:
        if len(value) > 50 or any(not 0 <= wait <= 30 * 86400 for wait in value):
            raise ValueError("at most 50 waits, each from 0 to 2592000 seconds")
        return value

    @field_validator("retention_days")
    @classmethod
    def _retention(cls, value: int | None) -> int | None:
        if value is not None and value < MIN_RETENTION_DAYS:
            raise ValueError(
                f"GENGATE_RETENTION_DAYS must be at least {MIN_RETENTION_DAYS}: X-Request-Id "
                "idempotency keys are kept at least 24 h"
            )
        return value

    @field_validator("outbound_allowlist")
    @classmethod
    def _allowlist(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                if not _HOST_NAME.fullmatch(entry):
                    raise ValueError(f"{entry!r} is neither a CIDR nor a host name") from None
        return [entry.lower().rstrip(".") for entry in value]

    @model_validator(mode="after")
    def _s3_backend(self) -> Settings:
        """Checked at start: the S3 client itself is built only at the first file."""
        if self.media_backend != "s3":
            return self
        if not self.s3_bucket:
            raise ValueError("GENGATE_S3_BUCKET is required when GENGATE_MEDIA_BACKEND=s3")
        if self.s3_endpoint_url and not self.s3_endpoint_url.startswith(("http://", "https://")):
            raise ValueError("GENGATE_S3_ENDPOINT_URL must be an http:// or https:// URL")
        return self

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

    @property
    def resolved_task_view_cache_seconds(self) -> float:
        if self.task_view_cache_seconds is not None:
            return self.task_view_cache_seconds
        return 30.0 if self.redis_url else 2.0

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
