"""Audio networks, their set-ups, the front end, and a tiny training run."""

from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.core.audio_setup import clip_probabilities, crop_starts, make_setup, take_windows
from streamrec.core.bundle import Bundle
from streamrec.core.features import LOGMEL_PRESETS, LogMel, logmel
from streamrec.core.models.audio import ARCHITECTURES, AudioDims, build_audio_model, default_dims
from streamrec.train.loop import FitOptions, fit


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_architecture_rebuilds_from_stored_dims(arch: str, tmp_path) -> None:
    setup = make_setup(arch)
    frames = setup.frontend.frames_per_window if arch != "attention" else 300
    dims = default_dims(arch, 13, setup.frontend.n_mels)
    model = build_audio_model(dims).eval()
    x = torch.randn(3, setup.frontend.n_mels, frames)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (3, 13)
        assert model.embed(x).shape == (3, dims.embedding_dim)
    bundle = Bundle.create(tmp_path / "b", tuple(f"c{i}" for i in range(13)))
    bundle.save_network("audio", model, arch, dims.to_dict(), {"setup": setup.to_dict()})
    checkpoint = Bundle.load(tmp_path / "b").load_checkpoint("audio")
    rebuilt = build_audio_model(AudioDims.from_dict(checkpoint["dims"]))
    rebuilt.load_state_dict(checkpoint["state_dict"])
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), out)


def test_seed_input_shapes() -> None:
    assert (
        LOGMEL_PRESETS["han"].n_mels == 128 and LOGMEL_PRESETS["han"].frames_per_window == 44
    )  # 128 x 43 (+1 centred)
    choi = make_setup("choi", crop="cc")
    assert choi.frontend.n_mels == 96 and choi.frontend.frames_per_window == 1365  # 96 x 1366 at 12 kHz
    assert make_setup("choi").frontend.window_seconds == 3.0 and make_setup("choi").crop == "uniform"


def test_crops_uniform_and_central() -> None:
    setup = make_setup("han")
    starts = crop_starts(10 * 22050, 22050, setup)
    assert len(starts) == 10 and starts[0] == 0 and starts[-1] == 9 * 22050
    central = make_setup("choi", crop="cc")
    assert crop_starts(40 * 12000, central.frontend.window_samples, central) == [(40 * 12000 - 29.1 * 12000) // 2]
    short = take_windows(np.ones(100, np.float32), [0], 160)
    assert short.shape == (1, 160) and short[0, :100].all() and not short[0, 100:].any()


def test_front_end_identical_in_training_and_runtime_paths() -> None:
    """Training computes LogMel on a batch of windows; the runtime and previews call features.logmel on one."""
    config = LOGMEL_PRESETS["realtime"]
    rng = np.random.default_rng(0)
    audio = rng.standard_normal(3 * config.sample_rate).astype(np.float32) * 0.1
    windows = take_windows(audio, [0, 8000, 16000], config.window_samples)
    batch = LogMel(config)(torch.from_numpy(windows)).numpy()
    for i, start in enumerate([0, 8000, 16000]):
        single = logmel(audio[start : start + config.window_samples], config)
        np.testing.assert_array_equal(single, batch[i])
    assert batch.shape == (3, 64, 101)


@pytest.mark.slow  # a training run
def test_tiny_training_run_lowers_the_loss() -> None:
    """Two classes a network must tell apart: a low and a high tone, in noise."""
    config = LOGMEL_PRESETS["realtime"]
    rng = np.random.default_rng(0)
    t = np.arange(config.window_samples) / config.sample_rate

    def example(label: int) -> np.ndarray:
        tone = np.sin(2 * np.pi * (300 if label == 0 else 2400) * t + rng.uniform(0, 6))
        return (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)

    labels = np.array([0, 1] * 16)
    features = LogMel(config)(torch.from_numpy(np.stack([example(y) for y in labels])))
    torch.manual_seed(0)  # the initial weights, independent of the tests that ran before
    dims = AudioDims("han", 2, config.n_mels, channels=(8, 8, 16, 16), embedding_dim=32, dropout=0.0)
    model = build_audio_model(dims)

    def batches(epoch: int):
        yield features, torch.from_numpy(labels)

    def validate() -> float:
        with torch.no_grad():
            return float((model(features).argmax(1).numpy() == labels).mean())

    result = fit(
        model,
        batches,
        torch.nn.functional.cross_entropy,
        validate,
        FitOptions(max_epochs=15, patience=15, learning_rate=3e-3),
    )
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.best_val_f1 >= 0.9
    probabilities = clip_probabilities(
        model, LogMel(config), make_setup("han", frontend="realtime"), np.concatenate([example(1)] * 3)
    )
    assert probabilities.argmax() == 1 and probabilities.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # tiny_corpus
def test_train_audio_cli_builds_the_network_it_is_asked_for(tiny_corpus: Path, tmp_path: Path, streamrec_cli) -> None:
    """--channels and --embedding-dim reach the bundle; options that do not fit together are one-line errors."""
    out = tmp_path / "narrow"
    common = ("train", "audio", "--data", str(tiny_corpus), "--epochs", "1", "--workers", "1")
    code = streamrec_cli(
        *common, "--out", str(out), "--arch", "han", "--frontend", "realtime", "--channels", "8,8,16,16",
        "--embedding-dim", "32",
    )  # fmt: skip
    assert code == 0
    dims = Bundle.load(out).network("audio")["dims"]
    assert (dims["channels"], dims["embedding_dim"]) == ([8, 8, 16, 16], 32)
    options = Bundle.load(out).network("audio")["training"]["options"]
    assert options["augment"] == ["pitch", "eq", "room", "dynamics", "mix"]  # the default: every lever

    # --init: fine-tuning starts from another bundle's audio network of the same shape, and says so.
    tuned = tmp_path / "tuned"
    narrow = ("--arch", "han", "--frontend", "realtime", "--channels", "8,8,16,16", "--embedding-dim", "32")
    assert streamrec_cli(*common, "--out", str(tuned), *narrow, "--init", str(out), "--augment", "eq,room") == 0
    options = Bundle.load(tuned).network("audio")["training"]["options"]
    assert (options["init"], options["augment"]) == (str(out), ["eq", "room"])
    assert streamrec_cli(*common, "--out", str(tmp_path / "d"), "--arch", "han", "--init", str(out)) == 2  # shape
    assert streamrec_cli(*common, "--out", str(tmp_path / "e"), *narrow, "--augment", "reverb") == 2

    assert streamrec_cli(*common, "--out", str(tmp_path / "a"), "--arch", "han", "--representation", "logmel") == 2
    missing = str(tmp_path / "missing.pt")
    assert streamrec_cli(*common, "--out", str(tmp_path / "b"), "--arch", "attention", "--embedding", missing) == 2
    assert streamrec_cli(
        *common, "--out", str(tmp_path / "c"), "--arch", "attention", "--representation", "embedding",
        "--embedding", missing,
    ) == 2  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists()
