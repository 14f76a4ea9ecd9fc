from typing import Any


def t2i(prompt: str = "a red bicycle", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-image-2-text-to-image", "input": {"prompt": prompt, **extra}}
