"""Offline H.264 video for the `local` provider: a prompt-seeded animation or an image push-in.

Pure and synchronous like `app.providers.local_render`, whose backdrop, caption and decoding
helpers it shares so stills and clips from one prompt look related. A soundtrack, when asked
for, comes from `app.providers.local_audio` and is muxed as AAC beside the H.264 stream.
"""

from __future__ import annotations

import io
import math
from array import array
from collections.abc import Iterator

import av
from PIL import Image, ImageDraw, ImageFilter, ImageOps

from app.providers.local_art import (
    Caption,
    make_caption,
    prompt_backdrop,
    prompt_palette,
    prompt_rng,
)
from app.providers.local_audio import SAMPLE_RATE, synthesize_soundtrack
from app.providers.local_render import MediaInfo, decode_image

MIN_VIDEO_SIDE = 16
MAX_VIDEO_SIDE = 4096
MAX_DURATION_S = 60.0
MAX_FPS = 60
PUSH_IN_ZOOM = 1.15
_VIDEO_MIME = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime"}


def render_video(
    prompt: str,
    *,
    width: int,
    height: int,
    duration_s: float,
    fps: int = 24,
    source: bytes | None = None,
    audio: bool = False,
) -> bytes:
    """H.264 MP4 of that size and duration, pushing in on `source`; ValueError on bad input.

    With `audio`, the file also carries an AAC track of a prompt-seeded tune lasting exactly
    as long as the video; without it the file has no audio stream at all.
    """
    _check_video_args(width, height, duration_s, fps)
    frame_count = max(1, round(duration_s * fps))
    frames = (
        _push_in_frames(decode_image(source), prompt, width, height, frame_count)
        if source is not None
        else _animated_frames(prompt, width, height, frame_count, fps)
    )
    # The track covers the frames as shown (frame_count / fps), which is what players report.
    soundtrack = synthesize_soundtrack(prompt, frame_count / fps) if audio else None
    return _encode_mp4(frames, width, height, fps, make_caption(prompt, width, height), soundtrack)


def _check_video_args(width: int, height: int, duration_s: float, fps: int) -> None:
    for name, side in (("width", width), ("height", height)):
        if not MIN_VIDEO_SIDE <= side <= MAX_VIDEO_SIDE:
            raise ValueError(
                f"video {name} {side} is out of range {MIN_VIDEO_SIDE}-{MAX_VIDEO_SIDE}"
            )
        if side % 2:
            # 4:2:0 chroma is subsampled 2x2, so H.264 cannot represent an odd side.
            raise ValueError(f"video {name} {side} must be even")
    if not (math.isfinite(duration_s) and 0 < duration_s <= MAX_DURATION_S):
        raise ValueError(f"video duration {duration_s} s is out of range (0, {MAX_DURATION_S}]")
    if not 1 <= fps <= MAX_FPS:
        raise ValueError(f"video fps {fps} is out of range 1-{MAX_FPS}")


def _animated_frames(
    prompt: str, width: int, height: int, frame_count: int, fps: int
) -> Iterator[Image.Image]:
    # The backdrop is drawn once, wider than the frame, and panned by cropping: per-frame cost
    # is one crop plus a few small pastes, which keeps 720p well under the encoder's time.
    pan = max(2, width // 4)
    backdrop = prompt_backdrop(prompt, width + pan, height)
    rng = prompt_rng(prompt, "video")
    palette = prompt_palette(rng)
    leftward = rng.random() < 0.5
    orbs = []
    for colour in palette[:2]:
        radius = round(min(width, height) * rng.uniform(0.07, 0.13))
        mask = _soft_disc(radius)
        glow = tuple(min(255, channel + 90) for channel in colour)
        freq = rng.uniform(0.15, 0.35)
        orbs.append((mask, glow, freq, freq * rng.uniform(1.3, 2.0), rng.uniform(0, math.tau)))
    for index in range(frame_count):
        progress = index / max(1, frame_count - 1)
        offset = round(pan * (1 - progress if leftward else progress))
        frame = backdrop.crop((offset, 0, offset + width, height))
        seconds = index / fps
        for mask, glow, freq_x, freq_y, phase in orbs:
            # A Lissajous path keeps each orb on screen and moving at every point of the clip.
            x = (width - mask.width) * (0.5 + 0.45 * math.sin(math.tau * freq_x * seconds + phase))
            y = (height - mask.height) * (0.5 + 0.45 * math.sin(math.tau * freq_y * seconds))
            frame.paste(glow, (round(x), round(y)), mask)
        yield frame


def _soft_disc(radius: int) -> Image.Image:
    blur = max(1, radius // 6)
    size = 2 * (radius + 2 * blur)
    mask = Image.new("L", (size, size), 0)
    centre = size / 2
    ImageDraw.Draw(mask).ellipse(
        (centre - radius, centre - radius, centre + radius, centre + radius), fill=230
    )
    return mask.filter(ImageFilter.GaussianBlur(blur))


def _push_in_frames(
    image: Image.Image, prompt: str, width: int, height: int, frame_count: int
) -> Iterator[Image.Image]:
    # Fitting once at the final zoom means every frame is a downscale or 1:1, never a blurry
    # upscale, and each frame is a single box-resize rather than crop + resize.
    big = ImageOps.fit(
        image,
        (math.ceil(width * PUSH_IN_ZOOM), math.ceil(height * PUSH_IN_ZOOM)),
        Image.Resampling.LANCZOS,
    )
    rng = prompt_rng(prompt, "push-in")
    aim_x, aim_y = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6)
    for index in range(frame_count):
        progress = index / max(1, frame_count - 1)
        zoom = 1 + (PUSH_IN_ZOOM - 1) * progress
        box_w, box_h = big.width / zoom, big.height / zoom
        left = (big.width - box_w) * (0.5 + (aim_x - 0.5) * progress * 2)
        top = (big.height - box_h) * (0.5 + (aim_y - 0.5) * progress * 2)
        box = (left, top, left + box_w, top + box_h)
        yield big.resize((width, height), Image.Resampling.BILINEAR, box=box)


def _encode_mp4(
    frames: Iterator[Image.Image],
    width: int,
    height: int,
    fps: int,
    caption: Caption | None,
    soundtrack: array[float] | None,
) -> bytes:
    buffer = io.BytesIO()
    # No "+faststart": FFmpeg implements it by reopening the output file, which a BytesIO
    # cannot do; players still seek fine with the index at the end when served with ranges.
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # ultrafast keeps 5 s of 720p to about a second on two cores; crf 23 is x264's default.
        stream.options = {"preset": "ultrafast", "crf": "23"}
        # Every stream must exist before the first packet is muxed (that writes the header).
        audio = container.add_stream("aac", rate=SAMPLE_RATE, layout="mono") if soundtrack else None
        if audio is not None and soundtrack is not None:
            container.mux(audio.encode(_audio_frame(soundtrack)))
            container.mux(audio.encode(None))
        for index, image in enumerate(frames):
            if caption is not None:
                caption.apply(image)
            frame = av.VideoFrame.from_image(image)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


def _audio_frame(soundtrack: array[float]) -> av.AudioFrame:
    # One frame for the whole clip: PyAV cuts it into the encoder's 1024-sample frames and the
    # muxer interleaves the packets with the video's by timestamp. The MP4 edit list hides
    # the encoder's priming and padding, so the track lasts exactly len(soundtrack) samples.
    frame = av.AudioFrame(format="flt", layout="mono", samples=len(soundtrack))
    frame.sample_rate = SAMPLE_RATE
    frame.pts = 0
    frame.planes[0].update(soundtrack.tobytes())
    return frame


def probe_video(data: bytes) -> MediaInfo:
    """Size, duration and container of video bytes; ValueError if unreadable or has no video."""
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ValueError("media has no video stream")
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            else:
                duration = (container.duration or 0) / av.time_base
            fmt = _container_format(container.format.name, data)
            return MediaInfo(
                content_type=_VIDEO_MIME.get(fmt, "application/octet-stream"),
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                duration_s=duration,
                format=fmt,
                has_audio=bool(container.streams.audio),
            )
    except (av.FFmpegError, OSError) as exc:
        raise ValueError("media could not be decoded") from exc


def _container_format(demuxer: str, data: bytes) -> str:
    if "webm" in demuxer:
        return "webm"
    if "mp4" in demuxer:
        # One FFmpeg demuxer reads both; the ftyp major brand says which one this is.
        return "mov" if data[8:12] == b"qt  " else "mp4"
    return demuxer.split(",")[0]
