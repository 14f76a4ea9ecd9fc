"""Small WebP previews of result files, for clients that show images inline."""

from __future__ import annotations

import io

from app.media.storage import MediaStore

MAX_SIDE = 512


def make_thumbnail(store: MediaStore, path: str, content_type: str) -> bytes:
    """A WebP of at most 512 px a side of a stored file: the image, or a video's first frame.

    Blocking (reads the store, decodes): run it in a thread. The file is read whole, from
    disk or the bucket alike; results are bounded by what a provider may return.
    """
    # Imported here: only a thumbnail request needs Pillow, and only a video needs PyAV.
    from PIL import Image

    data = io.BytesIO(store.read_bytes(path))
    if content_type.startswith("video/"):
        import av

        with av.open(data, mode="r") as container:
            frame = next(container.decode(video=0))
            image = frame.to_image()
    else:
        with Image.open(data) as opened:
            image = opened.convert("RGB")
    image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    image.save(out, format="WEBP", quality=80)
    return out.getvalue()
