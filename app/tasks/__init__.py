"""The /v1 tasks surface (seed 004): task history, one task, its assets."""
