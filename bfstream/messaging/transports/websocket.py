"""The WebSocket transport: reads the client's requests, writes the session's frames.

One writer task drains the session's queue; the request loop runs beside it. Either ending, or
the session falling too far behind, ends the connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import struct
import time
from typing import Any

from pydantic import ValidationError
from starlette.types import Send
from starlette.websockets import WebSocket, WebSocketState

from bfstream.config import MessagingSettings
from bfstream.errors import BfstreamError, ClientError, Conflict, Forbidden, PayloadTooLarge, TooManyRequests
from bfstream.fleet.ratelimits import TokenBucket, enforce
from bfstream.messaging import protocol
from bfstream.messaging.hub import scoped
from bfstream.messaging.protocol import tool_result_problem
from bfstream.messaging.session import Context, Session, Since
from bfstream.messaging.tokens import User
from bfstream.nesting import nesting_problem
from bfstream.scrub import scrub
from bfstream.store.records import App
from bfstream.text import finite_float, has_lone_surrogate, may_hold_surrogates, not_json

log = logging.getLogger("bfstream.websocket")
# The server's own log, which ``bfstream serve`` prints (uvicorn configures it): what start-up says of
# the write path belongs next to uvicorn's own start-up lines.
_server_log = logging.getLogger("uvicorn.error")

_SLOW_CLOSE_WAIT = 10.0  # seconds
_FRAME_OVERHEAD = 64  # bytes a frame costs beyond its length: an empty frame still has to be handled


class _InvalidTextFrames(logging.Filter):
    """For uvicorn's error log. A text frame that is not UTF-8 (lone surrogates sent as CESU-8
    bytes, stray bytes) is the client's mistake: uvicorn closes the connection with 1007, as it
    should, but logs it as an ERROR with a traceback, so any page could write tracebacks into the
    log at will. It becomes one line at INFO."""

    _UVICORN = "Invalid UTF-8 sequence received from client."

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != self._UVICORN:
            return True
        record.msg, record.args = "WebSocket closed with 1007: the client sent a text frame that is not UTF-8", ()
        record.levelno, record.levelname = logging.INFO, "INFO"
        record.exc_info, record.exc_text = None, None
        return logging.getLogger(record.name).isEnabledFor(logging.INFO)


class _RefusedHandshakes(logging.Filter):
    """For uvicorn's error log, which websockets writes to as well. A malformed upgrade (a
    ``Sec-WebSocket-Version: 99``, a missing or bad key) gets its 400 and one INFO line, but at
    DEBUG websockets adds the traceback of how it found out, two or three chained exceptions that
    any client can have written at will. The reason stays, on the same line; the traceback goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.msg, str) and record.msg.startswith("! "):
            exc = record.exc_info[1]
            causes = []
            while exc is not None and len(causes) < 3:
                causes.append(f"{type(exc).__name__}: {exc}")
                exc = exc.__cause__
            # Records are scrubbed when made (bfstream/scrub.py): this text is new, so it is scrubbed here.
            record.msg, record.args = scrub(f"{record.getMessage()} ({'; '.join(causes)})"), ()
            record.exc_info, record.exc_text = None, None
        return True


# Installed with this module, which every server imports: logging set-ups (uvicorn's own included)
# replace a logger's handlers, never its filters.
logging.getLogger("uvicorn.error").addFilter(_InvalidTextFrames())
logging.getLogger("uvicorn.error").addFilter(_RefusedHandshakes())


def _since(value: Any) -> Since | None:
    if value is None:
        return None
    if not isinstance(value, dict) or type(value.get("offset")) is not int or value["offset"] < 0:
        raise ClientError('"since" must be {"offset": integer >= 0, "epoch": string}')
    epoch = value.get("epoch")
    if epoch is not None and not isinstance(epoch, str):
        raise ClientError('"since.epoch" must be a string')
    return Since(value["offset"], epoch)


def _header(length: int) -> bytes:
    """A final, unmasked text frame's header (RFC 6455 5.2): a server's frames are never masked."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


class _LastFrame:
    """The last frame encoded, by identity: a message to a channel reaches each of its listeners as
    the same str object, one listener's writer after another, so a thousand listeners share one
    encoding instead of a thousand."""

    text: str | None = None
    data: bytes = b""


def encoded(text: str) -> bytes:
    if text is not _LastFrame.text:
        payload = text.encode()
        _LastFrame.text, _LastFrame.data = text, _header(len(payload)) + payload
    return _LastFrame.data


# What the direct path reads of uvicorn's protocol: private, so checked rather than trusted. uvicorn
# 0.52.1 is the first to have them all (``writable`` is set and cleared by flow control from then).
_SANSIO = "WebSocketsSansIOProtocol"
_NEEDED = ("transport", "writable", "close_sent", "disconnected")
_warned: set[str] = set()


def direct_protocol(send: Send | None, messaging: MessagingSettings) -> Any:
    """uvicorn's websockets-sansio protocol behind ``send``, when frames can go to its transport as
    bytes: direct writes on, no extension negotiated (permessage-deflate compresses each frame
    itself). Otherwise None, and frames go through ``send``. Writing the frame this protocol's
    ``send`` would write, without its three coroutine layers and without framing it once per
    listener, is half of what a delivery costs (docs/benchmarks.md)."""
    if not messaging.direct_writes:
        return None
    protocol = getattr(send, "__self__", None)
    conn = getattr(protocol, "conn", None)
    if type(protocol).__name__ != _SANSIO or conn is None or conn.extensions:
        return None
    missing = [name for name in _NEEDED if not hasattr(protocol, name)]
    if missing:
        _warn_once(f"WebSocket frames: through the ASGI send, as uvicorn's {_SANSIO} has no {', '.join(missing)}")
        return None
    return protocol


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        _server_log.warning(message)


def fallback_reason(ws_protocol: Any, messaging: MessagingSettings) -> str | None:
    """Why a server whose WebSocket protocol is ``ws_protocol`` (uvicorn's class) sends frames
    through the ASGI ``send``; None when it writes them straight to the transport."""
    if not messaging.direct_writes:
        return "messaging.direct_writes is off"
    name = getattr(ws_protocol, "__name__", repr(ws_protocol))
    if name != _SANSIO:
        return f"uvicorn speaks WebSocket with {name}, the direct path knows its websockets-sansio protocol only"
    if "pause_writing" not in vars(ws_protocol):
        # Without write flow control nothing stops the transport's buffer growing for a slow reader.
        return "this uvicorn's websockets-sansio protocol has no write flow control (uvicorn 0.52.1 added it)"
    return None


def announce_write_path(ws_protocol: Any, messaging: MessagingSettings) -> None:
    """Say once, at start-up, how frames reach the browsers: a fallback costs about half the
    delivery throughput (docs/benchmarks.md), which nobody should have to find out from a profile."""
    reason = fallback_reason(ws_protocol, messaging)
    if reason is None:
        deflate = "; connections that negotiate permessage-deflate use send" if messaging.compression else ""
        _server_log.info("WebSocket frames: written straight to the transport%s", deflate)
    else:  # chosen: said; not chosen: a warning, as the server runs slower than it should
        level = logging.INFO if not messaging.direct_writes else logging.WARNING
        _server_log.log(level, "WebSocket frames: through the ASGI send, as %s", reason)


class WebSocketConnection:
    def __init__(
        self,
        websocket: WebSocket,
        context: Context,
        app: App,
        user: User | None,
        resume: dict[str, Since],
        send: Send | None = None,
    ) -> None:
        self._ws = websocket
        # The server's own ASGI send: frames skip the WebSocket object's checks, which only the
        # handshake and the close need.
        self._send = send
        self._resume = resume
        self._context = context
        self._writer: asyncio.Task[None] | None = None
        address = websocket.client.host if websocket.client else None
        self.session = Session(context, app, user, self._too_slow, address)
        limits = context.limits
        self._publishes = TokenBucket(limits.publish_rate, limits.publish_burst)
        self._reads = TokenBucket(limits.read_rate, limits.read_burst)

    def _too_slow(self) -> None:
        if self._writer is not None:
            self._writer.cancel()

    async def serve(self) -> None:
        """Run until the client goes away, or is dropped for reading too slowly."""
        session = self.session
        self._writer = asyncio.create_task(self._write_forever())
        reader: asyncio.Task[None] | None = None
        try:
            try:
                await session.open(self._resume)
            except BfstreamError as exc:  # e.g. the broker is down: the client reconnects later
                await self._ws.close(protocol.close_code(exc.status), exc.message[:120])
                return
            # Read only once hello is queued, so it is always the first frame the client sees.
            reader = asyncio.create_task(self._read_forever())
            await asyncio.wait({self._writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            tasks = [t for t in (self._writer, reader) if t is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await session.close()
        if session.too_slow and self._ws.client_state == WebSocketState.CONNECTED:
            # The session is gone already, so nothing more piles up. The close frame can only follow
            # what the socket still buffers: wait a while for the client to catch up and read it.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_SLOW_CLOSE_WAIT):
                    await self._ws.close(protocol.CLOSE_SLOW_CONSUMER, "send queue full: reading too slowly")

    async def _write_forever(self) -> None:
        next_outgoing = self.session.next_outgoing
        protocol = direct_protocol(self._send, self._context.limits)
        if protocol is not None:
            transport, writable = protocol.transport, protocol.writable
            holding = False

            def write(frame: str) -> None:
                try:
                    transport.write(encoded(frame))
                except UnicodeEncodeError:  # cannot happen with the edges checked; must not cost the connection
                    log.error("dropped a frame that is not valid Unicode")

            def write_now(frame: str) -> bool:
                if holding or not writable.is_set() or protocol.close_sent or protocol.disconnected:
                    return False
                if not transport.is_closing():  # closing: nothing is to be written any more, queued or not
                    write(frame)
                return True

            self.session.write_now = write_now
            try:
                while True:
                    frame = (await next_outgoing())[1]
                    if not writable.is_set():  # the socket's buffer is full: wait as the server's send
                        holding = True  # would, so frames pile up in the session's queue, which is bounded
                        await writable.wait()
                        holding = False
                    if protocol.close_sent or protocol.disconnected or transport.is_closing():
                        return  # closed: what is left is not for this connection any more
                    write(frame)
            finally:
                self.session.write_now = None
        send = self._send or self._ws.send
        while True:
            frame = (await next_outgoing())[1]
            try:
                await send({"type": "websocket.send", "text": frame})
            except UnicodeEncodeError:  # cannot happen with the edges checked; must not cost the connection
                log.error("dropped a frame that is not valid Unicode")

    async def _read_forever(self) -> None:
        while True:
            event = await self._ws.receive()
            if event["type"] == "websocket.disconnect":
                return
            text = event.get("text")
            request: Any = None
            try:
                if text is None:
                    raise ClientError("Frames must be JSON text")
                if (problem := nesting_problem(text)) is not None:
                    raise ClientError(problem)
                try:
                    request = json.loads(text, parse_constant=not_json, parse_float=finite_float)
                except ValueError:
                    raise ClientError("Frame is not valid JSON") from None
                if not isinstance(request, dict):
                    raise ClientError("Frame must be a JSON object")
                if may_hold_surrogates(text) and has_lone_surrogate(request):
                    raise ClientError("Frame holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape)")
                await self._handle(request)
            except BfstreamError as exc:
                request_id = request.get("id") if isinstance(request, dict) else None
                if has_lone_surrogate(request_id):
                    request_id = None  # the reply could not carry it: it is what was wrong
                wait = getattr(exc, "retry_after", None)
                self.session.push("error", protocol.error_frame(exc.message, exc.status, request_id, wait))
            # Frames the client sent ahead arrive without a pause: let the writer send the replies
            # between them, or a client that pipelines requests is cut off as a slow reader. And a
            # client sending more than its share waits here, unread, so the others get the loop.
            await asyncio.sleep(self._reads.spend(_FRAME_OVERHEAD + len(text or event.get("bytes") or b"")))

    async def _handle(self, request: dict[str, Any]) -> None:
        op, request_id, session = request.get("op"), request.get("id"), self.session
        if op == "ping":
            session.push("pong", protocol.reply_frame("pong", request_id))
            return
        if op == "toolResult":
            await self._tool_result(request.get("toolCallId"), request.get("result"), request_id)
            return
        if op not in ("join", "leave", "publish"):
            raise ClientError(f"Unknown op {str(op)[:40]!r}; expected join, leave, publish, toolResult or ping")
        channel = request.get("channel")
        problem = protocol.channel_problem(channel)
        if problem is not None:
            raise ClientError(problem)
        if op == "join":
            await session.join(channel, _since(request.get("since")), request_id)
        elif op == "leave":
            await session.leave(channel, request_id)
        else:
            await self._publish(channel, request.get("message"), request_id)

    async def _tool_result(self, tool_call_id: Any, result: Any, request_id: Any) -> None:
        """A page's answer to a ``tool_call`` event of a stream in one of its channels."""
        if not isinstance(tool_call_id, str) or not tool_call_id:
            raise ClientError('"toolCallId" must be the non-empty string of the tool_call event')
        if len(tool_call_id) > 200:
            raise ClientError('"toolCallId" is at most 200 characters')
        problem = tool_result_problem(result)
        if problem is not None:
            raise ClientError(problem)
        answer = self._context.answer_tool
        accepted = answer is not None and await answer(self.session, tool_call_id, result)
        frame = protocol.reply_frame("answered", request_id, toolCallId=tool_call_id, accepted=accepted)
        self.session.push("answered", frame)

    async def _publish(self, channel: str, message: Any, request_id: Any) -> None:
        """A browser's message to a channel it is in (BetterForms messageSend / messageSendAnonChannel)."""
        session, limits = self.session, self._context.limits
        app = await self._context.store.app_by_id(session.app.id)  # read now: the setting may change while connected
        if app is None or not app.browser_publish:
            raise Forbidden("This app does not allow publishing from browsers")
        if channel not in session.channels:
            raise Forbidden(f"Join {channel!r} before publishing to it")
        try:
            protocol.Message.model_validate(message)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'message'}: {e['msg']}" for e in exc.errors())
            raise ClientError(f'"message" must look like {{"actions": [...], "model"?, "app"?}} ({problems})') from None
        data = protocol.dumps(message)
        if len(data.encode()) > limits.max_message_bytes:
            raise PayloadTooLarge(f"Messages are at most {limits.max_message_bytes} bytes")
        if wait := self._publishes.take():
            raise TooManyRequests(
                f"At most {limits.publish_rate:g} publishes per second per connection"
                f" (bursts of {limits.publish_burst})",
                retry_after=wait,
            )
        await enforce(self._context.rates, session.app.id, "publishes", self._context.app_limits.publishes)
        user = session.user
        mode = await self._mode(channel)
        if mode == "receive":
            # The back end takes it from here (and may answer with /message/sendmessage): nothing
            # reaches the channel, so the reply has no position to give.
            if not self._forward(app, channel, mode, message):
                raise Conflict(
                    f"You are in {channel!r} in receive mode, which sends messages to the app's webhook,"
                    " and this app has no webhook: the message was not delivered"
                )
            session.push("forwarded", protocol.reply_frame("forwarded", request_id, channel=channel))
            return
        origin = protocol.from_browser(session.id, user.id if user else None, user.email if user else None)
        publication = await self._context.hub.publish(
            scoped(session.app.id, channel), protocol.publication_data(data, origin)
        )
        if mode == "listen":  # after the publish, so the back end hears only what the channel carried
            self._forward(app, channel, mode, message, publication.offset, publication.epoch)
        session.push(
            "published",
            protocol.reply_frame(
                "published", request_id, channel=channel, offset=publication.offset, epoch=publication.epoch
            ),
        )

    async def _mode(self, channel: str) -> str | None:
        """The publishing user's mode in ``channel``: None for anonymous connections and for channels
        the user was not added to. Read on every publish, as ``adduser`` may change it at any time."""
        user = self.session.user
        if user is None or channel.startswith(protocol.PRIVATE_PREFIX):
            return None
        return await self._context.store.user_channel_mode(self.session.app.id, user.id, channel)

    def _forward(
        self, app: App, channel: str, mode: str, message: Any, offset: int | None = None, epoch: str | None = None
    ) -> bool:
        """Hand a publish to the app's webhook in the background (``webhooks.Deliveries``: retried,
        never waited for); False when the app has none. The payload is documented in docs/messaging.md."""
        deliveries, session = self._context.deliveries, self.session
        if deliveries is None or not app.webhook_url or not app.webhook_secret:
            return False
        user = session.user
        payload: dict[str, Any] = {
            "type": "message",
            "appId": app.id,
            "channel": channel,
            "mode": mode,
            "from": protocol.browser_origin(session.id, user.id if user else None, user.email if user else None),
            "message": message,
            "sentAt": time.time(),
        }
        if offset is not None:  # listen: where the channel carries it, to match it with what browsers saw
            payload["offset"], payload["epoch"] = offset, epoch
        deliveries.webhook(app.id, app.webhook_url, app.webhook_secret, "message", payload)
        return True
