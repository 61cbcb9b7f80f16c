"""The tagger (streamrec.core.models.tagger) in a bundle: its engine against torch, the fusion rule's mix, and the
recognizer's lane, which mixes each update's audio with the tagger's answer on the stream's previous window."""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np
import pytest

from streamrec.core.bundle import Bundle
from streamrec.core.networks import TorchNetworks
from streamrec.core.scores import FusionRule, split_background
from streamrec.engines import load_networks
from streamrec.runtime.recognizer import Recognizer, Request
from streamrec.runtime.types import AudioWindow

from .helpers import CLASSES

RATE = 16000


class CountingTagger:
    """Networks that count the windows given to the tagger, and can hold the tagger until released."""

    def __init__(self, inner: TorchNetworks) -> None:
        self.inner, self.info, self.tagged = inner, inner.info, 0
        self.entered, self.release = threading.Event(), threading.Event()
        self.release.set()

    def audio(self, windows: np.ndarray):
        return self.inner.audio(windows)

    def frames(self, images: np.ndarray):
        return self.inner.frames(images)

    def fuse(self, audio: np.ndarray, frames: np.ndarray, present: np.ndarray):
        return self.inner.fuse(audio, frames, present)

    def tagger(self, windows: np.ndarray) -> np.ndarray:
        self.tagged += len(windows)
        self.entered.set()
        self.release.wait(10)
        return self.inner.tagger(windows)


@pytest.fixture(scope="module")
def networks(tagged_bundle: Path) -> TorchNetworks:
    return load_networks(tagged_bundle)  # type: ignore[return-value]


def window(seed: int, end_time: float) -> AudioWindow:
    samples = (np.random.default_rng(seed).standard_normal(RATE) * 0.3).astype(np.float32)
    return AudioWindow(samples, end_time, 0.0, round(end_time * RATE))


def expected_audio(networks: TorchNetworks, rule: FusionRule, ours: AudioWindow, previous: AudioWindow | None):
    instruments, _ = split_background(networks.audio(ours.samples[None])[0][0], networks.info.background)
    tagger = networks.tagger(previous.samples[None])[0] if previous is not None else None
    return rule.calibrate("audio", rule.mix_audio(instruments, tagger))


def test_the_tagger_is_read_from_the_bundle_and_gives_probabilities(networks: TorchNetworks) -> None:
    assert networks.info.has_tagger
    p = networks.tagger(np.stack([window(i, 1.0).samples for i in range(3)]))
    assert p.shape == (3, len(CLASSES)) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(p[0], p[1])  # it looks at the audio


def test_the_onnxruntime_tagger_equals_torch(tagged_bundle: Path, networks: TorchNetworks) -> None:
    engine = load_networks(tagged_bundle, "onnxruntime", threads=1)
    windows = np.stack([window(i, 1.0).samples for i in range(4)])
    np.testing.assert_allclose(engine.tagger(windows), networks.tagger(windows), atol=1e-4)


def test_the_tagger_graph_takes_its_own_mel_and_gives_a_tensorrt_profile(tagged_bundle: Path) -> None:
    from streamrec.core.graphs import graph_spec
    from streamrec.engines.tensorrt_engine import profile_shapes

    spec = graph_spec(Bundle.load(tagged_bundle), "tagger")
    assert [(s.name, s.shape) for s in spec.inputs] == [("mel", (None, 63, 96))]  # 1 s at hop 256, 96 bands
    assert [(s.name, s.shape) for s in spec.outputs] == [("logits", (None, len(CLASSES)))]
    assert profile_shapes(spec.inputs, spec.nominal, 8)["mel"] == ((1, 63, 96), (1, 63, 96), (8, 63, 96))


def test_mix_audio_is_a_weighted_geometric_mean_of_the_two() -> None:
    ours, tagger = np.array([0.7, 0.2, 0.1], np.float32), np.array([0.1, 0.1, 0.8], np.float32)
    assert FusionRule("product").mix_audio(ours, tagger) is ours  # share 0: the audio network alone
    assert FusionRule("product", tagger_share=0.5).mix_audio(ours, None) is ours
    np.testing.assert_allclose(FusionRule("product", tagger_share=1.0).mix_audio(ours, tagger), tagger, atol=1e-5)
    half = FusionRule("product", tagger_share=0.5).mix_audio(ours, tagger)
    expected = np.sqrt(ours * tagger) / np.sqrt(ours * tagger).sum()
    np.testing.assert_allclose(half, expected, atol=1e-5)
    rule = FusionRule("product", 0.6, tagger_share=0.3)
    assert FusionRule.from_manifest({"fusion_rule": rule.to_dict()}, False) == rule
    with pytest.raises(ValueError, match="share"):
        FusionRule("product", tagger_share=1.5)


def test_an_update_mixes_the_tagger_on_its_streams_previous_window(networks: TorchNetworks) -> None:
    rule = FusionRule("product", tagger_share=0.5)
    recognizer = Recognizer(networks, rule)
    first, second = window(0, 1.0), window(1, 1.5)
    out = recognizer([Request("a", first)])[0]
    np.testing.assert_allclose(out.audio, expected_audio(networks, rule, first, None), atol=1e-5)  # none yet
    out = recognizer([Request("a", second)])[0]
    np.testing.assert_allclose(out.audio, expected_audio(networks, rule, second, first), atol=1e-5)
    # two windows of one stream in one batch: the second mixes the first, as one at a time
    both = Recognizer(networks, rule)([Request("b", first), Request("b", second)])
    np.testing.assert_allclose(both[1].audio, out.audio, atol=1e-5)
    # a window that does not overlap the update's (a gap in the stream) is not used
    later = window(2, 9.0)
    out = recognizer([Request("a", later)])[0]
    np.testing.assert_allclose(out.audio, expected_audio(networks, rule, later, None), atol=1e-5)


def test_tag_runs_the_left_windows_ahead_and_each_window_once(networks: TorchNetworks) -> None:
    counting = CountingTagger(networks)
    recognizer = Recognizer(counting, FusionRule("product", tagger_share=0.5))
    recognizer([Request("a", window(0, 1.0)), Request("b", window(1, 1.0))])
    assert counting.tagged == 0  # off the emission path: nothing was tagged for these updates
    assert recognizer.prime({}) == 0  # the frame workers do not tag
    assert recognizer.tag() == 2 and counting.tagged == 2  # both streams' windows, in one batch
    assert recognizer.tag() == 0
    recognizer([Request("a", window(2, 1.5))])
    assert counting.tagged == 2  # the update found its previous window tagged
    # A window the tagger thread is tagging is awaited by a file's update, not tagged again.
    counting.release.clear()
    counting.entered.clear()
    worker = threading.Thread(target=recognizer.tag)
    worker.start()
    assert counting.entered.wait(10)
    done: list = []
    update = threading.Thread(target=lambda: done.append(recognizer([Request("a", window(3, 2.0))])))
    update.start()
    update.join(0.3)
    assert update.is_alive()  # waiting for the tagger thread
    counting.release.set()
    worker.join(10)
    update.join(10)
    assert done and counting.tagged == 3


def test_a_live_streams_update_never_waits_for_the_tagger(networks: TorchNetworks) -> None:
    counting = CountingTagger(networks)
    rule = FusionRule("product", tagger_share=0.5)
    recognizer = Recognizer(counting, rule)
    first, second, third = window(0, 1.0), window(1, 1.5), window(2, 2.0)
    recognizer([Request("a", first, realtime=True)])
    out = recognizer([Request("a", second, realtime=True)])[0]  # the first window was not tagged: audio alone
    assert counting.tagged == 0
    np.testing.assert_allclose(out.audio, expected_audio(networks, rule, second, None), atol=1e-5)
    assert recognizer.tag() == 1  # only the newest window left: the first was dropped
    out = recognizer([Request("a", third, realtime=True)])[0]
    np.testing.assert_allclose(out.audio, expected_audio(networks, rule, third, second), atol=1e-5)
    # Busy tagger: the update goes on without it.
    counting.release.clear()
    worker = threading.Thread(target=recognizer.tag)
    worker.start()
    assert counting.entered.wait(10)
    fourth = window(3, 2.5)
    out = recognizer([Request("a", fourth, realtime=True)])[0]  # uses the answer on `second`, 1 s older
    np.testing.assert_allclose(out.audio, expected_audio(networks, rule, fourth, second), atol=1e-5)
    counting.release.set()
    worker.join(10)


def test_without_a_share_the_tagger_does_not_run(networks: TorchNetworks) -> None:
    counting = CountingTagger(networks)
    recognizer = Recognizer(counting, FusionRule("product"))
    assert not recognizer.uses_tagger
    recognizer([Request("a", window(0, 1.0))])
    recognizer([Request("a", window(1, 1.5))])
    assert recognizer.tag() == 0 and counting.tagged == 0


def test_a_tagger_without_an_audio_network_is_refused(tagged_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from streamrec.core.bundle import BundleError
    from streamrec.core.networks import NetworkInfo

    root = tmp_path / "bundle"
    shutil.copytree(tagged_bundle, root)
    bundle = Bundle.load(root)
    del bundle.manifest["networks"]["audio"]
    with pytest.raises(BundleError, match="no audio network"):
        NetworkInfo.from_bundle(bundle)


def test_the_runtime_runs_the_tagger_lane_the_same_however_fast_its_workers_are(
    tagged_bundle: Path, networks: TorchNetworks, runtime_clips: Path
) -> None:
    from streamrec.runtime.options import RuntimeOptions
    from streamrec.runtime.replay import recognitions

    clip = runtime_clips / "long.mp4"
    mixed = FusionRule("product", tagger_share=0.5)
    runs = [
        recognitions(clip, RuntimeOptions(bundle=tagged_bundle, fusion_rule=mixed, frame_workers=workers), networks)
        for workers in (1, 2)  # threads compete differently: the answers must not change
    ]
    alone = recognitions(clip, RuntimeOptions(bundle=tagged_bundle, fusion_rule=FusionRule("product")), networks)
    assert len(runs[0]) == len(runs[1]) == len(alone) >= 4
    for (t1, a), (t2, b) in zip(*runs):
        assert t1 == t2
        np.testing.assert_allclose(a.audio, b.audio, atol=1e-5)
    np.testing.assert_allclose(runs[0][0][1].audio, alone[0][1].audio, atol=1e-5)  # nothing to mix yet
    assert all(not np.allclose(m.audio, a.audio, atol=1e-4) for (_, m), (_, a) in zip(runs[0][1:], alone[1:]))


@pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None, reason="the musicnn wheel is not installed (scripts/install.sh)"
)
def test_train_tagger_fits_the_probe_and_writes_the_network_and_musicnns_licence(
    tiny_corpus: Path, tiny_bundle: Path, tmp_path: Path, streamrec_cli
) -> None:
    import shutil

    out = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, out)
    assert streamrec_cli("train", "tagger", "--data", str(tiny_corpus), "--out", str(out), "--workers", "1") == 0
    bundle = Bundle.load(out)
    entry = bundle.network("tagger")
    assert entry["dims"]["source"] == "MTT_musicnn" and entry["training"]["train_clips"] > 0
    assert 0 <= entry["metrics"]["test"]["f1_macro"] <= 1
    assert "Permission to use" in (out / entry["license"].split("(")[1].rstrip(")")).read_text()
    networks = load_networks(out)
    assert networks.info.has_tagger
    assert networks.tagger(np.zeros((2, networks.info.window_samples), np.float32)).shape == (2, len(bundle.classes))
    # The share stays 0 until tune chooses it: the runtime does not run the tagger yet.
    assert FusionRule.from_manifest(bundle.manifest, bundle.has("fusion")).tagger_share == 0
