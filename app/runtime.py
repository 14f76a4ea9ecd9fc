"""The composition root: everything built once at start-up and handed down."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core.config import Settings
from app.db.engine import SessionFactory, create_engine, create_session_factory


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionFactory
    redis: Redis | None
    signing_secret: str

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        engine = create_engine(settings.resolved_database_url, pool_size=settings.db_pool_size)
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        return cls(
            settings=settings,
            engine=engine,
            sessions=create_session_factory(engine),
            redis=redis,
            signing_secret=settings.resolve_signing_secret(),
        )

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await self.engine.dispose()
