"""The recognition stage on a real (small, untrained) bundle: batching over streams, the frame cache,
the background output, missing modalities, and equality with the training code's functions."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.core.audio_setup import AudioSetup, instrument_probabilities, window_probabilities
from streamrec.core.bundle import Bundle
from streamrec.core.features import LogMel, frames_to_tensor
from streamrec.core.models import load_network
from streamrec.core.networks import TorchNetworks
from streamrec.core.scores import FusionRule, fusion_inputs
from streamrec.engines import load_networks
from streamrec.runtime.recognizer import Recognizer, Request, energy_db
from streamrec.runtime.types import AudioWindow, Frame

from .helpers import CLASSES, K_FRAMES

RATE = 16000


class CountingNetworks:
    """TorchNetworks that count the frames given to the frame network."""

    def __init__(self, inner: TorchNetworks) -> None:
        self.inner, self.info, self.frames_run = inner, inner.info, 0

    def audio(self, windows: np.ndarray):
        return self.inner.audio(windows)

    def frames(self, images: np.ndarray):
        self.frames_run += len(images)
        return self.inner.frames(images)

    def fuse(self, audio: np.ndarray, frames: np.ndarray, present: np.ndarray):
        return self.inner.fuse(audio, frames, present)


@pytest.fixture(scope="module")
def networks(runtime_bundle: Path) -> TorchNetworks:
    return load_networks(runtime_bundle)  # type: ignore[return-value]


def window(seed: int, level: float = 0.3, end_time: float = 1.0) -> AudioWindow:
    samples = (np.random.default_rng(seed).standard_normal(RATE) * level).astype(np.float32)
    return AudioWindow(samples, end_time, 0.0, RATE)


def frames(seed: int, n: int, start: float = 0.0) -> tuple[Frame, ...]:
    rng = np.random.default_rng(seed)
    return tuple(Frame(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8), start + i, 50.0 + i) for i in range(n))


def test_network_info_is_read_from_the_manifest(networks: TorchNetworks) -> None:
    info = networks.info
    assert info.classes == CLASSES and info.background and info.k_frames == K_FRAMES
    assert (info.sample_rate, info.window_samples, info.audio_dim, info.video_dim) == (RATE, RATE, 32, 16)


def test_batched_over_streams_equals_one_at_a_time(networks: TorchNetworks) -> None:
    requests = [
        Request("a", window(0), frames(1, 2)),
        Request("b", window(2), ()),
        Request("c", None, frames(3, 5)),
        Request("a", window(4, end_time=1.5), frames(1, 3)),
    ]
    batched = Recognizer(networks)(requests)
    for request, together in zip(requests, batched):
        alone = Recognizer(networks)([request])[0]
        np.testing.assert_allclose(together.fused, alone.fused, atol=1e-5)
        for a, b in ((together.audio, alone.audio), (together.video, alone.video)):
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, atol=1e-5)
    assert batched[1].video is None and batched[2].audio is None and batched[2].background is None
    assert all(abs(r.fused.sum() - 1) < 1e-5 for r in batched)


def test_frames_run_once_and_prime_runs_them_ahead(networks: TorchNetworks) -> None:
    counting = CountingNetworks(networks)
    recognizer = Recognizer(counting)
    shown = frames(5, 4)
    assert recognizer.prime({"s": shown[:2]}) == 2
    recognizer([Request("s", window(0), shown[:3])])
    assert recognizer.prime({"s": shown[:3], "t": shown[:1]}) == 1  # s's frames are cached, t's is new
    recognizer([Request("s", window(1), shown), Request("t", window(1), shown[:1])])
    assert counting.frames_run == 4 + 1  # each frame once per stream; stream t has its own cache
    recognizer.reset("s")
    recognizer([Request("s", window(0), shown[-1:])])
    assert counting.frames_run == 6


def test_a_frame_being_primed_in_another_thread_is_awaited_not_run_again(networks: TorchNetworks) -> None:
    counting = CountingNetworks(networks)
    inner_frames = counting.frames
    started = threading.Event()

    def slow_frames(images: np.ndarray):
        started.set()
        time.sleep(0.3)
        return inner_frames(images)

    counting.frames = slow_frames  # type: ignore[method-assign]
    recognizer = Recognizer(counting)
    shown = frames(5, 3)
    primer = threading.Thread(target=recognizer.prime, args=({"s": shown[:2]},))
    primer.start()
    started.wait(5)
    result = recognizer([Request("s", window(0), shown)])[0]  # needs the two in flight and one more
    primer.join()
    assert counting.frames_run == 3
    assert result.video is not None


def test_background_column_and_energy(networks: TorchNetworks) -> None:
    result = Recognizer(networks)([Request("s", window(0, level=0.1), ())])[0]
    raw, _ = networks.audio(window(0, level=0.1).samples[None])
    assert raw.shape == (1, len(CLASSES) + 1)
    assert result.background == pytest.approx(float(raw[0, -1]), abs=1e-6)
    np.testing.assert_allclose(result.audio, raw[0, :-1] / raw[0, :-1].sum(), atol=1e-6)
    assert result.energy_db == pytest.approx(-20.0, abs=0.2)  # RMS 0.1
    assert energy_db(np.zeros(10, np.float32)) == -200.0


def test_equals_the_training_code_on_the_same_inputs(runtime_bundle: Path, networks: TorchNetworks) -> None:
    bundle = Bundle.load(runtime_bundle)
    setup = AudioSetup.from_dict(bundle.network("audio")["setup"])
    audio_net, video_net, fusion = (load_network(bundle, k) for k in ("audio", "video", "fusion"))
    logmel = LogMel(setup.frontend)
    w, f = window(7), frames(8, 2)
    result = Recognizer(networks)([Request("s", w, f)])[0]
    with torch.no_grad():
        probabilities = window_probabilities(audio_net, logmel, w.samples[None].copy())
        images = frames_to_tensor(np.stack([x.image for x in f]))
        d = fusion.dims
        audio_embedding = audio_net.embed(logmel(torch.from_numpy(w.samples[None].copy()))).numpy()
        inputs = fusion_inputs(audio_embedding, video_net.embed(images).numpy(), d.k_frames, d.audio_dim, d.video_dim)
        inputs = [torch.from_numpy(x) for x in inputs]
        fused = torch.softmax(fusion(*inputs), dim=1)[0].numpy()
        video = torch.softmax(video_net(images), dim=1).mean(dim=0).numpy()
    np.testing.assert_allclose(result.audio, instrument_probabilities(probabilities, setup)[0], atol=1e-5)
    np.testing.assert_allclose(result.video, video, atol=1e-5)
    np.testing.assert_allclose(result.fused, fused, atol=1e-5)


def test_unknown_backend_is_a_user_error(runtime_bundle: Path) -> None:
    from streamrec.core.errors import UserError

    with pytest.raises(UserError, match="backend"):
        load_networks(runtime_bundle, "nonsense")


def test_product_rule_fuses_the_modalities_probabilities_without_the_network(networks: TorchNetworks) -> None:
    counting = CountingNetworks(networks)
    fused_by_network: list[int] = []
    counting.fuse = lambda *inputs: fused_by_network.append(1) or networks.fuse(*inputs)  # type: ignore[method-assign]
    rule = FusionRule("product", audio_weight=0.7)
    both, audio_only, frames_only = Recognizer(counting, rule)(
        [Request("a", window(1), frames(2, 3)), Request("b", window(3)), Request("c", None, frames(4, 2))]
    )
    assert not fused_by_network  # the product needs no fusion network
    # each class's weighted geometric mean, not renormalised: it sums to less than 1 where the modalities differ
    np.testing.assert_allclose(both.fused, both.audio**0.7 * both.video**0.3, rtol=1e-4)
    assert both.fused.sum() < 1
    np.testing.assert_allclose(audio_only.fused, audio_only.audio, atol=1e-7)
    np.testing.assert_allclose(frames_only.fused, frames_only.video, atol=1e-7)


def test_fusion_rule_checks_what_it_is_given() -> None:
    with pytest.raises(ValueError, match="unknown fusion rule"):
        FusionRule("mean")
    with pytest.raises(ValueError, match="audio weight"):
        FusionRule("product", 1.5)
    with pytest.raises(ValueError, match="needs the audio or the frame"):
        FusionRule("product").product(None, None)
    fused = FusionRule("product").product(np.array([0.0, 0.5, 0.5]), np.array([1.0, 0.0, 0.0]))
    assert fused.tolist() == [0.0, 0.0, 0.0]  # the modalities disagree completely: no class scores
    agreed = np.array([0.7, 0.2, 0.1])
    np.testing.assert_allclose(FusionRule("product", 0.3).product(agreed, agreed), agreed, rtol=1e-5)
    assert FusionRule.from_manifest({}, has_fusion_network=True) == FusionRule("network")
    assert FusionRule.from_manifest({}, has_fusion_network=False) == FusionRule("product")
    chosen = {"fusion_rule": {"kind": "product", "audio_weight": 0.3, "val_f1": {}}}
    assert FusionRule.from_manifest(chosen, has_fusion_network=True) == FusionRule("product", 0.3)
    with pytest.raises(ValueError, match="no fusion network"):
        FusionRule.from_manifest({"fusion_rule": {"kind": "network"}}, has_fusion_network=False)


def test_class_offsets_recalibrate_each_modality_before_the_product(networks: TorchNetworks) -> None:
    plain = FusionRule("product", audio_weight=0.5)
    request = [Request("a", window(5), frames(6, 2))]
    (before,) = Recognizer(networks, plain)(request)
    n = len(CLASSES)
    # push the audio's least likely class and the frames' last class up by a factor of e^8
    audio_offsets = tuple(8.0 if i == int(before.audio.argmin()) else 0.0 for i in range(n))
    video_offsets = tuple(8.0 if i == n - 1 else 0.0 for i in range(n))
    shifted = FusionRule("product", 0.5, audio_offsets, video_offsets)
    (after,) = Recognizer(networks, shifted)(request)
    expected_audio = before.audio * np.exp(audio_offsets)
    np.testing.assert_allclose(after.audio, expected_audio / expected_audio.sum(), rtol=1e-4)
    assert after.audio.argmax() == before.audio.argmin()
    expected_video = before.video * np.exp(video_offsets)
    np.testing.assert_allclose(after.video, expected_video / expected_video.sum(), rtol=1e-4)
    np.testing.assert_allclose(after.fused, np.sqrt(after.audio * after.video), rtol=1e-4)


def test_class_offsets_travel_through_the_manifest_and_are_checked() -> None:
    rule = FusionRule("product", 0.4, (1.0, -1.0, 0.0), (0.5, 0.0, -0.5))
    assert FusionRule.from_manifest({"fusion_rule": rule.to_dict()}, has_fusion_network=False) == rule
    assert "audio_offsets" not in FusionRule("product").to_dict()  # bundles without offsets keep their manifest
    np.testing.assert_allclose(
        rule.calibrate("audio", np.array([0.5, 0.5, 0.0])), [np.e**2 / (1 + np.e**2), 1 / (1 + np.e**2), 0]
    )
    assert FusionRule("product").calibrate("video", None) is None
    with pytest.raises(ValueError, match="3 audio offsets for 2 classes"):
        rule.calibrate("audio", np.array([0.5, 0.5]))
    with pytest.raises(ValueError, match="finite"):
        FusionRule("product", 0.5, (float("nan"),))


def test_video_frames_pools_only_the_newest_frames_at_run_time(networks: TorchNetworks) -> None:
    shown = frames(7, K_FRAMES)
    (all_k,) = Recognizer(networks, FusionRule("product"))([Request("a", window(8), shown)])
    (newest,) = Recognizer(networks, FusionRule("product", video_frames=1))([Request("a", window(8), shown)])
    (last_alone,) = Recognizer(networks, FusionRule("product"))([Request("b", window(8), shown[-1:])])
    # one frame: the newest frame's probabilities, not the mean of the k in the window
    np.testing.assert_allclose(newest.video, last_alone.video, atol=1e-6)
    assert not np.allclose(newest.video, all_k.video, atol=1e-4)
    assert newest.frame_time == all_k.frame_time == shown[-1].media_time  # the smoother counts frames by it
    np.testing.assert_allclose(newest.fused, np.sqrt(newest.audio * newest.video), rtol=1e-4)
    rule = FusionRule("product", 0.5, video_frames=2)
    assert FusionRule.from_manifest({"fusion_rule": rule.to_dict()}, has_fusion_network=False) == rule
    assert "video_frames" not in FusionRule("product").to_dict()  # None: the manifest stays as it was
    with pytest.raises(ValueError, match="video_frames"):
        FusionRule("product", video_frames=0)
