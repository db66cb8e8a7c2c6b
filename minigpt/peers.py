"""Which rank is gone: a heartbeat per rank in the rendezvous store, read when a collective fails.

A collective whose peer died fails on the survivors with gloo's "Connection closed by peer
[127.0.0.1]:41235" (at once) or "Timed out waiting 300000ms for recv" (after the process-group
timeout, when the peer hangs or its node froze), or NCCL's watchdog error: an address or nothing,
never a rank. So every rank runs a small daemon thread that bumps its own counter in the store the
ranks met at (minigpt.distributed.rendezvous) every second. When a collective fails, `lost_ranks()`
reads the counters twice, a few beats apart: the ranks whose counter did not move are the lost ones
(a killed process, and equally a stopped or frozen one, whose threads stop with it). Counters, not
clocks: the nodes' clocks need not agree. A store that no longer answers means its host is gone
(rank 0 under srun; node 0's torchrun agent under torchrun).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import torch.distributed as dist

BEAT_S = 1.0  # one bump a second: nothing next to a training step, and a lost rank is named within seconds
STILL_BEATS = 3  # a rank whose counter did not move over this many beats is lost


class Heartbeat:
    """Bumps `<prefix>/beat/<rank>` in the store at host:port every BEAT_S seconds, from a daemon thread
    with its own store connection (the training thread's collectives never wait on it)."""

    def __init__(self, host: str, port: int, rank: int, world_size: int, prefix: str):
        self.host, self.port, self.rank, self.world_size, self.prefix = host, port, rank, world_size, prefix
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="minigpt-heartbeat", daemon=True)
        self.thread.start()

    def _client(self) -> dist.TCPStore:
        return dist.TCPStore(self.host, self.port, self.world_size, is_master=False,
                             timeout=timedelta(seconds=5 * BEAT_S), wait_for_workers=False)

    def key(self, rank: int) -> str:
        return f"{self.prefix}/beat/{rank}"

    def _beat(self) -> None:
        try:
            store = self._client()
            while not self.stopped.is_set():
                store.add(self.key(self.rank), 1)
                self.stopped.wait(BEAT_S)
        except RuntimeError:  # the store is gone (its host ended): nothing left to tell
            pass

    def stop(self) -> None:
        self.stopped.set()

    def lost_ranks(self) -> list[int] | None:
        """The ranks whose heartbeat stopped, after watching STILL_BEATS beats; None if the store itself is
        unreachable (its host is gone)."""
        try:
            store = self._client()
            before = [store.add(self.key(rank), 0) for rank in range(self.world_size)]
            time.sleep(STILL_BEATS * BEAT_S)
            after = [store.add(self.key(rank), 0) for rank in range(self.world_size)]
        except RuntimeError:
            return None
        return [rank for rank in range(self.world_size) if after[rank] == before[rank] and rank != self.rank]


_heartbeat: Heartbeat | None = None


def start(host: str, port: int, rank: int, world_size: int, prefix: str) -> None:
    """Start this rank's heartbeat (once per process: a second call replaces the first)."""
    global _heartbeat
    stop()
    _heartbeat = Heartbeat(host, port, rank, world_size, prefix)


def stop() -> None:
    global _heartbeat
    if _heartbeat is not None:
        _heartbeat.stop()
        _heartbeat = None


def lost_rank_message(exc: BaseException) -> str | None:
    """One line naming the lost rank(s) if `exc` came with a peer gone; None when every peer still beats
    (then `exc` is this rank's own error, and its traceback says more)."""
    if _heartbeat is None or not isinstance(exc, RuntimeError):
        return None
    beat = _heartbeat
    lost = beat.lost_ranks()
    cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    cause = cause.split("] ", 1)[-1].split(". ")[0][:160]  # gloo prefixes its source file and appends advice
    if lost is None:
        who = (f"the rendezvous store at {beat.host}:{beat.port} no longer answers: its host (rank 0, or node 0's "
               "torchrun agent) is gone")
    elif lost:
        who = f"rank{'s' if len(lost) > 1 else ''} {', '.join(map(str, lost))} of {beat.world_size} stopped responding"
    else:
        return None
    return (f"rank {beat.rank}: lost a peer: {who} ({cause}); its own log says why; rerun the same command to "
            "resume from the last checkpoint")
