"""Waveform augmentation (streamrec.train.augment) and the background kinds it trains against."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.train.augment import LEVERS, MAX_STRETCH, WaveAugment, parse_levers
from streamrec.train.background import BackgroundSource

RATE = 16000


@pytest.fixture(scope="module")
def background() -> BackgroundSource:
    return BackgroundSource(RATE)  # synthesizes the espeak lines once for the module; recordings decode when drawn


def _sine(freq: float, n: int, rows: int = 4) -> np.ndarray:
    t = np.arange(n) / RATE
    return np.tile(0.1 * np.sin(2 * np.pi * freq * t), (rows, 1)).astype(np.float32)


def _peak_hz(signal: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / RATE)[np.argmax(spectrum)])


def test_parse_levers() -> None:
    assert parse_levers("all") == LEVERS
    assert parse_levers("none") == ()
    assert parse_levers("room, pitch") == ("pitch", "room")  # canonical order
    with pytest.raises(ValueError, match="unknown augmentation reverb"):
        parse_levers("pitch,reverb")


def test_pitch_shift_moves_frequency_within_three_semitones() -> None:
    augment = WaveAugment(("pitch",), RATE, probability=1.0)
    raw = _sine(440.0, augment.source_samples(RATE), rows=16)
    assert raw.shape[1] == int(np.ceil(RATE * MAX_STRETCH))
    out = augment.music(raw, RATE, np.random.default_rng(0), None)
    assert out.shape == (16, RATE)
    peaks = np.array([_peak_hz(row) for row in out])
    ratios = peaks / 440.0
    assert np.all(ratios > 2 ** (-3.1 / 12)) and np.all(ratios < 2 ** (3.1 / 12))
    assert np.ptp(peaks) > 20  # the rows were shifted by different amounts


@pytest.mark.parametrize("lever", LEVERS)
def test_each_lever_changes_the_window_and_keeps_it_finite(lever: str, background: BackgroundSource) -> None:
    augment = WaveAugment((lever,), RATE, probability=1.0)
    raw = _sine(330.0, augment.source_samples(RATE), rows=8)
    out = augment.music(raw, RATE, np.random.default_rng(1), background)
    assert out.shape == (8, RATE) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert np.max(np.abs(out - raw[:, :RATE])) > 1e-3


def test_no_levers_is_the_identity() -> None:
    augment = WaveAugment((), RATE)
    raw = _sine(330.0, RATE)
    np.testing.assert_array_equal(augment.music(raw, RATE, np.random.default_rng(0), None), raw)


def test_same_seed_same_augmentation(background: BackgroundSource) -> None:
    augment = WaveAugment(LEVERS, RATE)
    raw = _sine(500.0, augment.source_samples(RATE))
    first = augment.music(raw, RATE, np.random.default_rng(7), background)
    second = augment.music(raw, RATE, np.random.default_rng(7), background)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("kind", ["babble", "claps", "rain", "rumble"])
def test_real_noise_imitations_are_audible_and_finite(kind: str, background: BackgroundSource) -> None:
    signal = getattr(background, f"_{kind}")(RATE, np.random.default_rng(3))
    assert signal.shape == (RATE,) and np.isfinite(signal).all()
    assert np.sqrt(np.mean(signal**2)) > 1e-3


def test_recorded_speech_of_every_installed_source_is_decoded_only_when_drawn(background: BackgroundSource) -> None:
    from streamrec.train import background as module
    from streamrec.train.corpus.sources import SPEECH_RECORDINGS, recorded_speech

    roots = [root for _, root, _ in SPEECH_RECORDINGS if root.is_dir()]
    if not roots:
        pytest.skip("no recorded speech installed (scripts/install.sh installs its Debian packages)")
    paths = recorded_speech()
    assert all(any(root in p.parents for p in paths) for root in roots)  # each installed source contributes
    module._recorded_speech.cache_clear()
    rng = np.random.default_rng(0)
    lines = [background._speech_line(RATE, rng) for _ in range(20)]
    assert 0 < module._recorded_speech.cache_info().currsize <= 20 < len(paths)
    assert all(line.shape == (RATE,) and np.isfinite(line).all() for line in lines)


def test_background_sources_name_every_installed_package_with_its_licence() -> None:
    from streamrec.train.background import background_sources
    from streamrec.train.corpus.sources import SPEECH_RECORDINGS

    sources = background_sources()
    installed = {package for package, root, _ in SPEECH_RECORDINGS if root.is_dir()}
    assert set(sources) == {"espeak-ng"} | installed and all(sources.values())
