"""WAV files for the audio tests, written with the standard library's ``wave``."""
import io
import wave

import numpy as np


def wav_bytes(samples, rate: int = 8000, width: int = 2, channels: int = 1) -> bytes:
    """A WAV file holding ``samples`` (already in the sample type ``width`` implies) as bytes."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).tobytes())
    return buf.getvalue()


def write_wav(path, samples, rate: int = 8000, width: int = 2, channels: int = 1):
    """:func:`wav_bytes` written to ``path``; returns ``path``."""
    path.write_bytes(wav_bytes(samples, rate, width, channels))
    return path


def digit_tone(digit: int, index: int, rate: int = 8000, n: int = 2400) -> bytes:
    """A 16-bit mono tone whose pitch encodes the digit (and, slightly, the take ``index``):
    a stand-in for an FSDD recording that a model can learn."""
    t = np.arange(n) / rate
    x = 0.3 * np.sin(2 * np.pi * (300 + 150 * digit + 7 * index) * t)
    return wav_bytes((x * 32767).astype("<i2"), rate)
