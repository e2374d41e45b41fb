"""Audio front end: WAV reading, band-limited resampling, log-mel features, SpecAugment.

Everything is computed in torch (no torchaudio: its wheels pin their own torch).

* :func:`read_wav` reads mono PCM WAV (8-, 16-, 24- or 32-bit integer) with the stdlib
  :mod:`wave` module; stereo, empty, truncated, corrupt and non-WAV files are a
  :class:`~rnnkit.errors.DataError` naming the file.
* :func:`resample` converts between integer rates by rational polyphase filtering with a
  Kaiser-windowed sinc low-pass (cut-off just below the lower Nyquist frequency).
* :func:`mel_filterbank` uses the **HTK** mel scale, ``mel = 2595 * log10(1 + f / 700)``,
  with triangles of peak 1 (no Slaney area normalisation): between the first and last
  centre frequencies the filters sum to exactly 1.
* :func:`log_mel` is ``log(mel power + 1e-10)`` of a Hann-windowed ``torch.stft``;
  :func:`normalize` standardises each channel over one utterance; :func:`spec_augment`
  masks time and frequency bands, deterministically given a ``torch.Generator``.
* :class:`LogMelStream` gives the same frames as :func:`log_mel` from audio that arrives
  in chunks (a stream, or a long file read piece by piece with :func:`wav_chunks`).
* :func:`cached_features` stores features as safetensors (never pickles), keyed by the
  file's sha256 and the feature settings, written atomically.
"""
from __future__ import annotations

import hashlib
import io
import json
import math
import os
import struct
import wave
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..errors import ConfigError, DataError

#: bumped whenever the feature computation changes, so old cache entries are not reused.
FEATURE_VERSION = 1
#: largest numerator/denominator of the reduced rate ratio :func:`resample` accepts.
MAX_RATIO_TERM = 1024
#: largest factor between the two rates :func:`resample` accepts (either direction).
MAX_RATE_FACTOR = 32
LOG_FLOOR = 1e-10


# --------------------------------------------------------------------------- reading

def _decode_pcm(raw: bytes, width: int) -> np.ndarray:
    """Little-endian PCM bytes of one channel -> float32 in [-1, 1)."""
    if width == 1:  # 8-bit WAV is unsigned
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return v.astype(np.float32) / float(1 << 23)
    if width == 4:
        return (np.frombuffer(raw, dtype="<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    raise AssertionError(width)


def read_wav(path: str | os.PathLike[str], *, data: bytes | None = None) -> tuple[torch.Tensor, int]:
    """Read a mono PCM WAV file.

    Args:
        path: the file; when ``data`` is given, only the name used in error messages
            (e.g. ``"recordings.tar:recordings/0_george_0.wav"`` for a tar member).
        data: the file's bytes, already read.

    Returns:
        ``(samples, rate)``: float32 samples of shape ``(N,)`` scaled to [-1, 1)
        (16-bit values ``v`` become exactly ``v / 32768``), and the rate in Hz.

    Raises:
        DataError: naming the file, for a missing, non-WAV, corrupt, truncated,
            compressed/float, multi-channel or empty file.
    """
    name = os.fspath(path)
    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise DataError(f"{name}: cannot read: {e.strerror or e}") from e
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, rate, frames = _check_header(w, name)
            raw = w.readframes(frames)
    except (wave.Error, EOFError, struct.error) as e:  # wave lets struct.error escape on bad headers
        raise DataError(f"{name}: not a readable PCM WAV file ({e})") from e
    if len(raw) != frames * width:
        raise DataError(f"{name}: truncated: header says {frames} samples, data holds {len(raw) // width}")
    return torch.from_numpy(_decode_pcm(raw, width).copy()), rate


def _check_header(w: wave.Wave_read, name: str) -> tuple[int, int, int]:
    """``(sample width, rate, frames)`` of an open WAV, or the DataError that names the file."""
    channels, width, rate, frames = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
    if channels != 1:
        kind = "stereo" if channels == 2 else f"{channels}-channel"
        raise DataError(f"{name}: {kind} audio; only mono WAV is supported (mix it down to one channel)")
    if width not in (1, 2, 3, 4):
        raise DataError(f"{name}: unsupported sample width of {width} bytes (8/16/24/32-bit PCM only)")
    if rate <= 0:
        raise DataError(f"{name}: invalid sample rate {rate} Hz")
    if frames == 0:
        raise DataError(f"{name}: empty recording (no samples)")
    return width, rate, frames


def wav_chunks(path: str | os.PathLike[str], chunk: int) -> Iterator[tuple[torch.Tensor, int]]:
    """Read a mono PCM WAV file ``chunk`` samples at a time, never holding all of it.

    Yields ``(samples (<= chunk,), rate)``; the concatenation equals :func:`read_wav`'s samples.
    Raises the same :class:`~rnnkit.errors.DataError` (naming the file) as :func:`read_wav`,
    a truncated data chunk only once its end is reached.
    """
    name = os.fspath(path)
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"wav_chunks: chunk must be a positive number of samples, got {chunk!r}")
    try:
        with open(path, "rb") as f, wave.open(f, "rb") as w:
            width, rate, frames = _check_header(w, name)
            read = 0
            while read < frames:
                raw = w.readframes(min(chunk, frames - read))
                if len(raw) < width:
                    break
                read += len(raw) // width
                yield torch.from_numpy(_decode_pcm(raw[: len(raw) - len(raw) % width], width).copy()), rate
    except OSError as e:
        raise DataError(f"{name}: cannot read: {e.strerror or e}") from e
    except (wave.Error, EOFError, struct.error) as e:
        raise DataError(f"{name}: not a readable PCM WAV file ({e})") from e
    if read != frames:
        raise DataError(f"{name}: truncated: header says {frames} samples, data holds {read}")


# ------------------------------------------------------------------------ resampling

def _check_rate(rate: object, what: str, name: str) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) \
            or rate <= 0 or int(rate) != rate:
        raise DataError(f"{name}: {what} rate must be a positive whole number of Hz, got {rate!r}")
    return int(rate)


def _sinc_kernel(up: int, down: int, zero_crossings: int, rolloff: float, beta: float,
                 dtype: torch.dtype) -> tuple[torch.Tensor, int]:
    """Polyphase kernels ``(up, 1, 2 * width + down)`` and the padding ``width``.

    Time is measured in blocks: input sample ``j = q * down + m`` sits at ``q + m / down``,
    output ``i = q * up + p`` at ``q + p / up``; the weight of input ``m`` in phase ``p`` is
    the windowed low-pass impulse response at ``p / up - m / down``.
    """
    base = min(up, down) * rolloff  # twice the cut-off, in samples per block
    width = math.ceil(zero_crossings * down / base)
    m = torch.arange(-width, width + down, dtype=torch.float64) / down
    p = torch.arange(0, up, dtype=torch.float64)[:, None] / up
    t = (p - m[None, :]) * base  # in zero crossings of the sinc
    inside = t.abs() <= zero_crossings
    arg = (1.0 - (t / zero_crossings).clamp(-1, 1) ** 2).clamp_min(0).sqrt()
    window = torch.special.i0(beta * arg) / torch.special.i0(torch.tensor(beta, dtype=torch.float64))
    kernel = torch.sinc(t) * window * inside * (base / down)
    return kernel.to(dtype)[:, None, :], width


def resample(x: torch.Tensor, from_rate: int, to_rate: int, *, name: str = "audio",
             zero_crossings: int = 16, rolloff: float = 0.945, beta: float = 8.6) -> torch.Tensor:
    """Band-limited resampling of ``x`` (shape ``(N,)``) from ``from_rate`` to ``to_rate`` Hz.

    Rational polyphase: the ratio is reduced to ``up / down`` by their gcd and each output
    sample is a Kaiser-windowed (``beta``) sinc interpolation over ``zero_crossings`` lobes
    each side, with the low-pass cut-off at ``rolloff`` times the lower Nyquist frequency
    (``beta=8.6`` gives about 85 dB of stop-band attenuation). The output has
    ``ceil(N * to_rate / from_rate)`` samples and is aligned with the input at sample 0.

    Raises:
        DataError: naming ``name``, for a non-positive or fractional rate, a rate ratio
            beyond :data:`MAX_RATE_FACTOR`, or a reduced ratio whose terms exceed
            :data:`MAX_RATIO_TERM` (e.g. 44100 -> 44101 Hz), or ``x`` not 1-D.
    """
    src = _check_rate(from_rate, "source", name)
    dst = _check_rate(to_rate, "target", name)
    if x.ndim != 1:
        raise DataError(f"{name}: resample expects mono samples of shape (N,), got {tuple(x.shape)}")
    if src == dst:
        return x.clone()
    if max(src, dst) > MAX_RATE_FACTOR * min(src, dst):
        raise DataError(f"{name}: cannot resample {src} Hz -> {dst} Hz: the rates differ by more than "
                        f"a factor of {MAX_RATE_FACTOR}")
    g = math.gcd(src, dst)
    up, down = dst // g, src // g
    if max(up, down) > MAX_RATIO_TERM:
        raise DataError(f"{name}: cannot resample {src} Hz -> {dst} Hz: the ratio {up}/{down} does not "
                        f"reduce to terms of at most {MAX_RATIO_TERM}")
    n = x.shape[0]
    if n == 0:
        return x.clone()
    work = torch.float64 if x.dtype == torch.float64 else torch.float32
    kernel, width = _sinc_kernel(up, down, zero_crossings, rolloff, beta, work)
    padded = torch.nn.functional.pad(x.to(work)[None, None, :], (width, width + down))
    out = torch.nn.functional.conv1d(padded, kernel.to(x.device), stride=down)  # (1, up, blocks)
    out = out[0].transpose(0, 1).reshape(-1)
    return out[: math.ceil(n * up / down)].to(x.dtype)


# ------------------------------------------------------------------------ mel features

def hz_to_mel(f: torch.Tensor | float) -> torch.Tensor:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: torch.Tensor | float) -> torch.Tensor:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_points(n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """The ``n_mels + 2`` corner frequencies (Hz), equally spaced in mel; filter ``k``
    rises from point ``k``, peaks at point ``k + 1`` (its centre) and falls to ``k + 2``."""
    return mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                    dtype=torch.float64))


def mel_filterbank(n_mels: int, n_fft: int, rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> torch.Tensor:
    """Triangular HTK-mel filters on the ``n_fft // 2 + 1`` STFT bins, shape ``(n_fft // 2 + 1, n_mels)``.

    Each triangle has peak 1 at its centre frequency (``mel_points(...)[k + 1]``) and
    reaches 0 at its neighbours' centres, so between the first and last centre the filters
    sum to 1 at every bin.

    Raises:
        ConfigError: for a bad size or frequency range, or when ``n_fft`` is too small
            for some filter to cover any bin (lower ``n_mels`` or raise ``n_fft``).
    """
    f_max = rate / 2 if f_max is None else f_max
    if n_mels < 1 or n_fft < 2 or rate <= 0:
        raise ConfigError(f"mel_filterbank: need n_mels >= 1, n_fft >= 2, rate > 0 (got {n_mels}, {n_fft}, {rate})")
    if not 0 <= f_min < f_max <= rate / 2:
        raise ConfigError(f"mel_filterbank: need 0 <= f_min < f_max <= rate / 2 = {rate / 2} "
                          f"(got f_min={f_min}, f_max={f_max})")
    freqs = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * rate / n_fft
    pts = mel_points(n_mels, f_min, f_max)
    lo, mid, hi = pts[:-2], pts[1:-1], pts[2:]
    f = freqs[:, None]
    rising = (f - lo) / (mid - lo)
    falling = (hi - f) / (hi - mid)
    fb = torch.minimum(rising, falling).clamp_min(0.0)
    empty = (fb.sum(0) == 0).nonzero().flatten().tolist()
    if empty:
        raise ConfigError(f"mel_filterbank: {len(empty)} of {n_mels} mel filters cover no FFT bin "
                          f"(n_fft={n_fft} at {rate} Hz); use fewer mels or a larger n_fft")
    return fb.to(torch.float32)


def frame_sizes(rate: int, win_ms: float, hop_ms: float) -> tuple[int, int, int]:
    """``(win_length, hop_length, n_fft)`` in samples; ``n_fft`` is the next power of two."""
    win = max(1, round(rate * win_ms / 1000))
    hop = max(1, round(rate * hop_ms / 1000))
    return win, hop, 1 << (win - 1).bit_length()


def log_mel(x: torch.Tensor, rate: int, n_mels: int = 40, win_ms: float = 25.0, hop_ms: float = 10.0,
            f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """Log mel power spectrogram of mono samples ``x`` ``(N,)``, shape ``(T, n_mels)``.

    Hann window of ``win_ms``, hop ``hop_ms``, FFT size the next power of two; frames are
    centred (zero padding at both ends), so ``T = 1 + N // hop``. Values are natural
    ``log(power + 1e-10)``.
    """
    if x.ndim != 1 or x.shape[0] == 0:
        raise DataError(f"log_mel expects non-empty mono samples of shape (N,), got {tuple(x.shape)}")
    win, hop, n_fft = frame_sizes(rate, win_ms, hop_ms)
    x = x.to(torch.float32)
    window = torch.hann_window(win, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window, center=True,
                      pad_mode="constant", return_complex=True)  # (n_fft // 2 + 1, T)
    power = spec.abs().square()
    fb = mel_filterbank(n_mels, n_fft, rate, f_min, f_max).to(x.device)
    return torch.log(power.transpose(0, 1) @ fb + LOG_FLOOR)


class LogMelStream:
    """:func:`log_mel` of audio that arrives in chunks: :meth:`push` each chunk of samples
    ``(n,)`` and get back the frames ``(k, n_mels)`` it completed, then :meth:`finish` for
    the last ones. All frames together equal ``log_mel`` of the whole signal (up to float
    rounding), however the signal is cut: the stream zero-pads the start and the end as
    ``torch.stft(center=True)`` does and keeps only the samples a later frame still needs
    (at most one FFT window), so memory does not grow with the length.
    """

    def __init__(self, rate: int, n_mels: int = 40, win_ms: float = 25.0, hop_ms: float = 10.0,
                 f_min: float = 0.0, f_max: float | None = None) -> None:
        self.rate = rate
        win, self.hop, self.n_fft = frame_sizes(rate, win_ms, hop_ms)
        left = (self.n_fft - win) // 2  # torch.stft centres a shorter window in the FFT frame
        self.window = torch.zeros(self.n_fft)
        self.window[left:left + win] = torch.hann_window(win, periodic=True)
        self.fb = mel_filterbank(n_mels, self.n_fft, rate, f_min, f_max)
        self.buffer = torch.zeros(self.n_fft // 2)  # the centring pad before the first sample
        self.start = 0      # position of buffer[0] in the padded signal
        self.emitted = 0    # frames returned so far; frame t starts at t * hop in the padded signal
        self.samples = 0    # real samples pushed
        self.finished = False

    def _frames(self, upto: int) -> torch.Tensor:
        """Frames ``emitted .. upto - 1`` (all inside the buffer); drops samples no later frame needs."""
        n = upto - self.emitted
        if n <= 0:
            return torch.zeros(0, self.fb.shape[1])
        offset = self.emitted * self.hop - self.start
        frames = self.buffer[offset:offset + (n - 1) * self.hop + self.n_fft].unfold(0, self.n_fft, self.hop)
        power = torch.fft.rfft(frames * self.window).abs().square()
        self.emitted = upto
        drop = self.emitted * self.hop - self.start
        self.buffer, self.start = self.buffer[drop:], self.start + drop
        return torch.log(power @ self.fb + LOG_FLOOR)

    def push(self, chunk: torch.Tensor) -> torch.Tensor:
        """Add samples ``(n,)``; returns the ``(k, n_mels)`` frames now complete (``k`` may be 0)."""
        if self.finished:
            raise DataError("LogMelStream: push after finish; start a new stream for a new signal")
        if chunk.ndim != 1:
            raise DataError(f"LogMelStream expects mono samples of shape (n,), got {tuple(chunk.shape)}")
        self.buffer = torch.cat([self.buffer, chunk.to(torch.float32)])
        self.samples += chunk.shape[0]
        end = self.start + self.buffer.shape[0]  # padded samples seen
        return self._frames(max(self.emitted, (end - self.n_fft) // self.hop + 1))

    def finish(self) -> torch.Tensor:
        """The remaining frames, with the end zero-padded: ``1 + samples // hop`` frames in all."""
        if self.samples == 0:
            raise DataError("LogMelStream: no samples were pushed (an empty recording has no features)")
        self.finished = True
        total = 1 + self.samples // self.hop
        self.buffer = torch.cat([self.buffer, torch.zeros(self.n_fft // 2 + self.hop)])
        return self._frames(total)


def log_mel_chunks(chunks: Iterable[torch.Tensor], rate: int, n_mels: int = 40, win_ms: float = 25.0,
                   hop_ms: float = 10.0, f_min: float = 0.0, f_max: float | None = None) -> torch.Tensor:
    """:func:`log_mel` of the concatenated ``chunks`` ``(n_i,)``, computed chunk by chunk
    (:class:`LogMelStream`): ``(T, n_mels)``."""
    stream = LogMelStream(rate, n_mels, win_ms, hop_ms, f_min, f_max)
    parts = [stream.push(c) for c in chunks]
    return torch.cat(parts + [stream.finish()])


def normalize(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance standardisation of ``(T, C)`` features: each channel gets zero mean and
    unit (population) variance over time. A channel whose std is below ``eps`` (silence,
    a single frame) is only centred, so it becomes 0 rather than NaN."""
    if features.ndim != 2 or features.shape[0] == 0:
        raise DataError(f"normalize expects features of shape (T, C) with T >= 1, got {tuple(features.shape)}")
    mean = features.mean(0, keepdim=True)
    std = features.std(0, unbiased=False, keepdim=True)
    return (features - mean) / torch.where(std < eps, torch.ones_like(std), std)


def standardize(features: torch.Tensor) -> torch.Tensor:
    """``(T, C)`` features less their mean over the whole utterance, over their std (one
    scalar each, unlike :func:`normalize`'s per channel): the recording's gain goes, the
    spectral shape stays (per-channel standardisation of one short word would remove the
    word's own mean spectrum, which tells digits apart)."""
    std = features.std(unbiased=False)
    return (features - features.mean()) / (std if std > 1e-5 else 1.0)


def spec_augment(features: torch.Tensor, time_masks: int = 2, time_width: int = 10, freq_masks: int = 2,
                 freq_width: int = 5, generator: torch.Generator | None = None,
                 value: float = 0.0) -> torch.Tensor:
    """SpecAugment-style masking of ``(T, C)`` features (for training only); returns a copy.

    Each of ``time_masks`` masks sets ``time_width`` consecutive frames (all channels) to
    ``value``; each of ``freq_masks`` sets ``freq_width`` consecutive channels (all frames).
    Widths are fixed (clipped to the utterance's size), start positions are drawn uniformly
    from ``generator``, so a seeded generator gives the same masks; masks may overlap.
    ``value=0`` is the mean of :func:`normalize`'d features.
    """
    if features.ndim != 2:
        raise DataError(f"spec_augment expects features of shape (T, C), got {tuple(features.shape)}")
    if min(time_masks, time_width, freq_masks, freq_width) < 0:
        raise ConfigError("spec_augment: mask counts and widths must be >= 0")
    out = features.clone()
    for dim, count, width in ((0, time_masks, time_width), (1, freq_masks, freq_width)):
        size = out.shape[dim]
        w = min(width, size)
        for _ in range(count):
            if w == 0:
                break
            start = int(torch.randint(0, size - w + 1, (1,), generator=generator))
            out.narrow(dim, start, w).fill_(value)
    return out


# ------------------------------------------------------------------------ pipeline + cache

@dataclass(frozen=True)
class FeatureSettings:
    """Everything that determines the features of one file (and so its cache key).

    Args:
        rate: files at another rate are resampled to this one first.
        normalize: apply :func:`normalize` per utterance.
    """

    rate: int = 8000
    n_mels: int = 40
    win_ms: float = 25.0
    hop_ms: float = 10.0
    f_min: float = 0.0
    f_max: float | None = None
    normalize: bool = True

    def key(self) -> str:
        """Hex digest of the settings and :data:`FEATURE_VERSION`."""
        blob = json.dumps({"version": FEATURE_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


def compute_features(path: str | os.PathLike[str], settings: FeatureSettings = FeatureSettings(), *,
                     data: bytes | None = None) -> torch.Tensor:
    """read -> resample to ``settings.rate`` -> log-mel -> (normalise): ``(T, n_mels)`` float32."""
    x, rate = read_wav(path, data=data)
    if rate != settings.rate:
        x = resample(x, rate, settings.rate, name=os.fspath(path))
    f = log_mel(x, settings.rate, settings.n_mels, settings.win_ms, settings.hop_ms, settings.f_min, settings.f_max)
    return normalize(f) if settings.normalize else f


def cache_path(cache_dir: str | os.PathLike[str], file_sha256: str, settings: FeatureSettings) -> Path:
    """Where the features of the file with this sha256 under these settings are cached."""
    return Path(cache_dir) / settings.key()[:16] / file_sha256[:2] / f"{file_sha256}.safetensors"


def cached_features(path: str | os.PathLike[str], cache_dir: str | os.PathLike[str],
                    settings: FeatureSettings = FeatureSettings(), *, data: bytes | None = None) -> torch.Tensor:
    """:func:`compute_features`, cached under ``cache_dir`` by the file's sha256 and the settings.

    The entry is a safetensors file (tensor ``features`` plus the file digest and settings
    in its metadata), written atomically; an unreadable or mismatched entry is recomputed
    and replaced. A changed file has another digest, so a new dataset version never
    reuses stale features.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load, save

    if data is None:
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise DataError(f"{os.fspath(path)}: cannot read: {e.strerror or e}") from e
    digest = hashlib.sha256(data).hexdigest()
    target = cache_path(cache_dir, digest, settings)
    if target.is_file():
        try:
            tensors = load(target.read_bytes())
            f = tensors.get("features")
            if f is not None and f.dtype == torch.float32 and f.ndim == 2 and f.shape[1] == settings.n_mels:
                return f
        except (SafetensorError, OSError, ValueError):
            pass  # corrupt entry: recompute below
    f = compute_features(path, settings, data=data).contiguous()
    meta = {"sha256": digest, "settings": json.dumps(asdict(settings), sort_keys=True),
            "feature_version": str(FEATURE_VERSION)}
    atomic_write_bytes(target, save({"features": f}, metadata=meta))
    return f
