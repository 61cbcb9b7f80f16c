"""train/musicnn.py: the TensorFlow checkpoint reader and the torch port of musicnn against outputs of the original
(TensorFlow 2.15 and librosa 0.11 on a fixed waveform: tests/data/musicnn_reference.npz)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from streamrec.core.models.tagger import EMBEDDING_DIM, MusicnnFrontend
from streamrec.train.musicnn import checkpoint_prefix, load_musicnn, read_tf_checkpoint

REFERENCE = Path(__file__).parent / "data" / "musicnn_reference.npz"
needs_musicnn = pytest.mark.skipif(
    importlib.util.find_spec("musicnn") is None, reason="the musicnn wheel is not installed (scripts/install.sh)"
)


def reference_waveform() -> np.ndarray:
    """The 1 s at 16 kHz the reference was computed on: a decaying 220 Hz tone, a 330 Hz square wave from 0.5 s,
    a little noise."""
    t = np.arange(16000) / 16000
    noise = np.random.default_rng(0).standard_normal(16000)
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-2 * t)
    square = 0.2 * np.sign(np.sin(2 * np.pi * 330 * t)) * (t > 0.5)
    return (tone + square + 0.01 * noise).astype(np.float32)


def test_frontend_matches_librosa() -> None:
    reference = np.load(REFERENCE)
    with torch.no_grad():
        mel = MusicnnFrontend()(torch.from_numpy(reference_waveform())[None])[0].numpy()
    assert mel.shape == reference["mel"].shape == (63, 96)
    np.testing.assert_allclose(mel, reference["mel"], atol=1e-3)


@needs_musicnn
def test_port_matches_tensorflow() -> None:
    reference = np.load(REFERENCE)
    net = load_musicnn("MTT_musicnn")
    with torch.no_grad():
        embedding, logits = net(torch.from_numpy(reference["mel"])[None])
    assert embedding.shape == (1, EMBEDDING_DIM)
    np.testing.assert_allclose(logits[0].numpy(), reference["logits"], atol=1e-3)
    np.testing.assert_allclose(embedding[0, :753].numpy(), reference["mean_pool"], atol=1e-3)
    np.testing.assert_allclose(embedding[0, 753:].numpy(), reference["max_pool"], atol=1e-3)


@needs_musicnn
def test_reader_reads_every_tensor() -> None:
    tensors = read_tf_checkpoint(checkpoint_prefix("MSD_musicnn"))
    assert tensors["conv2d/kernel"].shape == (7, 38, 1, 204)  # timbral filters over 0.4 of the 96 bands
    assert tensors["dense_1/kernel"].shape == (200, 50)
    assert all(np.isfinite(t).all() for t in tensors.values() if t.dtype.kind == "f")


def test_reader_refuses_other_files(tmp_path: Path) -> None:
    (tmp_path / "x.index").write_bytes(b"\0" * 64)
    (tmp_path / "x.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(ValueError, match="not a TensorFlow checkpoint index"):
        read_tf_checkpoint(tmp_path / "x")
