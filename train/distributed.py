"""Training across processes: `torchrun --nproc-per-node N -m streamrec train ...` (one host or several).

Every process (rank) runs the same command. The trainers draw each global batch exactly as one process
would (the same seeded generator on every rank) and the training loop keeps this rank's rows of it
(`shard`), so N ranks take the same optimisation steps as one process. Rank 0 validates, decides early
stopping and writes every file; the others follow its decisions (`from_main`). Outside torchrun
(WORLD_SIZE unset or 1) every function here is a no-op and training runs as one process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import NoReturn, TypeVar

import torch
import torch.distributed as dist

from streamrec.core.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")
Batch = torch.Tensor | tuple  # a tensor, or a tuple of tensors (the fusion network's inputs), batch first

BACKENDS = ("auto", "gloo", "nccl")
DEFAULT_JOIN_TIMEOUT_S = 60.0  # seconds every process waits for the others to join before failing
# Collectives wait this long: rank 0 alone validates each epoch and evaluates the test split at the end
# while the others wait for it, which takes minutes on a large corpus.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)
LOOPBACK = "127.0.0.1"  # rendezvous address when none is given: works without DNS
DEFAULT_PORT = "29500"  # torchrun's own default
_joined = False  # whether this process set up a process group (session()); see end_process


def choose_backend(requested: str = "auto") -> str:
    """auto: NCCL when a CUDA GPU and NCCL are there (training then runs on the GPU), else gloo (CPU)."""
    if requested not in BACKENDS:
        raise UserError(f"unknown distributed backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        if requested == "nccl" and not (torch.cuda.is_available() and dist.is_nccl_available()):
            raise UserError("--dist-backend nccl needs a CUDA GPU and a torch build with NCCL")
        return requested
    return "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"


@contextmanager
def session(backend: str = "auto", join_timeout_s: float = DEFAULT_JOIN_TIMEOUT_S) -> Iterator[None]:
    """Joins this process to the others when launched by torchrun (WORLD_SIZE > 1); a no-op otherwise.

    A peer that does not join within join_timeout_s fails with a UserError (one line), not a hang.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        yield
        return
    chosen = choose_backend(backend)
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    os.environ.setdefault("MASTER_ADDR", LOOPBACK)
    os.environ.setdefault("MASTER_PORT", DEFAULT_PORT)
    if int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world and "lo" in {n for _, n in socket.if_nameindex()}:
        # One host: gloo talks over loopback rather than the address the host name resolves to (if it does).
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    address = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    try:  # the rendezvous on its own, so that joining has its own, short timeout
        if rank != 0 and not os.environ.get("TORCHELASTIC_USE_AGENT_STORE"):
            _wait_for_listener(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), join_timeout_s)
        store, _, _ = next(dist.rendezvous("env://", timeout=timedelta(seconds=join_timeout_s)))
    except (RuntimeError, ValueError, OSError) as e:  # DistStoreError, DistNetworkError, TimeoutError
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"distributed training: rank {rank} of {world} could not meet the other processes at {address} "
            f"within {join_timeout_s:g} s ({reason}); start all of them, or raise --dist-timeout"
        ) from e
    store.set_timeout(COLLECTIVE_TIMEOUT)
    if chosen == "nccl":
        torch.cuda.set_device(local)
    dist.init_process_group(
        chosen, store=dist.PrefixStore("default_pg", store), rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT
    )
    global _joined
    _joined = True
    if rank == 0:
        log.info("distributed training: %d processes, backend %s, rendezvous %s", world, chosen, address)
    try:
        yield
        # Every rank done before any tears its process group down: rank 0 finishes later (it evaluates and
        # writes the bundle), and a gloo group torn down while a peer's is still live aborted rank 0 once at
        # exit ("terminate called without an active exception", a clean-clone CI run).
        dist.barrier()
    finally:
        dist.destroy_process_group()


def took_part() -> bool:
    """Whether this process set up a process group (and must leave by end_process)."""
    return _joined


def end_process(code: int) -> NoReturn:
    """Exits a process that took part in a session, once its work is written, without the interpreter's
    teardown: torch's gloo objects freed there abort the process now and then ("terminate called without
    an active exception", SIGABRT, twice in clean-clone CI runs, after every file was written), which
    torchrun then reports as a failed run. The process group is already destroyed; logs and output are
    flushed here."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def _wait_for_listener(host: str, port: int, timeout_s: float) -> None:
    """Waits for rank 0's rendezvous server to accept connections. c10d's client would wait too, but
    logs a C++ stack trace on stderr when it gives up: a missing rank 0 should be one line."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=max(0.1, deadline - time.monotonic())):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise TimeoutError(f"nothing accepted connections there: {e.strerror or e}") from e
            time.sleep(0.2)


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0: the process that validates, shows progress and writes files."""
    return rank() == 0


def device() -> torch.device:
    """Where the training steps run: this process's GPU under NCCL, else the CPU."""
    if active() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@contextmanager
def local_main_first() -> Iterator[None]:
    """The first process of each host runs the body first (filling a cache), the others after it (reading it)."""
    first = int(os.environ.get("LOCAL_RANK", "0")) == 0 if active() else True
    if not first:
        dist.barrier()
    yield
    if first and active():
        dist.barrier()


@contextmanager
def host_threads() -> Iterator[None]:
    """For work rank 0 does alone while this host's other ranks wait (blocked in a collective, not
    spinning): on the CPU it takes their threads too (torchrun gives each process one)."""
    if not active() or device().type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, min(os.cpu_count() or 1, before * local)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def from_main(value: T) -> T:
    """The value rank 0 holds, on every rank (any picklable object); also waits for rank 0 to get here."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(value: T) -> list[T]:
    """Every rank's value, in rank order, on every rank."""
    if not active():
        return [value]
    out: list = [None] * world_size()
    dist.all_gather_object(out, value)
    return out


def sum_over_ranks(value: float) -> float:
    if not active():
        return value
    total = torch.tensor([value], dtype=torch.float64, device=device())
    dist.all_reduce(total)
    return float(total.item())


def _rows(batch: Batch, index: slice) -> Batch:
    return tuple(_rows(b, index) for b in batch) if isinstance(batch, tuple) else batch[index]


def to_device(batch: Batch, where: torch.device) -> Batch:
    return tuple(to_device(b, where) for b in batch) if isinstance(batch, tuple) else batch.to(where)


def shard(inputs: Batch, targets: torch.Tensor) -> tuple[Batch, torch.Tensor, float]:
    """This rank's rows of a global batch (rows rank, rank + N, ...: DistributedSampler's order), and the
    weight of its mean loss: rows / (global rows / N), so that the gradients DDP averages over ranks equal
    the global batch's mean-loss gradient even when the rows do not split evenly.

    A batch with fewer than 2 rows per rank is not split (batch norm needs 2 rows): every rank runs all of
    it with weight 1, and the average of their gradients is again the global batch's.
    """
    n, world = len(targets), world_size()
    if world == 1 or n < 2 * world:
        return inputs, targets, 1.0
    index = slice(rank(), None, world)
    mine = _rows(targets, index)
    return _rows(inputs, index), mine, len(mine) * world / n


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """DDP around the module when distributed, the module itself otherwise."""
    if not active():
        return module
    where = device()
    # static_graph: parameters outside the loss's graph (frozen extractors) are expected, not an error, and
    # the unused ones are found once, not by walking the graph at every step.
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[where.index] if where.type == "cuda" else None, static_graph=True
    )


def sync_buffers(module: torch.nn.Module) -> None:
    """Rank 0's buffers (batch-norm statistics, updated on each rank's own rows) on every rank."""
    if active():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def check_identical(module: torch.nn.Module, what: str) -> None:
    """Raises on every rank when the ranks' weights differ: a broken step would otherwise go unseen."""
    if not active():
        return
    digest = hashlib.sha1()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    digests = gather(digest.hexdigest())
    if len(set(digests)) > 1:
        raise RuntimeError(f"{what}: the processes ended with different weights ({', '.join(d[:8] for d in digests)})")
