"""The channels of this process: their adapters (one per channel and model), the router and
its breakers, and the URLs upstreams call back on.

Adapters are built at start, one per channel and model, so a name an adapter refuses stops
the start; only the SDKs of adapters in use are imported.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import json
import logging
import urllib.parse
from collections.abc import Iterable
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.config import Channel, ChannelError
from app.channels.router import ChannelRouter
from app.core.config import Settings
from app.core.metrics import TimedProvider
from app.db.hooks import announce_after_commit
from app.net.url_guard import UrlPolicy
from app.providers.base import Provider, ProviderUnavailable
from app.providers.inputs import InputReader

log = logging.getLogger("gengate.channels")

# The announce_after_commit topic of a canceled task an upstream holds (see cancel_soon).
UPSTREAM_CANCEL = "upstream_cancel"

# adapter -> (module, class) of its Provider; a module is imported only if a channel uses it.
_ADAPTERS = {
    "openai": ("app.providers.openai_images", "OpenAIImagesProvider"),
    "kie": ("app.providers.kie", "KieProvider"),
    "modelark": ("app.providers.modelark", "ModelArkProvider"),
    "fal": ("app.providers.fal", "FalProvider"),
    "replicate": ("app.providers.replicate", "ReplicateProvider"),
}


def cancel_upstream_after_commit(
    session: AsyncSession, *, task_id: str, channel: str | None, model: str, upstream_id: str | None
) -> None:
    """Once the transaction that ended the task (canceled, expired) commits, ask the
    upstream that holds its job to stop it: nobody will pay for its result."""
    if channel is not None and upstream_id is not None:
        payload = json.dumps([task_id, channel, model, upstream_id])
        announce_after_commit(session, UPSTREAM_CANCEL, payload)


class Channels:
    def __init__(
        self,
        channels: Iterable[Channel],
        *,
        settings: Settings,
        http: httpx.AsyncClient,
        inputs: InputReader,
        fetch_policy: UrlPolicy,
        local: Provider,
        signing_secret: str,
    ) -> None:
        self._channels = {c.name: c for c in channels}
        self._settings = settings
        self._http = http
        self._inputs = inputs
        self._fetch_policy = fetch_policy
        self._local = local
        self._secret = signing_secret.encode()
        self._providers: dict[tuple[str, str], Provider] = {}
        self._cancels: set[asyncio.Task[None]] = set()
        self.router = ChannelRouter(
            self._channels.values(),
            breaker_failures=settings.breaker_failures,
            breaker_cooldown_s=settings.breaker_cooldown_seconds,
        )
        # Built now, so an upstream model name an adapter refuses stops the start.
        for channel in self._channels.values():
            for model_id in channel.models:
                try:
                    self.provider(channel, model_id)
                except ValueError as exc:
                    raise ChannelError(
                        f"channel {channel.name!r}, model {model_id}: {exc}"
                    ) from None

    def get(self, name: str) -> Channel | None:
        return self._channels.get(name)

    def all(self) -> list[Channel]:
        return list(self._channels.values())

    def provider(self, channel: Channel, model_id: str) -> Provider:
        """The adapter that sends `model_id` to `channel` (built once, then reused), its
        calls timed and counted under the channel."""
        key = (channel.name, model_id)
        provider = self._providers.get(key)
        if provider is None:
            provider = self._build(channel, model_id)
            if channel.idempotent_submit is not None:
                provider.idempotent_submit = channel.idempotent_submit
            self._providers[key] = provider
        return TimedProvider(provider, channel.name)

    def _build(self, channel: Channel, model_id: str) -> Provider:
        if channel.adapter == "local":
            return self._local
        module, name = _ADAPTERS[channel.adapter]
        cls = getattr(importlib.import_module(module), name)
        options: dict[str, Any] = {
            "base_url": channel.base_url,
            "api_key": channel.api_key or "",
            "upstream_model": channel.upstream_model(model_id),
        }
        if channel.request_timeout_s is not None:
            options["request_timeout_s"] = channel.request_timeout_s
        if channel.adapter == "openai":
            # A synchronous upstream: it takes the images themselves, and has no callback.
            options["read_sources"] = self._inputs.read
        else:
            options.update(
                http=self._http,
                fetch_policy=self._fetch_policy,
                callback_url=self.callback_url(channel.name),
            )
            if channel.poll_interval_s is not None:
                options["poll_interval_s"] = channel.poll_interval_s
        provider: Provider = cls(**options)
        return provider

    # --- upstream callbacks -------------------------------------------------------------

    def callback_token(self, channel: str) -> str:
        """The secret part of a channel's callback URL: only we (and the upstream we gave
        the URL to) know it."""
        message = f"upstream-callback:{channel}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()[:32]

    def callback_url(self, channel: str) -> str | None:
        """Where `channel`'s upstream reports a finished job; None without a public URL
        (then polls alone find every outcome)."""
        if not self._settings.public_url:
            return None
        path = f"/api/v1/upstream/{urllib.parse.quote(channel, safe='')}/callback"
        token = self.callback_token(channel)
        return f"{self._settings.public_url.rstrip('/')}{path}?token={token}"

    def verify_callback(self, channel: str, token: str) -> bool:
        return hmac.compare_digest(token, self.callback_token(channel))

    # --- cancel ---------------------------------------------------------------------

    def cancel_soon(self, payload: str) -> None:
        """Ask the upstream to stop a job whose task was canceled (and already refunded,
        once, whatever the upstream answers). Runs after the cancel commits."""
        cancel = asyncio.get_running_loop().create_task(self._cancel(*json.loads(payload)))
        self._cancels.add(cancel)
        cancel.add_done_callback(self._cancels.discard)

    async def _cancel(
        self, task_id: str, channel_name: str, model_id: str, upstream_id: str
    ) -> None:
        channel = self.get(channel_name)
        if channel is None:
            return
        try:
            stopped = await self.provider(channel, model_id).cancel(upstream_id)
        except ProviderUnavailable as exc:
            log.warning(
                "task %s: channel %s could not cancel its job: %s", task_id, channel_name, exc
            )
            return
        except Exception:
            log.exception("task %s: canceling its job on channel %s failed", task_id, channel_name)
            return
        log.info(
            "task %s: channel %s %s its job",
            task_id,
            channel_name,
            "stopped" if stopped else "did not stop (finished, running, or no cancel)",
        )

    async def aclose(self) -> None:
        if self._cancels:
            await asyncio.wait(self._cancels, timeout=5)
        for provider in self._providers.values():
            if provider is not self._local:
                await provider.aclose()
