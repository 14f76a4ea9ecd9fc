"""Small WebP previews of result files, for clients that show images inline."""

from __future__ import annotations

import io
from pathlib import Path

MAX_SIDE = 512


def make_thumbnail(path: Path, content_type: str) -> bytes:
    """A WebP of at most 512 px a side: the image itself, or a video's first frame."""
    # Imported here: only a thumbnail request needs Pillow, and only a video needs PyAV.
    from PIL import Image

    if content_type.startswith("video/"):
        import av

        with av.open(str(path)) as container:
            frame = next(container.decode(video=0))
            image = frame.to_image()
    else:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=80)
    return out.getvalue()
