"""Channels: which upstream serves a public model, in priority tiers with weights."""
