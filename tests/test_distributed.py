"""Training across processes (train/distributed.py, train/loop.py fit): two gloo ranks on the CPU train
like one process on the same global batches, end with identical weights, resume, and a missing peer
fails with one line instead of hanging."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from streamrec.train import distributed
from streamrec.train.loop import FitOptions, FitResult, fit

BATCH_SIZES = (10, 7, 10, 3)  # per epoch: even, uneven (4 + 3 rows) and too small to split (every rank runs it)
EPOCHS = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TinyNet(torch.nn.Module):
    """A small classifier with a parameter outside the loss's graph, as frozen extractors are."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
        self.unused = torch.nn.Linear(2, 2)  # requires grad, never in the graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny_task(seed: int = 0) -> tuple[torch.nn.Module, object, object]:
    """A small classifier on generated 3-class data, batches(epoch) drawn as the trainers draw theirs
    (seeded by epoch), and validate()."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 2, (3, 8))
    labels = rng.integers(0, 3, 80)
    x = (centres[labels] + rng.normal(0, 1.5, (80, 8))).astype(np.float32)
    train_x, train_y = torch.from_numpy(x[:60]), torch.from_numpy(labels[:60])
    val_x, val_y = torch.from_numpy(x[60:]), torch.from_numpy(labels[60:])
    torch.manual_seed(seed)
    model = TinyNet()

    def batches(epoch: int):
        order = np.random.default_rng([seed, epoch]).permutation(60)
        start = 0
        for size in BATCH_SIZES:
            chosen = torch.from_numpy(order[start : start + size])
            start += size
            yield train_x[chosen], train_y[chosen]

    def validate() -> float:
        validate.calls += 1
        with torch.no_grad():
            return float((model(val_x).argmax(1) == val_y).float().mean())

    validate.calls = 0
    return model, batches, validate


def run_fit(epochs: int, state_path: Path | None = None, resume: bool = False) -> tuple[FitResult, dict, int]:
    model, batches, validate = tiny_task()
    options = FitOptions(max_epochs=epochs, patience=EPOCHS, learning_rate=0.05)
    parameters = [p for name, p in model.named_parameters() if not name.startswith("unused")]
    result = fit(
        model,
        batches,
        torch.nn.functional.cross_entropy,
        validate,
        options,
        state_path=state_path,
        resume=resume,
        parameters=parameters,
    )
    return result, {k: v.clone() for k, v in model.state_dict().items()}, validate.calls


def rank_worker(rank: int, port: int, out: str) -> None:
    """One of two ranks: a straight run, then the same run interrupted after 2 epochs and resumed."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2", "RANK": str(rank)})
    os.environ.update({"LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    with distributed.session("auto", join_timeout_s=30):
        straight, weights, calls = run_fit(EPOCHS)
        state = Path(out) / "state.pt"
        run_fit(2, state_path=state)
        resumed, resumed_weights, _ = run_fit(EPOCHS, state_path=state, resume=True)
        torch.save(
            {
                "history": straight.history,
                "weights": weights,
                "validate_calls": calls,
                "backend": torch.distributed.get_backend(),
                "resumed_history": resumed.history,
                "resumed_weights": resumed_weights,
            },
            Path(out) / f"rank{rank}.pt",
        )
    distributed.end_process(0)  # as the CLI ends a training process (the interpreter's teardown can abort)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_two_gloo_ranks_train_like_one_process_and_resume(tmp_path: Path) -> None:
    context = mp.spawn(rank_worker, args=(free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + 150
    while not context.join(timeout=5):
        assert time.monotonic() < deadline, "the two ranks did not finish"
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    single, weights, _ = run_fit(EPOCHS)

    assert ranks[0]["backend"] == "gloo"
    for name, tensor in ranks[0]["weights"].items():  # both ranks hold the same weights, bit for bit
        assert torch.equal(tensor, ranks[1]["weights"][name]), name
        torch.testing.assert_close(tensor, weights[name], atol=1e-5, rtol=1e-4)  # ... and one process's
    # The loss of every epoch is the global batches' loss, as one process computes it.
    np.testing.assert_allclose([h["loss"] for h in ranks[0]["history"]], [h["loss"] for h in single.history], rtol=1e-5)
    assert [h["loss"] for h in ranks[1]["history"]] == [h["loss"] for h in ranks[0]["history"]]
    assert [h["val_f1"] for h in ranks[1]["history"]] == [h["val_f1"] for h in single.history]
    assert (ranks[0]["validate_calls"], ranks[1]["validate_calls"]) == (EPOCHS, 0)  # rank 0 validates alone
    # Interrupted after 2 epochs and resumed: the same run as the straight one.
    for rank in ranks:
        assert [h["loss"] for h in rank["resumed_history"]] == [h["loss"] for h in rank["history"]]
        for name, tensor in rank["resumed_weights"].items():
            assert torch.equal(tensor, rank["weights"][name]), name


def test_one_process_is_untouched() -> None:
    """Outside torchrun nothing is split or wrapped: the loop is the single-process loop."""
    inputs, targets = torch.zeros(6, 2), torch.arange(6)
    assert not distributed.active()
    assert distributed.shard(inputs, targets) == (inputs, targets, 1.0)
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model) is model
    assert distributed.from_main({"a": 1}) == {"a": 1} and distributed.gather(3) == [3]
    assert distributed.device() == torch.device("cpu")
    assert distributed.choose_backend("gloo") == "gloo"
    assert distributed.choose_backend() == ("nccl" if torch.cuda.is_available() else "gloo")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("rank", [0, 1])
def test_a_missing_peer_fails_with_one_line_within_the_timeout(tmp_path: Path, rank: int) -> None:
    """Rank 0 waits for a rank 1 that never starts (and rank 1 for a rank 0): exit 2, one line, no hang."""
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "MASTER_PORT": str(free_port())}
    env.pop("MASTER_ADDR", None)  # the loopback default
    command = [sys.executable, "-m", "streamrec", "train", "audio", "--data", str(tmp_path), "--out", str(tmp_path)]
    started = time.monotonic()
    done = subprocess.run(
        [*command, "--dist-timeout", "3"], capture_output=True, text=True, timeout=90, env=env, cwd=tmp_path
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and "could not meet the other processes at 127.0.0.1:" in lines[0], done.stderr
    assert f"rank {rank} of 2" in lines[0] and "within 3 s" in lines[0]
    assert time.monotonic() - started < 60


@pytest.mark.slow
@pytest.mark.timeout(600)  # the tiny corpus fixture included, on a loaded 2-core machine
def test_train_audio_runs_unchanged_under_torchrun(tiny_corpus: Path, tmp_path: Path) -> None:
    """`torchrun --nproc-per-node 2 -m streamrec train audio`: one bundle, one summary line, one progress bar.

    Its loss is not compared with one process's here: with one global batch per epoch on the tiny corpus,
    dropout alone moves it by tens of per cent; the loop's equivalence is tested above without dropout.
    """
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "bundle"
    command = [str(torchrun), "--nproc-per-node", "2", "-m", "streamrec", "train", "audio"]
    options = ["--data", str(tiny_corpus), "--out", str(out), "--epochs", "2", "--channels", "4,8"]
    done = subprocess.run(
        [*command, *options, "--embedding-dim", "16", "--workers", "1", "--background"],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert output.count("audio han-uc-1s-128mel: test Hit@1") == 1, output  # rank 0's summary only
    assert output.count("max epochs (2) reached") == 1  # rank 1 logs no progress
    assert output.count("distributed training: 2 processes") == 1
    manifest = json.loads((out / "manifest.json").read_text())
    training = manifest["networks"]["audio"]["training"]
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    assert all(np.isfinite(h["loss"]) for h in training["history"])
    assert (out / ".train" / "audio.pt").is_file() and (out / "reports" / "audio_han-uc-1s-128mel.json").is_file()
