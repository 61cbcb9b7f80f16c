"""The runtime's worker threads beside the inference loop: the frame workers embed frames as they arrive
(Recognizer.prime), so the update that needs one finds it embedded or waits for it; the tagger thread tags the
windows updates left (Recognizer.tag) at the lowest CPU priority."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

IDLE_WAIT = 0.05  # seconds a worker sleeps when it found nothing to do (a wake event cuts it short)


def lowest_priority() -> None:
    """Gives the calling thread the lowest CPU priority (nice 19, this thread only): the tagger thread, so that under
    load it gives way to the inference loop and the frame workers, and live streams, which do not wait for it, keep
    real time. Its engine runs on the thread itself (one intra-op thread: streamrec.engines.networks); torch's own
    pool, on the torch backend, keeps normal priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError) as e:  # not Linux, or not allowed: it runs at normal priority
        log.info("the tagger thread keeps its CPU priority (%s)", e)


def work(
    name: str,
    step: Callable[[], int],
    wake: threading.Event,
    stop: threading.Event,
    failed: Callable[[BaseException], None],
    lowest: bool = False,
) -> None:
    """A worker's loop: step() until `stop`, waiting on `wake` when it did nothing; a failure is logged and given
    to `failed` (which stops the run). `lowest`: at the lowest CPU priority."""
    if lowest:
        lowest_priority()
    try:
        while not stop.is_set():
            wake.clear()
            if not step():
                wake.wait(IDLE_WAIT)
    except BaseException as e:
        log.exception("the %s loop failed", name)
        failed(e)
