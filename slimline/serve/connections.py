"""Connection limits uvicorn lacks: a deadline for request headers, and a cap on open connections.

uvicorn has no header timeout (its `timeout_keep_alive` runs only between requests and is cancelled by
any byte received; encode/uvicorn#157 asks for `--timeout-request-start`), so 200 loopback connections
that each sent half a header were held open for ever, a file descriptor and a protocol object each.
`limit_concurrency` does not help either: it answers 503 to *requests* once too many connections are
open, but never closes one that has not finished its headers. uvicorn accepts a protocol class
(`Config(http=...)`); this one is its h11 protocol (the same parser whether or not httptools is
installed) with two additions:

- a connection gets `header_timeout_s` to deliver a complete request head, on connecting and again after
  each response (for the next request on a keep-alive connection); then it is answered 408 and closed.
  The body has its own deadline (`read_timeout_s`, in the app), and a request being answered is never cut;
- a connection beyond `max_connections` is answered 503 and closed at once.

Both answers use the server's JSON error shape and `connection: close`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def raw_error(status: int, reason: str, code: str, message: str) -> bytes:
    """A complete HTTP/1.1 error response, written straight to a transport that is about to close."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n")
    return head.encode("latin-1") + body


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[asyncio.Protocol]:
    """uvicorn's H11Protocol with the header deadline and the connection cap above (a class for Config(http=))."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    too_many = raw_error(503, "Service Unavailable", "too_many_connections",
                         f"the server holds its limit of {max_connections} open connections; retry shortly")
    too_slow = raw_error(408, "Request Timeout", "header_timeout",
                         f"the request headers did not arrive within {header_timeout_s:g} s")

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                log.info("refused a connection from %s: %d open, the limit is %d", self.client,
                         len(self.connections) - 1, max_connections)
                transport.write(too_many)
                transport.close()
                return
            self._arm_header_timer()

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout_s, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _waiting_for_headers(self) -> bool:
            """No request head parsed since the connection opened or the last response finished."""
            return self.conn.their_state is h11.IDLE and (self.cycle is None or self.cycle.response_complete)

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self.transport.is_closing() or not self._waiting_for_headers():
                return  # a request is being read or answered: the app's own deadlines apply
            log.info("closed a connection from %s: no complete request headers within %g s", self.client,
                     header_timeout_s)
            if self.conn.trailing_data[0]:  # part of a request arrived: say why it is closed
                self.transport.write(too_slow)
            self.transport.close()

        def handle_events(self) -> None:
            super().handle_events()
            if not self._waiting_for_headers():
                self._cancel_header_timer()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()  # the next request on this keep-alive connection gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_header_timer()
            super().connection_lost(exc)

    return GuardedH11Protocol
