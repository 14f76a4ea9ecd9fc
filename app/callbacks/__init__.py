"""Callbacks: signed Standard Webhooks deliveries of finished tasks, from an outbox."""
