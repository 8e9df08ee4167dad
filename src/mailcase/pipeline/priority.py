"""Background threads: processing yields the CPU to accepting mail.

Accepting is what remote senders wait for (and time out on); processing happens after, from
storage, and nothing is lost by doing it a little later. So when the SMTP acceptors run in
processes of their own, the parent's processing threads (the spool mover and the pipeline)
run at a lower CPU priority: under a burst the acceptors get the cores and processing catches
up when they are idle. This is Exim's `queue_only_load` idea (under load, queue now, process
later) done by the scheduler. When the machine is not saturated it changes nothing. A flood
must not pile up unprocessed for ever, though: once processing has been behind for
`pipeline.catch_up_after` seconds, the pipeline runs at normal priority until it has caught up
(`Pipeline.current_executor`), and accepting then shares the CPU with it.

Linux keeps the nice value per thread, so only these threads are lowered (and the threads they
start inherit it); the event loop thread of the parent, which starts the acceptors, keeps its
own. Not for an acceptor in the same process: a low-priority thread holding the GIL would then
stall the SMTP sessions themselves.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

__all__ = ["background_executor", "lower_thread_priority"]

log = logging.getLogger(__name__)


def lower_thread_priority(increment: int) -> None:
    """Add `increment` to the calling thread's nice value (Linux; elsewhere: no effect)."""
    if increment <= 0:
        return
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + increment))
    except (OSError, AttributeError) as e:  # not Linux, or not allowed: run at normal priority
        log.warning("could not lower the priority of background thread: %s", e)


def background_executor(name: str, nice: int, workers: int = 1) -> ThreadPoolExecutor:
    """A thread pool whose threads run `nice` steps below the normal priority."""
    return ThreadPoolExecutor(
        max_workers=workers, thread_name_prefix=name,
        initializer=lower_thread_priority, initargs=(nice,),
    )
