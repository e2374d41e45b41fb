"""Audio front end: WAV reading and its errors, band-limited resampling, HTK mel filters,
log-mel features, normalisation, SpecAugment, the feature cache."""
import math
import tarfile
import wave

import numpy as np
import pytest
import torch
from shared_data import DATA, needs

from rnnkit.data.audio import (
    FeatureSettings, cache_path, cached_features, hz_to_mel, log_mel, mel_filterbank, mel_points,
    normalize, read_wav, resample, spec_augment,
)
from rnnkit.errors import ConfigError, DataError


def _write_wav(path, samples, rate=8000, width=2, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples).tobytes())
    return path


def _sine(freq, rate, seconds=1.0, amp=0.5):
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return (amp * torch.sin(2 * math.pi * freq * t)).to(torch.float32)


def _peak_hz(x, rate):
    spec = torch.fft.rfft(x.double() * torch.hann_window(len(x), dtype=torch.float64))
    return float(spec.abs().argmax()) * rate / len(x)


# ---------------------------------------------------------------- read_wav

def test_16_bit_round_trip_is_exact(tmp_path):
    ints = np.array([0, 1, -1, 32767, -32768, 1234, -4321], dtype="<i2")
    x, rate = read_wav(_write_wav(tmp_path / "a.wav", ints, rate=8000))
    assert rate == 8000 and x.dtype == torch.float32 and x.shape == (7,)
    assert np.array_equal((x.numpy() * 32768).astype(np.int64), ints.astype(np.int64))


def test_8_and_32_bit(tmp_path):
    x, _ = read_wav(_write_wav(tmp_path / "b.wav", np.array([128, 0, 255], dtype=np.uint8), width=1))
    assert x.tolist() == [0.0, -1.0, 127 / 128]
    x, _ = read_wav(_write_wav(tmp_path / "c.wav", np.array([0, -2**31, 2**30], dtype="<i4"), width=4))
    assert x.tolist() == [0.0, -1.0, 0.5]


def test_bytes_source_uses_the_given_name(tmp_path):
    p = _write_wav(tmp_path / "d.wav", np.array([5, 6], dtype="<i2"))
    x, rate = read_wav("archive.tar:d.wav", data=p.read_bytes())
    assert rate == 8000 and x.shape == (2,)
    with pytest.raises(DataError, match=r"archive\.tar:d\.wav"):
        read_wav("archive.tar:d.wav", data=b"junk")


def test_stereo_is_refused_naming_the_file(tmp_path):
    p = _write_wav(tmp_path / "stereo.wav", np.zeros(20, dtype="<i2"), channels=2)
    with pytest.raises(DataError, match=r"stereo\.wav: stereo audio; only mono"):
        read_wav(p)


def test_empty_recording_names_the_file(tmp_path):
    p = _write_wav(tmp_path / "empty.wav", np.zeros(0, dtype="<i2"))
    with pytest.raises(DataError, match=r"empty\.wav: empty recording"):
        read_wav(p)


def test_non_wav_corrupt_truncated_and_missing_name_the_file(tmp_path):
    (tmp_path / "notes.wav").write_text("this is not audio\n")
    with pytest.raises(DataError, match=r"notes\.wav: not a readable PCM WAV"):
        read_wav(tmp_path / "notes.wav")
    good = _write_wav(tmp_path / "good.wav", np.arange(100, dtype="<i2")).read_bytes()
    (tmp_path / "cut.wav").write_bytes(good[:30])  # header cut short
    with pytest.raises(DataError, match=r"cut\.wav"):
        read_wav(tmp_path / "cut.wav")
    (tmp_path / "short.wav").write_bytes(good[:-50])  # data chunk shorter than the header says
    with pytest.raises(DataError, match=r"short\.wav: truncated"):
        read_wav(tmp_path / "short.wav")
    with pytest.raises(DataError, match=r"missing\.wav: cannot read"):
        read_wav(tmp_path / "missing.wav")


# ---------------------------------------------------------------- resample

@pytest.mark.parametrize("src,dst", [(16000, 8000), (8000, 16000), (44100, 16000), (8000, 11025)])
def test_resampling_a_sine_keeps_frequency_and_amplitude(src, dst):
    y = resample(_sine(440.0, src), src, dst)
    assert y.shape == (math.ceil(src * dst / src),)
    assert abs(_peak_hz(y, dst) - 440.0) <= 1.0
    mid = y[dst // 10: -dst // 10]  # away from the edges' filter transients
    assert float(mid.abs().max()) == pytest.approx(0.5, abs=0.01)
    rms = float(mid.double().square().mean().sqrt())
    assert rms == pytest.approx(0.5 / math.sqrt(2), rel=0.01)


def test_tone_above_the_new_nyquist_is_attenuated():
    x = _sine(5000.0, 16000)  # 5 kHz would alias to 3 kHz at 8 kHz
    y = resample(x, 16000, 8000)
    mid = y[800:-800].double()
    db = 20 * math.log10(float(mid.square().mean().sqrt()) / (0.5 / math.sqrt(2)))
    assert db < -30


def test_resampling_identity_and_bad_rates():
    x = _sine(100.0, 8000, 0.1)
    assert torch.equal(resample(x, 8000, 8000), x)
    for bad in (0, -8000, 8000.5, float("nan")):
        with pytest.raises(DataError, match=r"clip\.wav: source rate must be a positive"):
            resample(x, bad, 8000, name="clip.wav")
    with pytest.raises(DataError, match=r"clip\.wav: cannot resample 1000 Hz -> 48000 Hz"):
        resample(x, 1000, 48000, name="clip.wav")
    with pytest.raises(DataError, match="ratio 44101/44100"):
        resample(x, 44100, 44101, name="clip.wav")


def test_resampling_a_file_at_another_rate_via_the_pipeline(tmp_path):
    from rnnkit.data.audio import compute_features
    ints = (_sine(300.0, 16000, 0.5) * 32767).numpy().astype("<i2")
    p = _write_wav(tmp_path / "hi.wav", ints, rate=16000)
    f = compute_features(p, FeatureSettings(rate=8000))
    assert f.shape == (1 + 4000 // 80, 40) and torch.isfinite(f).all()


# ---------------------------------------------------------------- mel filters and features

def test_mel_filterbank_closed_form():
    n_mels, n_fft, rate = 20, 4096, 8000
    fb = mel_filterbank(n_mels, n_fft, rate)
    assert fb.shape == (n_fft // 2 + 1, n_mels) and (fb >= 0).all() and (fb <= 1).all()
    pts = mel_points(n_mels, 0.0, rate / 2)
    mels = hz_to_mel(pts)
    assert torch.allclose(mels[1:] - mels[:-1], (mels[1] - mels[0]).expand(n_mels + 1), atol=1e-9)
    assert float(hz_to_mel(1000.0)) == pytest.approx(1000.0, abs=0.1)  # HTK: 1000 Hz ~ 1000 mel
    bin_hz = rate / n_fft
    freqs = torch.arange(n_fft // 2 + 1) * bin_hz
    for k in range(n_mels):
        centre = float(pts[k + 1])
        assert abs(float(freqs[fb[:, k].argmax()]) - centre) <= bin_hz  # peaks at its centre
        assert float(fb[:, k].max()) > 0.95
        outside = (freqs <= pts[k]) | (freqs >= pts[k + 2])
        assert (fb[outside, k] == 0).all()  # zero beyond its neighbours' centres
    inner = (freqs >= pts[1]) & (freqs <= pts[-2])
    assert torch.allclose(fb[inner].sum(1), torch.ones(int(inner.sum())), atol=1e-5)


def test_mel_filterbank_matches_librosa_htk_if_installed():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=8000, n_fft=512, n_mels=30, htk=True, norm=None)
    assert np.allclose(mel_filterbank(30, 512, 8000).numpy().T, ref, atol=1e-5)


def test_mel_filterbank_bad_settings():
    with pytest.raises(ConfigError, match="f_max"):
        mel_filterbank(40, 256, 8000, f_max=5000)
    with pytest.raises(ConfigError, match="cover no FFT bin"):
        mel_filterbank(128, 64, 8000)


def test_log_mel_of_a_pure_tone_peaks_in_its_band():
    rate, tone = 8000, 1000.0
    f = log_mel(_sine(tone, rate), rate, n_mels=40)
    assert f.shape == (1 + rate // 80, 40) and torch.isfinite(f).all()
    pts = mel_points(40, 0.0, rate / 2)
    expected = int((pts[1:-1] - tone).abs().argmin())
    assert int(f[5:-5].mean(0).argmax()) == expected


def test_log_mel_of_silence_and_short_input_is_finite():
    f = log_mel(torch.zeros(50), 8000)
    assert f.shape == (1, 40) and torch.isfinite(f).all()
    assert torch.equal(normalize(log_mel(torch.zeros(8000), 8000)), torch.zeros(101, 40))


def test_normalize_gives_zero_mean_unit_variance_per_channel():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(200, 8, generator=g) * torch.arange(1, 9) + 3.0
    feats[:, 2] = 7.0  # a constant channel
    z = normalize(feats)
    assert torch.allclose(z.mean(0), torch.zeros(8), atol=1e-5)
    std = z.std(0, unbiased=False)
    assert torch.allclose(std[[0, 1, 3, 4, 5, 6, 7]], torch.ones(7), atol=1e-5)
    assert (z[:, 2] == 0).all() and torch.isfinite(z).all()


def test_spec_augment_masks_exact_widths_reproducibly():
    feats = torch.randn(100, 40, generator=torch.Generator().manual_seed(1)) + 10.0  # no natural zeros
    out = spec_augment(feats, time_masks=1, time_width=7, freq_masks=0, freq_width=0,
                       generator=torch.Generator().manual_seed(3))
    masked_rows = (out == 0).all(1)
    assert int(masked_rows.sum()) == 7 and int((out == 0).sum()) == 7 * 40
    idx = masked_rows.nonzero().flatten()
    assert int(idx[-1] - idx[0]) == 6  # contiguous
    out = spec_augment(feats, time_masks=0, time_width=0, freq_masks=1, freq_width=5,
                       generator=torch.Generator().manual_seed(3))
    assert int((out == 0).all(0).sum()) == 5 and int((out == 0).sum()) == 5 * 100
    a = spec_augment(feats, 2, 10, 2, 5, generator=torch.Generator().manual_seed(42))
    b = spec_augment(feats, 2, 10, 2, 5, generator=torch.Generator().manual_seed(42))
    assert torch.equal(a, b) and not torch.equal(a, feats)
    assert (feats != 0).all()  # input untouched
    short = spec_augment(feats[:3], 1, 10, 0, 0, generator=torch.Generator().manual_seed(0))
    assert (short == 0).all()  # width clipped to the utterance


# ---------------------------------------------------------------- cache

def test_cache_round_trip_and_keying(tmp_path):
    ints = (_sine(500.0, 8000, 0.3) * 20000).numpy().astype("<i2")
    p = _write_wav(tmp_path / "u.wav", ints)
    cache = tmp_path / "cache"
    s = FeatureSettings()
    f1 = cached_features(p, cache, s)
    files = list(cache.rglob("*.safetensors"))
    assert len(files) == 1
    import hashlib
    assert files[0] == cache_path(cache, hashlib.sha256(p.read_bytes()).hexdigest(), s)
    assert torch.equal(cached_features(p, cache, s), f1)
    f40 = cached_features(p, cache, FeatureSettings(n_mels=20))
    assert f40.shape[1] == 20 and len(list(cache.rglob("*.safetensors"))) == 2
    files[0].write_bytes(b"garbage")  # a corrupt entry is recomputed and replaced
    assert torch.equal(cached_features(p, cache, s), f1)
    assert not list(cache.rglob("*.tmp"))


# ---------------------------------------------------------------- real data

@needs("fsdd/recordings.tar")
def test_a_real_fsdd_recording():
    with tarfile.open(DATA / "fsdd" / "recordings.tar") as tar:
        data = tar.extractfile("recordings/0_george_0.wav").read()
    x, rate = read_wav("recordings.tar:recordings/0_george_0.wav", data=data)
    assert rate == 8000 and x.ndim == 1 and len(x) > 1000
    f = normalize(log_mel(x, rate))
    assert f.shape == (1 + len(x) // 80, 40) and torch.isfinite(f).all()
