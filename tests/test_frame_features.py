"""Cached frame-trunk features and the picture styles drawn as extra training views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.core.dataset import Clip, ClipRecord
from streamrec.core.models.video import FrameNet, VideoDims
from streamrec.train.frame_features import PICTURE_STYLES, styled, trunk_features


def test_styles_redraw_pictures_in_range_and_refuse_unknown_ones() -> None:
    images = torch.rand(2, 3, 32, 32)
    gray, poster = styled(images, "gray"), styled(images, "poster")
    assert gray.shape == poster.shape == images.shape
    assert 0 <= float(gray.min()) and float(gray.max()) <= 1
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])  # no colour left
    assert set(poster.unique().tolist()) <= {0.0, 0.5, 1.0}  # three flat levels
    with pytest.raises(ValueError, match="unknown picture style"):
        styled(images, "sepia")


def test_styled_views_follow_the_frames_and_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    model = FrameNet(VideoDims("efficientnet_lite0", 3, embedding_dim=8)).eval()  # ImageNet's weights
    media = tmp_path / "clip.mp4"
    media.write_bytes(b"stands in for the clip file: its identity keys the cache")
    frames = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    clip = Clip(ClipRecord(media, "clip.mp4", "a", ("a",), "train"), None, frames, np.array([0.0, 1.0]))
    audio_only = Clip(ClipRecord(media, "clip.mp4", "a", ("a",), "train"), np.zeros(10, np.float32), None, None)

    plain = trunk_features([clip, audio_only], model, cache_dir=tmp_path, progress=False)
    both = trunk_features([clip, audio_only], model, cache_dir=tmp_path, progress=False, styles=PICTURE_STYLES)
    assert plain[1] is None and both[1] is None
    assert plain[0].shape == (2, 2, 1280) and both[0].shape == (2, 2 + 2 * len(PICTURE_STYLES), 1280)
    np.testing.assert_array_equal(both[0][:, :2], plain[0])  # views 0 and 1: the frames as they are, and flipped
    styled_view, frames_view = both[0][:, 2], both[0][:, 0]
    assert np.abs(styled_view - frames_view).max() > 0.01 * np.abs(frames_view).max()  # another picture

    calls = []
    monkeypatch.setattr(model.trunk, "forward", lambda x: calls.append(len(x)) or torch.zeros(len(x), 1280))
    again = trunk_features([clip], model, cache_dir=tmp_path, progress=False, styles=PICTURE_STYLES)
    assert not calls  # every view came from the cache
    np.testing.assert_array_equal(again[0], both[0])


def test_mixup_blends_features_and_labels_alike() -> None:
    from streamrec.train.train_video import mix_features

    features, labels = torch.eye(4), torch.tensor([0, 1, 2, 0])
    mixed, targets = mix_features(features, labels, 0.4, n_classes=3, rng=np.random.default_rng(0))
    assert mixed.shape == (4, 4) and targets.shape == (4, 3)
    assert torch.allclose(targets.sum(dim=1), torch.ones(4))
    # Each row is a convex blend of itself and one partner, and its target carries the same weights: the
    # weight a row keeps of its own one-hot feature is the weight of its own label.
    for row in range(4):
        own = float(mixed[row, row])
        assert 0.0 <= own <= 1.0 and float(mixed[row].sum()) == pytest.approx(1.0)
        assert float(targets[row, labels[row]]) >= own - 1e-6


@pytest.mark.slow  # tiny_corpus
def test_train_video_cli_takes_mixup_and_weight_decay(tiny_corpus: Path, tmp_path: Path, streamrec_cli) -> None:
    from streamrec.core.bundle import Bundle

    common = ("train", "video", "--data", str(tiny_corpus), "--epochs", "1", "--workers", "1")
    out = tmp_path / "mixed"
    assert streamrec_cli(*common, "--out", str(out), "--mixup", "0.4", "--weight-decay", "1e-4") == 0
    training = Bundle.load(out).network("video")["training"]
    assert (training["mixup"], training["options"]["weight_decay"]) == (0.4, 1e-4)
    assert training["setup"].endswith("-mixup0.4")
    assert streamrec_cli(*common, "--out", str(tmp_path / "a"), "--mixup", "0") == 2  # alpha must be positive
    assert streamrec_cli(*common, "--out", str(tmp_path / "b"), "--weight-decay", "-1") == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow  # tiny_corpus
def test_train_video_on_the_corpus_val_split_only_when_another_set_chooses_the_epoch(
    tiny_corpus: Path, tmp_path: Path, streamrec_cli
) -> None:
    import shutil

    from streamrec.core.bundle import Bundle
    from streamrec.core.dataset import read_labels

    common = ("train", "video", "--data", str(tiny_corpus), "--epochs", "1", "--workers", "1", "--train-on-val")
    assert streamrec_cli(*common, "--out", str(tmp_path / "a")) == 2  # nothing else would choose the epoch
    assert streamrec_cli(*common, "--out", str(tmp_path / "b"), "--val-data", str(tiny_corpus)) == 2
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    other = shutil.copytree(tiny_corpus, tmp_path / "other")  # stands in for a field-dev set
    out = tmp_path / "trainval"
    assert streamrec_cli(*common, "--out", str(out), "--val-data", str(other)) == 0
    training = Bundle.load(out).network("video")["training"]
    with_video = [r for r in read_labels(tiny_corpus)[0] if not r.rel_path.endswith((".wav", ".m4a"))]
    assert training["train_splits"] == ["train", "val"] and training["setup"].endswith("-trainval")
    assert training["n_train"] == sum(r.split in ("train", "val") for r in with_video)
    # The bundle's "training_data" is written by the command: the dataset, its clips and its sources' licences.
    data = Bundle.load(out).manifest["training_data"]
    rows = read_labels(tiny_corpus)[0]
    assert data["clips"] == len(rows) and data["corpus"].startswith("Built by `streamrec data build")
    assert sum(sum(splits.values()) for splits in data["per_class"].values()) == len(rows)
    assert {"fluid-soundfont-gm", "espeak-ng"} <= set(data["licences"]) and "frame_backbone_weights" in data


def test_a_tuned_top_folds_into_the_plain_trunk() -> None:
    """TunedTop trains the trunk's top convolution on block outputs; fold() writes the change into the trunk, so the
    bundle's frame network computes what training saw, in its usual format."""
    import torch

    from streamrec.core.models.video import FrameNet, VideoDims
    from streamrec.train.train_video import TOP_STEP, TunedTop

    torch.manual_seed(0)
    model = FrameNet(VideoDims("efficientnet_lite0", 3, embedding_dim=8)).eval()  # ImageNet's weights
    tuned = TunedTop(model)
    tuned.train()
    assert not model.trunk.training and tuned.model.head.training  # ImageNet's batch-norm statistics stay
    blocks_before = {k: v.clone() for k, v in model.trunk.state_dict().items() if "_conv_head" not in k}
    with torch.no_grad():
        tuned.delta.normal_(std=0.2)
    images = torch.rand(2, 3, 224, 224)
    tuned.eval()
    with torch.no_grad():
        expected = tuned.pooled(model.trunk.block_maps(images))
        original = model.trunk(images)
        tuned.fold()
        folded = model.trunk(images)
    assert float((original - expected).abs().max()) > 0.1 * float(original.abs().max())  # the change matters
    torch.testing.assert_close(folded, expected, atol=1e-4, rtol=1e-4)
    assert float(tuned.delta.detach().abs().max()) == 0.0 and TOP_STEP < 1
    after = model.trunk.state_dict()
    assert all(torch.equal(after[k], v) for k, v in blocks_before.items())  # the blocks below are untouched


@pytest.mark.slow  # tiny_corpus
def test_train_video_tune_top_changes_only_the_top_convolution(
    tiny_corpus: Path, tmp_path: Path, streamrec_cli
) -> None:
    import torch

    from streamrec.core.bundle import Bundle
    from streamrec.core.models import load_network
    from streamrec.core.models.video import FrameNet

    common = ("train", "video", "--data", str(tiny_corpus), "--epochs", "2", "--workers", "1", "--tune-top")
    assert streamrec_cli(*common, "--out", str(tmp_path / "styled"), "--picture-styles", "gray") == 2
    out = tmp_path / "top"
    assert streamrec_cli(*common, "--out", str(out), "--lr", "1e-2") == 0
    bundle = Bundle.load(out)
    training = bundle.network("video")["training"]
    assert training["setup"].endswith("-top") and training["trunk"].startswith("top convolution fine-tuned")
    trained = load_network(bundle, "video").trunk.state_dict()
    stock = FrameNet(load_network(bundle, "video").dims).trunk.state_dict()  # ImageNet's weights
    changed = {k for k in stock if not torch.equal(stock[k], trained[k])}
    assert changed == {"net._conv_head.weight"}


def test_frame_heads_mean_their_probabilities_and_keep_the_first_heads_embedding(tmp_path: Path) -> None:
    from streamrec.core.bundle import Bundle
    from streamrec.core.models import load_network

    torch.manual_seed(0)
    net = FrameNet(VideoDims("efficientnet_lite0", 4, embedding_dim=8, pretrained=False, heads=3)).eval()
    trunk = torch.randn(5, 1280)
    with torch.no_grad():
        members = [torch.softmax(head(trunk), dim=1) for head in net.head.members]
        assert not torch.allclose(members[0], members[1])  # the heads differ, so the mean is a real mean
        mean = torch.softmax(net.head(trunk), dim=1)
        assert torch.allclose(mean, torch.stack(members).mean(dim=0), atol=1e-6)
        assert torch.equal(net.head.project(trunk), net.head.members[0].project(trunk))
        images = torch.rand(2, 3, 96, 96)
        expected = net(images)
    bundle = Bundle.create(tmp_path / "bundle", ("a", "b", "c", "d"))
    bundle.save_network("video", net, "efficientnet_lite0", net.dims.to_dict(), {})
    loaded = load_network(Bundle.load(bundle.root), "video")
    assert loaded.dims.heads == 3
    with torch.no_grad():
        assert torch.allclose(loaded(images), expected, atol=1e-6)
    with pytest.raises(ValueError, match="one head or more"):
        VideoDims("efficientnet_lite0", 4, heads=0)


@pytest.mark.slow  # tiny_corpus
def test_train_frame_heads_merges_bundles_heads_into_one_network(
    tiny_corpus: Path, tmp_path: Path, streamrec_cli
) -> None:
    import shutil

    from streamrec.core.bundle import Bundle
    from streamrec.core.models import load_network

    common = ("train", "video", "--data", str(tiny_corpus), "--epochs", "1", "--workers", "1", "--imagenet-prior")
    for seed in (0, 1):
        assert streamrec_cli(*common, "--out", str(tmp_path / f"s{seed}"), "--seed", str(seed)) == 0
    out = shutil.copytree(tmp_path / "s0", tmp_path / "merged")  # the bundle's other networks stay
    merge = ("train", "frame-heads", "--data", str(tiny_corpus), "--workers", "1")
    assert streamrec_cli(*merge, str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(out)) == 0
    entry = Bundle.load(out).network("video")
    assert entry["dims"]["heads"] == 2 and entry["frames"] == Bundle.load(tmp_path / "s0").network("video")["frames"]
    assert [m["bundle"] for m in entry["training"]["members"]] == [str(tmp_path / "s0"), str(tmp_path / "s1")]
    assert {"test", "val"} <= set(entry["metrics"]) and (out / "reports" / "video_2_heads_confusion.png").is_file()
    merged = load_network(Bundle.load(out), "video")
    parts = [load_network(Bundle.load(tmp_path / f"s{seed}"), "video") for seed in (0, 1)]
    images = torch.rand(3, 3, 224, 224)
    with torch.no_grad():
        expected = torch.stack([torch.softmax(p(images), dim=1) for p in parts]).mean(dim=0)
        assert torch.allclose(torch.softmax(merged(images), dim=1), expected, atol=1e-5)
        assert torch.allclose(merged.embed(images), parts[0].embed(images), atol=1e-5)
    # A merged network merges again (its heads count one by one); bad input is a one-line error, nothing written.
    assert streamrec_cli(*merge, str(out), str(tmp_path / "s1"), "--out", str(tmp_path / "three")) == 0
    assert Bundle.load(tmp_path / "three").network("video")["dims"]["heads"] == 3
    assert streamrec_cli(*merge, str(tmp_path / "s0"), "--out", str(tmp_path / "one")) == 2
    plain = tmp_path / "plain"
    assert streamrec_cli(*common[:-1], "--out", str(plain), "--seed", "2") == 0  # no ImageNet prior: other dims
    assert streamrec_cli(*merge, str(tmp_path / "s0"), str(plain), "--out", str(tmp_path / "mixed")) == 2
    assert not (tmp_path / "one").exists() and not (tmp_path / "mixed").exists()
