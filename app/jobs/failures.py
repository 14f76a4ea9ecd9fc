"""The documented fail codes: what each means, whether a retry may help, who pays."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FailCode:
    code: str
    meaning: str
    retryable: bool
    # Failures the caller's own input caused keep the charge; every other one is refunded.
    refunded: bool


FAIL_CODES: dict[str, FailCode] = {
    f.code: f
    for f in (
        FailCode("invalid_input", "the input was rejected by the provider", False, False),
        FailCode("content_policy", "the prompt or image broke the content policy", False, False),
        FailCode("input_unreachable", "an input URL could not be fetched", True, True),
        FailCode("provider_error", "the provider failed", True, True),
        FailCode("provider_timeout", "the provider did not answer in time", True, True),
        FailCode("canceled", "canceled by the caller", False, True),
        FailCode("expired", "not finished before the task's deadline", True, True),
        FailCode("internal_error", "gengate failed while running the task", True, True),
    )
}


def fail_code(code: str) -> FailCode:
    """Unknown codes from a provider are treated as provider errors."""
    return FAIL_CODES.get(code) or FAIL_CODES["provider_error"]
