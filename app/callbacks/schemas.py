"""Callback shapes: what a caller sees of deliveries, attempts and the signing secret."""

from __future__ import annotations

from pydantic import Field

from app.callbacks.models import CallbackAttempt, CallbackDelivery, WebhookSecret
from app.core.schema import PublicModel


class CallbackAttemptRead(PublicModel):
    number: int
    time: int = Field(description="when the attempt started, ms since the epoch")
    status_code: int | None = Field(description="the receiver's HTTP status, if it answered")
    error: str | None = Field(description="what went wrong when no status tells it")
    latency_ms: int | None
    response: str | None = Field(description="the first 1 KB of the receiver's answer")

    @classmethod
    def of(cls, attempt: CallbackAttempt) -> CallbackAttemptRead:
        return cls(
            number=attempt.number,
            time=attempt.started_at,
            status_code=attempt.status_code,
            error=attempt.error,
            latency_ms=attempt.latency_ms,
            response=attempt.response_excerpt,
        )


class CallbackDeliveryRead(PublicModel):
    id: str = Field(description="the webhook-id header of every attempt")
    task_id: str
    url: str
    state: str = Field(description="pending, delivered or failed")
    attempts: list[CallbackAttemptRead]
    next_attempt_time: int | None = Field(description="while pending: when it is tried next")
    create_time: int
    complete_time: int | None

    @classmethod
    def of(
        cls, delivery: CallbackDelivery, attempts: list[CallbackAttemptRead]
    ) -> CallbackDeliveryRead:
        pending = delivery.status == "pending"
        return cls(
            id=delivery.id,
            task_id=delivery.task_id,
            url=delivery.url,
            state=delivery.status,
            attempts=attempts,
            next_attempt_time=delivery.due_at if pending else None,
            create_time=delivery.created_at,
            complete_time=delivery.completed_at,
        )


class CallbackList(PublicModel):
    task_id: str
    callback_state: str
    deliveries: list[CallbackDeliveryRead]


class DeliveryPage(PublicModel):
    items: list[CallbackDeliveryRead]
    has_more: bool
    next_cursor: str | None = Field(description="pass as cursor for the next (older) page")


class WebhookSecretRead(PublicModel):
    secret: str = Field(description="whsec_...: verify callbacks with it (Standard Webhooks)")
    previous_secret_valid_until: int | None = Field(
        description="after a roll, callbacks are signed with the old secret too until then"
    )
    create_time: int
    roll_time: int | None

    @classmethod
    def of(cls, row: WebhookSecret, *, now: int) -> WebhookSecretRead:
        overlap = row.previous_until if row.previous_until and now < row.previous_until else None
        return cls(
            secret=row.secret,
            previous_secret_valid_until=overlap,
            create_time=row.created_at,
            roll_time=row.rolled_at,
        )
