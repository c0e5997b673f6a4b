"""One accepted connection: the server side of an Atoms agent session (turns, barge-in, faults)."""
from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from device.session.protocol import (
    AgentStartTalking,
    AgentStopTalking,
    InputAudioAppend,
    InputAudioCommit,
    InputTextSend,
    Interruption,
    ServerError,
    SessionClose,
    SessionClosed,
    SessionCreated,
    SessionUpdate,
    Transcript,
)
from device.sim.conversations import ConversationLog
from device.sim.faults import FaultPlan, garbage_frames
from device.sim.handshake import SessionParams
from device.sim.options import SimOptions
from device.sim.recorder import Recorder
from device.sim.vad import EnergyVad
from device.sim.voice import synthesize

log = logging.getLogger(__name__)

_CLIENT_MODELS: Final[dict[str, type[BaseModel]]] = {
    "input_audio_buffer.append": InputAudioAppend,
    "input_audio_buffer.commit": InputAudioCommit,
    "input_text.send": InputTextSend,
    "session.update": SessionUpdate,
    "session.close": SessionClose,
}


def _dump(message: BaseModel) -> str:
    return message.model_dump_json(exclude_none=True)


def _delta(pcm: bytes) -> str:
    # The hot path of a reply: build the JSON by hand instead of a model round trip per chunk.
    return '{"type":"output_audio.delta","audio":"' + base64.b64encode(pcm).decode("ascii") + '"}'


def _now() -> str:
    return datetime.now(UTC).isoformat()


class SimSession:
    """The server side of one Atoms session: reads client messages, finds turns, speaks replies.

    Lives on the simulator's event-loop thread: `run()` is the connection handler and every task
    it starts (the reply, the fault timers) runs on the same loop, so no state here is locked.
    At most one reply runs at a time; a new turn or a barge-in cancels the one in progress.
    """

    def __init__(self, ws: ServerConnection, params: SessionParams, options: SimOptions,
                 recorder: Recorder, plan: FaultPlan, attempt: int, index: int,
                 conversations: ConversationLog | None = None) -> None:
        self._ws = ws
        self._params = params
        self._options = options
        self._rec = recorder
        self._plan = plan
        self._attempt = attempt
        self._index = index
        self.session_id = f"sim-sess-{uuid.uuid4().hex[:16]}"
        self.call_id = f"CALL-SIM-{uuid.uuid4().hex[:12]}"
        self._log = conversations if conversations is not None else ConversationLog()
        self._vad = EnergyVad(params.sample_rate, options.vad_threshold_dbfs,
                              options.vad_min_speech_ms, options.vad_min_silence_ms)
        self._reply_task: asyncio.Task[None] | None = None
        self._timers: list[asyncio.Task[None]] = []
        self._talking = False  # between our agent_start_talking and agent_stop_talking
        self._ending = False  # a fault or a close is ending the session: start no new turns
        self._flooded = False
        self._garbage_pending: list[tuple[str, str | bytes]] = []
        self._sample_bytes = 2  # PCM16 mono

    def _event(self, kind: str, **fields: Any) -> None:
        self._rec.event(kind, conn=self._attempt, session=self._index,
                        session_id=self.session_id, **fields)

    # -- lifecycle -----------------------------------------------------------------------------
    async def run(self) -> None:
        """The connection handler: greet, then read until the socket closes; always cleans up."""
        self._log.start(self.call_id, self.session_id, self._options.agent_id)
        try:
            if self._options.created_delay:
                self._event("created_delayed", seconds=self._options.created_delay)
                await asyncio.sleep(self._options.created_delay)
            await self._ws.send(_dump(SessionCreated(
                session_id=self.session_id, call_id=self.call_id,
                sample_rate=self._params.sample_rate, channels=1)))
            self._event("created", sample_rate=self._params.sample_rate,
                        requested_rate=self._params.requested_rate, mode=self._params.mode,
                        variables=self._params.variables)
            self._schedule_faults()
            if self._options.garbage:
                for kind, frame in garbage_frames():
                    await self._send_garbage(kind, frame, phase="after_created")
                self._garbage_pending = garbage_frames()  # again, between the first reply's chunks
            if self._options.greeting:
                self._reply_task = asyncio.create_task(self._reply(None, self._options.greeting))
            if self._options.stop_reading:
                # Nothing reads: websockets stops reading the transport once its queue is full,
                # so the client's sends back up in the kernel buffers, as with a stalled server.
                self._event("stop_reading")
                await self._ws.wait_closed()
            else:
                await self._receive_loop()
        except ConnectionClosed:
            pass
        finally:
            self._ending = True
            tasks = [t for t in (*self._timers, self._reply_task) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._log.end(self.call_id)
            # The session's audio total, for a test that reads only the events file (a system
            # test in a VM checks that a muted call sent nothing).
            self._event("disconnect", code=self._ws.close_code, reason=self._ws.close_reason,
                        audio_bytes=self._rec.audio_bytes_by_session.get(self.session_id, 0))

    def _schedule_faults(self) -> None:
        drop = self._plan.drop_after(self._index)
        if drop is not None:
            self._timers.append(asyncio.create_task(self._drop_later(drop)))
        close = self._plan.close_after(self._index)
        if close is not None:
            self._timers.append(asyncio.create_task(self._close_later(*close)))
        if self._options.session_timeout is not None:
            self._timers.append(asyncio.create_task(self._timeout_later(self._options.session_timeout)))

    async def _drop_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._ending = True
        self._event("drop", after=delay)
        # abort(): no close frame, no FIN handshake; the client just loses its connection.
        self._ws.transport.abort()

    async def _close_later(self, code: int, delay: float) -> None:
        await asyncio.sleep(delay)
        self._ending = True
        await self._cancel_reply(interrupt=False)
        self._event("close_fault", code=code, after=delay)
        await self._ws.close(code, "simulated close")

    async def _timeout_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._ending = True
        await self._cancel_reply(interrupt=False)
        self._event("timeout", after=delay)
        await self._ws.send(_dump(SessionClosed(reason="timeout")))
        await self._ws.close(1000, "session timeout")

    # -- client messages -----------------------------------------------------------------------
    async def _receive_loop(self) -> None:
        while True:
            frame = await self._ws.recv()  # raises ConnectionClosed at the end
            if not await self._on_frame(frame):
                return

    async def _invalid(self, kind: str, detail: str) -> None:
        self._rec.count_received(kind)
        self._event("invalid", what=kind, detail=detail[:200])
        await self._ws.send(_dump(ServerError(code="invalid_event", message=detail[:500])))

    async def _on_frame(self, frame: str | bytes) -> bool:
        """Handle one client frame; False once the session is over."""
        if isinstance(frame, bytes):
            await self._invalid("<binary>", "binary frames are not part of the protocol; send JSON text")
            return True
        try:
            raw = json.loads(frame)
        except (ValueError, RecursionError) as exc:
            await self._invalid("<invalid_json>", f"invalid JSON: {exc}")
            return True
        kind = raw.get("type") if isinstance(raw, dict) else None
        model = _CLIENT_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            what = "<not_an_object>" if not isinstance(raw, dict) else "<unknown_type>"
            await self._invalid(what, f"unknown or missing event type {str(kind)[:80]!r}")
            return True
        try:
            message = model.model_validate(raw)
        except ValidationError as exc:
            await self._invalid(f"<invalid:{kind}>", f"invalid {kind}: " + "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
            return True
        self._rec.count_received(str(kind))
        if isinstance(message, InputAudioAppend):
            await self._on_audio(message.audio)
        elif isinstance(message, InputAudioCommit):
            self._event("commit", audio_bytes=self._rec.audio_bytes_received)
            seconds = self._vad.flush()
            await self._start_turn("commit", f"(heard {seconds:.1f} s of speech)", seconds)
        elif isinstance(message, InputTextSend):
            await self._start_turn("text", message.text, None)
        elif isinstance(message, SessionUpdate):
            log.info("session.update ignored (fields: %s)", sorted(raw))
            self._event("session_update", fields=sorted(raw))
        elif isinstance(message, SessionClose):
            self._ending = True
            self._event("close_requested")
            await self._cancel_reply(interrupt=False)
            await self._ws.send(_dump(SessionClosed(reason="client_requested")))
            await self._ws.close(1000, "session closed")
            return False
        return True

    async def _on_audio(self, audio: str) -> None:
        try:
            pcm = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError) as exc:
            await self._invalid("<bad_audio>", f"audio is not valid base64: {exc}")
            return
        if len(pcm) % self._sample_bytes:
            await self._invalid("<bad_audio>", f"audio has {len(pcm)} bytes: not whole PCM16 samples")
            return
        if self._params.mode == "chat":
            await self._invalid("<bad_audio>", "chat mode takes text only")
            return
        keep = int(self._options.keep_audio_seconds * self._params.sample_rate) * self._sample_bytes
        self._rec.audio(self.session_id, len(pcm), pcm, keep)
        for vad_event in self._vad.feed(pcm):
            if vad_event.kind == "start":
                self._event("speech_start", at=round(vad_event.at, 3))
                await self._cancel_reply(interrupt=True)  # barge-in
            else:
                await self._start_turn("vad", f"(heard {vad_event.seconds:.1f} s of speech)",
                                       vad_event.seconds)

    # -- turns and replies ---------------------------------------------------------------------
    async def _start_turn(self, source: str, user_text: str, seconds: float | None) -> None:
        if self._ending:
            return
        await self._cancel_reply(interrupt=True)  # a new turn replaces any reply in progress
        self._event("utterance", source=source, text=user_text,
                    seconds=None if seconds is None else round(seconds, 3))
        self._reply_task = asyncio.create_task(self._reply(user_text, self._options.reply))

    async def _cancel_reply(self, interrupt: bool) -> None:
        """Stop the reply in progress; if its audio had started and `interrupt`, say so."""
        task = self._reply_task
        if task is None or task.done():
            return
        was_talking = self._talking
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        self._talking = False
        if was_talking and interrupt:
            self._event("interrupt")
            await self._ws.send(_dump(Interruption()))
            await self._ws.send(_dump(AgentStopTalking(timestamp=_now())))

    async def _reply(self, user_text: str | None, text: str) -> None:
        """One agent turn: user transcript, then the spoken reply, then the agent transcript."""
        try:
            if user_text is not None:
                self._log.line(self.call_id, "user", user_text)
                await self._ws.send(_dump(Transcript(role="user", text=user_text)))
            if self._params.mode == "chat":
                self._log.line(self.call_id, "agent", text)
                await self._ws.send(_dump(Transcript(role="agent", text=text)))
                return
            rate = self._params.sample_rate
            pcm = await asyncio.get_running_loop().run_in_executor(
                None, synthesize, text, rate, self._options.tts)
            flood = (self._options.flood_seconds is not None and user_text is not None
                     and not self._flooded)
            if flood:
                self._flooded = True
                want = int((self._options.flood_seconds or 0.0) * rate) * self._sample_bytes
                pcm = (pcm * (want // max(1, len(pcm)) + 1))[:want]
            await self._ws.send(_dump(AgentStartTalking(timestamp=_now())))
            self._talking = True
            self._event("reply_start", audio_seconds=round(len(pcm) / 2 / rate, 3), flood=flood)
            await self._stream(pcm, paced=not flood)
            self._talking = False
            await self._ws.send(_dump(AgentStopTalking(timestamp=_now())))
            self._log.line(self.call_id, "agent", text)
            await self._ws.send(_dump(Transcript(role="agent", text=text)))
            self._event("reply_end")
        except ConnectionClosed:
            self._talking = False
        except asyncio.CancelledError:
            raise
        except Exception:  # a broken reply must not end the session handler
            self._talking = False
            log.exception("reply failed in session %s", self.session_id)
            try:
                await self._ws.send(_dump(ServerError(code="internal_error", message="reply failed")))
            except ConnectionClosed:
                pass

    async def _stream(self, pcm: bytes, paced: bool) -> None:
        """Send `pcm` as output_audio.delta chunks, paced by the wall clock with a small lead."""
        rate, opts = self._params.sample_rate, self._options
        chunk = max(1, rate * opts.chunk_ms // 1000) * self._sample_bytes
        loop = asyncio.get_running_loop()
        start = loop.time()
        lead = opts.lead_ms / 1000.0
        for offset in range(0, len(pcm), chunk):
            if paced:
                # The chunk starting at audio time t may leave at t - lead (scaled by the factor).
                due = start + (offset / self._sample_bytes / rate - lead) / opts.realtime_factor
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await self._ws.send(_delta(pcm[offset:offset + chunk]))
            if self._garbage_pending:
                kind, frame = self._garbage_pending.pop(0)
                await self._send_garbage(kind, frame, phase="during_audio")

    async def _send_garbage(self, kind: str, frame: str | bytes, phase: str) -> None:
        self._event("garbage", what=kind, phase=phase, size=len(frame))
        await self._ws.send(frame)
