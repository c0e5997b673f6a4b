"""The sender thread: pops mic chunks and sends them while a session is live."""
from __future__ import annotations

import logging
from typing import Final

from device.audio.buffers import LatencyWindow, UplinkChunk, UplinkQueue
from device.core.threads import OwnedThread
from device.session.counters import SenderCounters
from device.session.link import Link, LiveSession
from device.session.protocol import InputAudioCommit, encode, encode_audio
from device.session.transport import send_text
from hw.clock import Clock

log = logging.getLogger(__name__)

COMMIT_TEXT: Final = encode(InputAudioCommit())
# Wall seconds a queue read waits for a chunk before looking at the link again. A bound on a
# hand-over between two real-time threads, not a timeout: nothing depends on its length (a stop
# wakes the queue at once).
QUEUE_TICK: Final = 0.2


class UplinkSender(OwnedThread):
    """Sends each mic chunk (and push-to-talk commit) of the live session; ends when the link stops.

    Given exactly what it uses: the link (to wait for a live session and to send on its socket),
    the uplink queue, the clock (capture-to-send latency), its counters and its latency window.
    A chunk goes out only if it was made for the live session (`chunk.generation` is the live
    session's stream format generation); any other is stale (made for an earlier session, or
    popped as the session ended) and is counted, never sent.
    """

    def __init__(self, link: Link, uplink: UplinkQueue, clock: Clock, counters: SenderCounters,
                 latency: LatencyWindow) -> None:
        super().__init__("session-sender")
        self.link = link
        self.uplink = uplink
        self.clock = clock
        self.counters = counters
        self.latency = latency

    def run(self) -> None:
        while not self.stopping.is_set():
            if self.link.wait_live() is None:
                return   # stopped
            chunk = self.uplink.get(QUEUE_TICK)
            if chunk is not None:
                self.send(chunk, self.link.live())

    def send(self, chunk: UplinkChunk, live: LiveSession | None) -> bool:
        """Send one chunk on the live session (None: no session is live); True if it went out."""
        if live is None or chunk.generation != live.info.format.generation:
            self.counters.stale_chunks += 1
            if self.counters.stale_chunks == 1:
                log.info("dropping mic audio made for another session (generation %d, live: %s)",
                         chunk.generation, live.info.format.generation if live is not None else "none")
            return False
        if chunk.commit:
            if not send_text(live.socket, COMMIT_TEXT):
                self.counters.send_errors += 1
                return False
            self.counters.commits += 1
            return True
        if not send_text(live.socket, encode_audio(chunk.pcm)):
            self.counters.send_errors += 1
            return False
        self.counters.chunks_sent += 1
        self.counters.bytes_up += len(chunk.pcm)
        self.latency.add(self.clock.monotonic() - chunk.captured_at)
        return True
