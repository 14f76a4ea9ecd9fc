"""Offline soundtrack for the `local` provider: a short prompt-seeded tune, as mono PCM.

Pure and synchronous like the other `local_*` renderers. The melody (key, mode, tempo and
notes) comes from a hash of the prompt, so the same prompt always sounds the same and two
prompts almost never do. Plain `math` over a sample list keeps it dependency-free (no NumPy):
about 20 ms of CPU per second of audio, a tenth of what the matching H.264 frames cost.
"""

from __future__ import annotations

import math
from array import array

from app.providers.local_art import prompt_rng

SAMPLE_RATE = 48_000
# Semitone steps of a pentatonic scale: no two notes clash, whichever the hash picks.
_SCALES = ((0, 2, 4, 7, 9), (0, 3, 5, 7, 10))
_ATTACK_S = 0.012
_EDGE_FADE_S = 0.02
_PEAK = 0.5


def synthesize_soundtrack(
    prompt: str, duration_s: float, *, sample_rate: int = SAMPLE_RATE
) -> array[float]:
    """`duration_s` of mono float PCM in [-1, 1] at `sample_rate`; ValueError on a bad length."""
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"soundtrack duration {duration_s} s must be positive")
    if sample_rate < 8000:
        raise ValueError(f"sample rate {sample_rate} Hz is below 8000")
    rng = prompt_rng(prompt, "soundtrack")
    root = rng.randint(57, 69)  # MIDI A3..A4: bright enough for laptop speakers
    scale = rng.choice(_SCALES)
    beat_s = rng.uniform(0.22, 0.4)
    decay = rng.uniform(2.5, 6.0)
    total = max(1, round(duration_s * sample_rate))
    samples = array("f", bytes(4 * total))
    start, degree, bar = 0, rng.randrange(len(scale)), 0
    while start < total:
        length = min(total - start, round(beat_s * rng.choice((1, 1, 2)) * sample_rate))
        # A random walk over the scale sounds like a tune; uniform jumps sound like noise.
        degree = max(-3, min(len(scale) + 2, degree + rng.choice((-2, -1, -1, 1, 1, 2))))
        octave, step = divmod(degree, len(scale))
        melody_hz = _hz(root + 12 * octave + scale[step])
        bass_hz = _hz(root - 12 + (0, 7, 5, 0)[bar // 4 % 4])
        samples[start : start + length] = _note(
            start, length, melody_hz, bass_hz, decay, sample_rate
        )
        start += length
        bar += 1
    _fade_edges(samples, round(_EDGE_FADE_S * sample_rate))
    return samples


def _hz(midi_note: int) -> float:
    return 440.0 * 2 ** ((midi_note - 69) / 12)


def _note(
    start: int, length: int, melody_hz: float, bass_hz: float, decay: float, sample_rate: int
) -> array[float]:
    sin, exp = math.sin, math.exp
    w1 = math.tau * melody_hz / sample_rate
    w2 = 2 * w1
    # The bass runs on absolute time so its phase is continuous across note boundaries.
    wb = math.tau * bass_hz / sample_rate
    fall = decay / sample_rate
    attack = max(1, round(_ATTACK_S * sample_rate))
    lead, harmonic, low = 0.55 * _PEAK, 0.18 * _PEAK, 0.27 * _PEAK
    return array(
        "f",
        [
            min(1.0, i / attack) * exp(-fall * i) * (lead * sin(w1 * i) + harmonic * sin(w2 * i))
            + low * sin(wb * (start + i))
            for i in range(length)
        ],
    )


def _fade_edges(samples: array[float], width: int) -> None:
    # Starting or stopping a wave at full level clicks; a few ms of ramp removes it.
    width = min(width, len(samples) // 2)
    for i in range(width):
        gain = i / width
        samples[i] *= gain
        samples[-1 - i] *= gain
