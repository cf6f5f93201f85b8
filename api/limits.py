"""Refuse request bodies above ``MAX_BODY_BYTES`` with 413 before they are buffered or parsed.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted as it
arrives and refused as soon as it crosses the limit, so a client cannot make the process hold an
arbitrarily large body in memory.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.metrics import ApiMetrics


def _too_large(max_bytes: int) -> HTTPException:
    # An HTTPException, because FastAPI turns any other error raised while it reads the body into
    # a 400 "error parsing the body", and re-raises this one to the exception handlers.
    return HTTPException(413, f"request body exceeds the limit of {max_bytes} bytes")


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int, metrics: ApiMetrics) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    self.metrics.rejections.labels("too_large").inc()
                    raise _too_large(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except HTTPException as exc:  # raised by counting_receive where no handler rendered it
            if started or exc.status_code != 413:
                raise
            await self._refuse(scope, receive, send, count=False)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, count: bool = True) -> None:
        if count:
            self.metrics.rejections.labels("too_large").inc()
        response = error_response(413, "body_too_large", str(_too_large(self.max_bytes).detail))
        response.headers["Connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
