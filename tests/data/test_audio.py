"""Audio front end: WAV reading and its errors, band-limited resampling, HTK mel filters,
log-mel features, normalisation, SpecAugment, the feature cache."""
import math
import tarfile

import numpy as np
import pytest
import torch
from shared_data import DATA, needs
from wav_files import write_wav

from rnnkit.data.audio import (
    FeatureSettings, LogMelStream, cache_path, cached_features, compute_features, hz_to_mel, log_mel,
    log_mel_chunks, mel_filterbank, mel_points, normalize, read_wav, resample, spec_augment, wav_chunks,
)
from rnnkit.errors import ConfigError, DataError




def _sine(freq, rate, seconds=1.0, amp=0.5):
    t = torch.arange(int(rate * seconds), dtype=torch.float64) / rate
    return (amp * torch.sin(2 * math.pi * freq * t)).to(torch.float32)


def _peak_hz(x, rate):
    spec = torch.fft.rfft(x.double() * torch.hann_window(len(x), dtype=torch.float64))
    return float(spec.abs().argmax()) * rate / len(x)


# ---------------------------------------------------------------- read_wav

def test_16_bit_round_trip_is_exact(tmp_path):
    ints = np.array([0, 1, -1, 32767, -32768, 1234, -4321], dtype="<i2")
    x, rate = read_wav(write_wav(tmp_path / "a.wav", ints, rate=8000))
    assert rate == 8000 and x.dtype == torch.float32 and x.shape == (7,)
    assert np.array_equal((x.numpy() * 32768).astype(np.int64), ints.astype(np.int64))


def test_8_and_32_bit(tmp_path):
    x, _ = read_wav(write_wav(tmp_path / "b.wav", np.array([128, 0, 255], dtype=np.uint8), width=1))
    assert x.tolist() == [0.0, -1.0, 127 / 128]
    x, _ = read_wav(write_wav(tmp_path / "c.wav", np.array([0, -2**31, 2**30], dtype="<i4"), width=4))
    assert x.tolist() == [0.0, -1.0, 0.5]


def test_bytes_source_uses_the_given_name(tmp_path):
    p = write_wav(tmp_path / "d.wav", np.array([5, 6], dtype="<i2"))
    x, rate = read_wav("archive.tar:d.wav", data=p.read_bytes())
    assert rate == 8000 and x.shape == (2,)
    with pytest.raises(DataError, match=r"archive\.tar:d\.wav"):
        read_wav("archive.tar:d.wav", data=b"junk")


def test_stereo_is_refused_naming_the_file(tmp_path):
    p = write_wav(tmp_path / "stereo.wav", np.zeros(20, dtype="<i2"), channels=2)
    with pytest.raises(DataError, match=r"stereo\.wav: stereo audio; only mono"):
        read_wav(p)


def test_empty_recording_names_the_file(tmp_path):
    p = write_wav(tmp_path / "empty.wav", np.zeros(0, dtype="<i2"))
    with pytest.raises(DataError, match=r"empty\.wav: empty recording"):
        read_wav(p)


def test_non_wav_corrupt_truncated_and_missing_name_the_file(tmp_path):
    (tmp_path / "notes.wav").write_text("this is not audio\n")
    with pytest.raises(DataError, match=r"notes\.wav: not a readable PCM WAV"):
        read_wav(tmp_path / "notes.wav")
    good = write_wav(tmp_path / "good.wav", np.arange(100, dtype="<i2")).read_bytes()
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
    ints = (_sine(300.0, 16000, 0.5) * 32767).numpy().astype("<i2")
    p = write_wav(tmp_path / "hi.wav", ints, rate=16000)
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


def _reference_log_mel(x: np.ndarray, rate: int, n_mels: int, win: int, hop: int, n_fft: int) -> np.ndarray:
    """Float64 numpy log-mel written from the definitions (independent of torch.stft and of
    mel_filterbank): centred frames with zero padding, a periodic Hann window centred in the
    FFT frame, |rfft|^2, HTK-mel triangles of peak 1 (librosa's htk=True, norm=None), log."""
    padded = np.pad(x.astype(np.float64), n_fft // 2)
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([padded[t * hop: t * hop + n_fft] for t in range(1 + len(x) // hop)])
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
    mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    corners = 700.0 * (10 ** (np.linspace(0.0, mel(rate / 2), n_mels + 2) / 2595.0) - 1.0)
    bins = np.arange(n_fft // 2 + 1) * rate / n_fft
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for k in range(n_mels):
        lo, mid, hi = corners[k:k + 3]
        fb[:, k] = np.maximum(0.0, np.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)))
    return np.log(power @ fb + 1e-10)


def _speechlike(rate: int, n: int, seed: int = 0) -> torch.Tensor:
    """Two tones plus noise: every mel band carries power well above the log floor."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64) / rate
    x = 0.4 * torch.sin(2 * math.pi * 440 * t) + 0.2 * torch.sin(2 * math.pi * 1870 * t)
    return (x + 0.05 * torch.randn(n, generator=g, dtype=torch.float64)).to(torch.float32)


@pytest.mark.parametrize("rate,n_mels,n", [(8000, 40, 8123), (16000, 64, 5000)])
def test_log_mel_matches_a_float64_reference(rate, n_mels, n):
    x = _speechlike(rate, n)
    win, hop, n_fft = round(rate * 0.025), round(rate * 0.010), 1 << (round(rate * 0.025) - 1).bit_length()
    ref = _reference_log_mel(x.double().numpy(), rate, n_mels, win, hop, n_fft)
    got = log_mel(x, rate, n_mels=n_mels).double().numpy()
    assert got.shape == ref.shape == (1 + n // hop, n_mels)
    assert np.abs(got - ref).max() < 1e-3  # float32 against float64, in nats


def test_log_mel_matches_librosa_if_installed():
    librosa = pytest.importorskip("librosa")
    x = _speechlike(8000, 6000)
    ref = librosa.feature.melspectrogram(y=x.double().numpy(), sr=8000, n_fft=256, hop_length=80, win_length=200,
                                         window="hann", center=True, pad_mode="constant", power=2.0,
                                         n_mels=40, htk=True, norm=None)
    assert np.abs(log_mel(x, 8000).double().numpy() - np.log(ref.T + 1e-10)).max() < 1e-3


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


# ---------------------------------------------------------------- chunked features

@pytest.mark.parametrize("chunk", [1, 7, 80, 256, 333, 5000, 100000])
def test_chunked_and_whole_file_features_agree(tmp_path, chunk):
    ints = (_speechlike(8000, 8123) * 32767).numpy().astype("<i2")
    p = write_wav(tmp_path / "long.wav", ints)
    whole, rate = read_wav(p)
    pieces = list(wav_chunks(p, chunk))
    assert all(r == rate for _, r in pieces) and max(len(x) for x, _ in pieces) <= chunk
    assert torch.equal(torch.cat([x for x, _ in pieces]), whole)  # the file read in chunks = read whole
    chunked = log_mel_chunks([x for x, _ in pieces], rate)
    want = log_mel(whole, rate)
    assert chunked.shape == want.shape == (1 + 8123 // 80, 40)
    assert torch.allclose(chunked, want, atol=1e-4, rtol=0)


def test_stream_emits_frames_as_soon_as_they_are_complete():
    x = _speechlike(8000, 4000, seed=3)
    want = log_mel(x, 8000)
    stream, got, sizes = LogMelStream(8000), [], torch.Generator().manual_seed(5)
    pos = 0
    while pos < len(x):  # random chunk sizes, some empty
        n = int(torch.randint(0, 300, (), generator=sizes))
        out = stream.push(x[pos:pos + n])
        pos += n
        # frame t needs padded samples up to t * hop + n_fft (the first n_fft // 2 of them are padding)
        assert stream.emitted == max(0, (min(pos, len(x)) + 128 - 256) // 80 + 1)
        got.append(out)
    got.append(stream.finish())
    assert torch.allclose(torch.cat(got), want, atol=1e-4, rtol=0)


def test_chunked_bad_input_names_the_file(tmp_path):
    stereo = write_wav(tmp_path / "stereo.wav", np.zeros(20, dtype="<i2"), channels=2)
    with pytest.raises(DataError, match=r"stereo\.wav: stereo audio"):
        list(wav_chunks(stereo, 10))
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0, dtype="<i2"))
    with pytest.raises(DataError, match=r"empty\.wav: empty recording"):
        list(wav_chunks(empty, 10))
    (tmp_path / "notes.wav").write_text("this is not audio\n")
    with pytest.raises(DataError, match=r"notes\.wav: not a readable PCM WAV"):
        list(wav_chunks(tmp_path / "notes.wav", 10))
    good = write_wav(tmp_path / "good.wav", np.arange(100, dtype="<i2")).read_bytes()
    (tmp_path / "short.wav").write_bytes(good[:-50])
    with pytest.raises(DataError, match=r"short\.wav: truncated: header says 100 samples, data holds 75"):
        list(wav_chunks(tmp_path / "short.wav", 10))
    with pytest.raises(DataError, match=r"missing\.wav: cannot read"):
        list(wav_chunks(tmp_path / "missing.wav", 10))
    with pytest.raises(ConfigError, match="chunk must be a positive"):
        list(wav_chunks(tmp_path / "good.wav", 0))
    stream = LogMelStream(8000)
    with pytest.raises(DataError, match="no samples"):
        stream.finish()
    stream.push(torch.zeros(100))
    stream.finish()
    with pytest.raises(DataError, match="push after finish"):
        stream.push(torch.zeros(10))


def test_a_rate_that_cannot_be_resampled_names_the_file(tmp_path):
    p = write_wav(tmp_path / "odd-rate.wav", np.zeros(441, dtype="<i2") + 100, rate=44101)
    with pytest.raises(DataError, match=r"odd-rate\.wav: cannot resample 44101 Hz -> 8000 Hz"):
        compute_features(p, FeatureSettings(rate=8000))


# ---------------------------------------------------------------- cache

def test_cache_round_trip_and_keying(tmp_path):
    ints = (_sine(500.0, 8000, 0.3) * 20000).numpy().astype("<i2")
    p = write_wav(tmp_path / "u.wav", ints)
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
    chunked = log_mel_chunks(torch.split(x, 123), rate)
    assert torch.allclose(chunked, log_mel(x, rate), atol=1e-4, rtol=0)
