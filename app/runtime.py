"""The composition root: everything built once at start-up and handed down."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.catalog.catalog import Catalog, load_catalog
from app.channels.config import load_channels
from app.channels.registry import UPSTREAM_CANCEL, Channels
from app.core.config import Settings
from app.core.logging import hide_in_logs
from app.db.driver import DriverPool
from app.db.engine import SessionFactory, create_engine, create_session_factory
from app.db.hooks import Listener
from app.imagine.styles import Styles, load_imagine
from app.jobs.notify import Notifier
from app.jobs.viewcache import TASK_CHANGED, TaskViewCache
from app.keys.cache import KeyCache
from app.keys.service import KEY_REVOKED
from app.limits.service import RateLimiter
from app.media.sources import MediaSourceReader
from app.media.storage import MediaStore
from app.media.stores import open_media_store
from app.net.policy import outbound_policy
from app.providers.inputs import InputReader
from app.providers.local import LocalProvider


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    # PostgreSQL: the hot statements' own pool (see app.db.driver.statements).
    driver: DriverPool | None
    sessions: SessionFactory
    redis: Redis | None
    signing_secret: str
    catalog: Catalog
    styles: Styles
    limiter: RateLimiter
    notifier: Notifier
    keys: KeyCache
    task_views: TaskViewCache
    media_store: MediaStore
    channels: Channels
    http: httpx.AsyncClient

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        catalog: Catalog | None = None,
        styles: Styles | None = None,
        hot_paths: bool = False,
        listen: bool = True,
    ) -> Runtime:
        """Everything a process needs; `hot_paths` (the API server) adds, on PostgreSQL, the
        pool that createTask's and recordInfo's statements run on (app.db.driver). Without
        `listen` (a CLI command) the process sends signals to the others but hears none."""
        engine = create_engine(settings.resolved_database_url, pool_size=settings.db_pool_size)
        driver = None
        if hot_paths and engine.dialect.name == "postgresql" and settings.db_driver_pool_size:
            driver = await DriverPool.open(
                settings.resolved_database_url, size=settings.db_driver_pool_size
            )
            driver.follow(engine)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        # trust_env off: outbound fetches must not be routed through an ambient proxy,
        # which would defeat the address guard.
        http = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        # Signals between processes: through Redis, else PostgreSQL, else none (see notify).
        notifier = Notifier(
            redis, settings.redis_prefix, database_url=settings.resolved_database_url
        )
        keys = KeyCache(
            ttl_s=settings.resolved_key_cache_seconds,
            publish=notifier.key_revoked if notifier.transport is not None else None,
        )
        notifier.on_key_revoked = keys.drop
        task_views = TaskViewCache(ttl_s=settings.resolved_task_view_cache_seconds)
        notifier.on_task_changed = task_views.changed

        def forget_all() -> None:  # announcements were lost: nothing cached can be trusted
            keys.drop_all()
            task_views.changed_all()

        notifier.on_resync = forget_all
        if listen:
            await notifier.start()
        elif redis is not None:
            # What it sends must reach the others: fail now, not silently.
            await redis.ping()  # type: ignore[misc]
        listeners: dict[str, Listener] = {
            KEY_REVOKED: keys.revoked,
            TASK_CHANGED: notifier.task_changed,
        }
        sessions = create_session_factory(engine, listeners=listeners)
        signing_secret = settings.resolve_signing_secret()
        hide_in_logs(signing_secret)
        media_store = open_media_store(settings)
        policy = outbound_policy(settings)
        inputs = InputReader(http, policy, MediaSourceReader(sessions, media_store, signing_secret))
        catalog = catalog or load_catalog(settings.catalog_path)
        styles = styles or load_imagine(settings, catalog)
        channels = Channels(
            load_channels(settings.channels_path, model_ids=catalog.ids),
            settings=settings,
            http=http,
            inputs=inputs,
            fetch_policy=policy,
            local=LocalProvider(settings, inputs),
            signing_secret=signing_secret,
        )
        listeners[UPSTREAM_CANCEL] = channels.cancel_soon
        return cls(
            settings=settings,
            engine=engine,
            driver=driver,
            sessions=sessions,
            redis=redis,
            signing_secret=signing_secret,
            catalog=catalog,
            styles=styles,
            limiter=RateLimiter(settings),
            notifier=notifier,
            keys=keys,
            task_views=task_views,
            media_store=media_store,
            channels=channels,
            http=http,
        )

    async def close(self) -> None:
        await self.notifier.stop()
        await self.limiter.aclose()
        await self.channels.aclose()
        await self.http.aclose()
        if self.redis is not None:
            await self.redis.aclose()
        if self.driver is not None:
            await self.driver.close()
        await self.engine.dispose()
