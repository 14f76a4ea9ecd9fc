"""The channel file (`GENGATE_CHANNELS_PATH`): one `[[channel]]` table per upstream route.

It is validated once at start, with errors naming the file, the channel and the problem.
Credentials are never in the file: `api_key_env` names the environment variable that holds
one, and the key is read from the environment here and kept out of every message and log.
Without a file every model runs on the offline `local` renderer.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from standardwebhooks import Webhook

from app.core.logging import hide_in_logs
from app.core.tomlfile import parse_entries

ADAPTERS = ("local", "openai", "kie", "modelark", "fal", "replicate")
_KEYS = frozenset(
    {"name", "adapter", "base_url", "api_key_env", "models", "upstream_models"}
    | {"priority", "weight", "params", "idempotent_submit", "webhook_secret_env"}
    | {"poll_interval_seconds", "request_timeout_seconds"}
)
_REQUIRED = ("name", "adapter", "models")


class ChannelError(ValueError):
    """The channel file is missing, malformed or inconsistent with the catalog."""


@dataclass(frozen=True)
class Channel:
    name: str
    adapter: str
    models: tuple[str, ...]
    base_url: str | None = None
    api_key_env: str | None = None
    upstream_models: Mapping[str, str] = field(default_factory=dict)
    priority: int = 0
    weight: int = 1
    # Our input name = the upstream's name for it (for generic upstreams: fal, Replicate).
    params: Mapping[str, str] = field(default_factory=dict)
    # The operator vouches that the upstream dedupes a resubmit by our task id (a gengate
    # upstream does, by X-Request-Id); None: the adapter's own answer.
    idempotent_submit: bool | None = None
    poll_interval_s: float | None = None
    request_timeout_s: float | None = None
    # Read from the environment at load; repr=False keeps them out of every printed channel.
    api_key: str | None = field(default=None, repr=False, compare=False)
    webhook_secret: str | None = field(default=None, repr=False, compare=False)

    def upstream_model(self, model_id: str) -> str:
        """The upstream's name for a public model (the same name unless mapped)."""
        return self.upstream_models.get(model_id, model_id)

    def upstream_input(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A task's input with the channel's renames applied."""
        return {self.params.get(name, name): value for name, value in params.items()}


def local_channels(model_ids: Iterable[str]) -> list[Channel]:
    """What runs without a channel file: every model on the offline renderer."""
    return [Channel(name="local", adapter="local", models=tuple(model_ids))]


def load_channels(
    path: Path | None, *, model_ids: Iterable[str], environ: Mapping[str, str] | None = None
) -> list[Channel]:
    """The channels of `path` (None: the local default). Raises ChannelError."""
    known = list(model_ids)
    if path is None:
        return local_channels(known)
    env = os.environ if environ is None else environ
    channels = parse_entries(
        path,
        table="channel",
        id_key="name",
        document="the channel file",
        error=ChannelError,
        parse=lambda entry: _parse(entry, known, env),
    )
    unserved = [m for m in known if not any(m in c.models for c in channels)]
    if unserved:
        raise ChannelError(
            f"{path}: no channel serves {', '.join(unserved)}; add them to a channel's models "
            '(a channel with adapter = "local" renders offline)'
        )
    return channels


def _parse(entry: Any, known: list[str], env: Mapping[str, str]) -> Channel:
    if not isinstance(entry, dict):
        raise ValueError("must be a table")
    unknown = sorted(set(entry) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_KEYS))}")
    for key in _REQUIRED:
        if key not in entry:
            raise ValueError(f"{key} is required")
    name, adapter = _text(entry, "name"), _text(entry, "adapter")
    if adapter not in ADAPTERS:
        raise ValueError(f"adapter {adapter!r} is not one of {', '.join(ADAPTERS)}")
    models = entry["models"]
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ValueError("models must be a non-empty list of model ids")
    for model in models:
        if model not in known:
            raise ValueError(f"model {model!r} is not in the catalog")
    upstream = entry.get("upstream_models", {})
    if not isinstance(upstream, dict) or not all(isinstance(v, str) for v in upstream.values()):
        raise ValueError("upstream_models must be a table of public id = upstream name")
    for model in upstream:
        if model not in models:
            raise ValueError(f"upstream_models names {model!r}, which this channel does not serve")
    base_url = entry.get("base_url")
    if adapter != "local" and not (isinstance(base_url, str) and base_url.startswith("http")):
        raise ValueError("base_url must be the upstream's http(s) URL")
    params = entry.get("params", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) and v for v in params.values()):
        raise ValueError("params must be a table of our input name = the upstream's name")
    idempotent = entry.get("idempotent_submit")
    if idempotent is not None and not isinstance(idempotent, bool):
        raise ValueError("idempotent_submit must be true or false")
    if idempotent is not None and adapter != "kie":
        # Only a kie-style upstream can dedupe by our id (X-Request-Id); the others take no
        # client id at all, so vouching for them would let a crash pay the upstream twice.
        raise ValueError("idempotent_submit is only for kie channels")
    return Channel(
        name=name,
        adapter=adapter,
        models=tuple(models),
        base_url=base_url,
        api_key_env=entry.get("api_key_env"),
        upstream_models=dict(upstream),
        priority=_integer(entry, "priority", 0, low=-1000),
        weight=_integer(entry, "weight", 1, low=1),
        params=dict(params),
        idempotent_submit=idempotent,
        poll_interval_s=_seconds(entry, "poll_interval_seconds"),
        request_timeout_s=_seconds(entry, "request_timeout_seconds"),
        api_key=_api_key(entry, adapter, env),
        webhook_secret=_webhook_secret(entry, env),
    )


def _api_key(entry: Mapping[str, Any], adapter: str, env: Mapping[str, str]) -> str | None:
    if entry.get("api_key_env") is None and adapter != "local":
        raise ValueError("api_key_env must name the environment variable holding the key")
    return _secret(entry, "api_key_env", env)


def _webhook_secret(entry: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    secret = _secret(entry, "webhook_secret_env", env)
    if secret is not None:
        try:
            Webhook(secret)
        except Exception:
            variable = entry["webhook_secret_env"]
            raise ValueError(
                f"the environment variable {variable} (webhook_secret_env) must hold a "
                "Standard Webhooks secret (whsec_ followed by base64)"
            ) from None
    return secret


def _secret(entry: Mapping[str, Any], key: str, env: Mapping[str, str]) -> str | None:
    """The value of the environment variable `entry[key]` names (None if not named)."""
    variable = entry.get(key)
    if variable is None:
        return None
    if not isinstance(variable, str) or not variable:
        raise ValueError(f"{key} must be the name of an environment variable")
    value = env.get(variable)
    if not value:
        raise ValueError(f"the environment variable {variable} ({key}) is not set")
    hide_in_logs(value)
    return value


def _seconds(entry: Mapping[str, Any], key: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
        raise ValueError(f"{key} must be a number of seconds above 0, at most 3600")
    return float(value)


def _text(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string")
    return value


def _integer(entry: Mapping[str, Any], key: str, default: int, *, low: int) -> int:
    value = entry.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 1_000_000:
        raise ValueError(f"{key} must be an integer from {low} to 1000000")
    return value
