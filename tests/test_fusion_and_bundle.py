"""The late-fusion network, the frame network's head, model bundles, and `streamrec eval` on a trained bundle."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.core.bundle import Bundle, BundleError
from streamrec.core.models import load_network
from streamrec.core.models.fusion import FusionDims, LateFusion
from streamrec.core.models.video import FrameNet, VideoDims
from streamrec.core.scores import fusion_inputs, slot_indices, spread_indices


@pytest.mark.parametrize("k", [1, 5, 10])
def test_fusion_shapes_for_several_k(k: int) -> None:
    dims = FusionDims(n_classes=13, audio_dim=256, video_dim=64, k_frames=k, common_dim=32)
    fusion = LateFusion(dims).eval()
    audio, frames, present = torch.randn(4, 256), torch.randn(4, k, 64), torch.ones(4, 2)
    assert fusion.stack(audio, frames, present).shape == (4, k + 1, 32)  # the paper's (k + 1, n)
    assert fusion(audio, frames, present).shape == (4, 13)


def test_missing_modality_is_masked_out() -> None:
    dims = FusionDims(n_classes=5, audio_dim=8, video_dim=6, k_frames=3, common_dim=4)
    fusion = LateFusion(dims).eval()
    frames = torch.randn(1, 3, 6)
    no_audio = torch.tensor([[0.0, 1.0]])
    with torch.no_grad():
        a = fusion(torch.randn(1, 8), frames, no_audio)
        b = fusion(torch.randn(1, 8) * 100, frames, no_audio)  # whatever sits in the absent slot
    torch.testing.assert_close(a, b)
    # fusion_inputs builds the same masks from what a stream has
    audio_in, frames_in, present = fusion_inputs(None, np.random.randn(2, 6), 3, 8, 6)
    assert audio_in.shape == (1, 8) and frames_in.shape == (1, 3, 6) and present.tolist() == [[0.0, 1.0]]
    assert not audio_in.any() and audio_in.dtype == frames_in.dtype == present.dtype == np.float32
    _, frames_in, present = fusion_inputs(np.random.randn(4, 8), None, 3, 8, 6)
    assert present.tolist() == [[1.0, 0.0]] * 4 and frames_in.shape == (4, 3, 6) and not frames_in.any()
    # n audio windows share the frames: every row gets the same k slots
    _, frames_in, _ = fusion_inputs(np.random.randn(2, 8), np.arange(12.0).reshape(2, 6), 3, 8, 6)
    assert (frames_in[0] == frames_in[1]).all() and frames_in[0, :, 0].tolist() == [0.0, 6.0, 0.0]


def test_frame_slots_keep_the_newest_and_repeat_when_short() -> None:
    embeddings = torch.arange(5.0).unsqueeze(1)
    assert embeddings[slot_indices(5, 3)].flatten().tolist() == [2.0, 3.0, 4.0]
    assert embeddings[:2][slot_indices(2, 5)].flatten().tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    assert spread_indices(9, 3).tolist() == [0, 4, 8] and spread_indices(2, 5).tolist() == [0, 1]


@pytest.mark.slow  # an EfficientNet-Lite0 saved, loaded and run
def test_bundle_round_trip_gives_the_same_outputs(tmp_path: Path) -> None:
    classes = ("a", "b", "c")
    video = FrameNet(VideoDims("efficientnet_lite0", 3, embedding_dim=16, pretrained=False)).eval()
    fusion = LateFusion(FusionDims(3, audio_dim=8, video_dim=16, k_frames=2, common_dim=4)).eval()
    bundle = Bundle.create(tmp_path / "b", classes)
    bundle.save_network("video", video, "efficientnet_lite0", video.dims.to_dict(), {})
    bundle.save_network("fusion", fusion, "late_fusion", fusion.dims.to_dict(), {"scheme": "frozen"})
    loaded = Bundle.load(tmp_path / "b")
    assert loaded.classes == classes and loaded.manifest["software"]["torch"] == torch.__version__
    images = torch.rand(2, 3, 224, 224)
    inputs = (torch.randn(2, 8), torch.randn(2, 2, 16), torch.ones(2, 2))
    with torch.no_grad():
        torch.testing.assert_close(load_network(loaded, "video")(images), video(images))
        torch.testing.assert_close(load_network(loaded, "fusion")(*inputs), fusion(*inputs))
    # a changed weights file is caught by its hash
    (tmp_path / "b" / "fusion.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(BundleError, match="sha256"):
        load_network(Bundle.load(tmp_path / "b"), "fusion")


@pytest.mark.slow  # tiny_corpus + tiny_bundle (a training run)
def test_eval_json_has_every_contract_key_and_reports_skipped_rows(
    tiny_corpus: Path, tiny_bundle: Path, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(tiny_corpus, data)
    with open(data / "labels.csv", "a", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerow(["clips/gone.mp4", "violin", "test"])
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamrec",
            "eval",
            str(data),
            "--model",
            str(tiny_bundle),
            "--json",
            str(out),
            "--workers",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert {"classes", "dataset", "split", "model", "backend", "skipped", "audio", "video", "fusion"} <= set(result)
    assert result["classes"] == ["drums", "piano", "violin"] and result["split"] == "test"
    line = len((data / "labels.csv").read_text(encoding="utf-8").splitlines())  # the row appended last
    assert result["skipped"] == [{"path": "clips/gone.mp4", "reason": "file not found", "line": line}]
    for modality in ("audio", "video", "fusion"):
        block = result[modality]
        assert {"n", "hit1", "hit3", "f1_macro", "per_class_f1", "confusion"} <= set(block)
        assert 0 <= block["hit1"] <= block["hit3"] <= 1 and 0 <= block["f1_macro"] <= 1
        assert len(block["confusion"]) == 3
    test_rows = [r for r in csv.DictReader(open(tiny_corpus / "labels.csv")) if r["split"] == "test"]
    assert result["fusion"]["n"] == len(test_rows)  # fusion covers every clip
    assert result["audio"]["n"] == sum(r["has_audio"] == "1" for r in test_rows)
    assert out.with_suffix(".png").stat().st_size > 10_000  # the three confusion matrices


@pytest.mark.slow  # tiny_corpus
def test_eval_without_a_bundle_is_one_line(tmp_path: Path, tiny_corpus: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamrec", "eval", str(tiny_corpus), "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "not a model bundle" in done.stderr
