"""A loopback TCP proxy for fault injection: pass traffic through, stall it, or drop it.

The proxy runs an asyncio loop in a daemon thread and listens on 127.0.0.1 on an ephemeral
port. Its mode can be switched from any thread:

- ``pass``: bytes flow both ways;
- ``stall``: every connection, existing or new, is kept open but nothing is read or forwarded
  (new connections are accepted by the kernel and never reach the server). The peer's kernel
  still acknowledges what fits in its buffers; once they are full the sender sees a zero
  window, as with a peer whose process hangs;
- ``drop``: every connection is closed at once, new ones are closed as they arrive.

Only loopback addresses are used: the proxy listens on 127.0.0.1 and forwards to the target
given (the test servers on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Literal

Mode = Literal["pass", "stall", "drop"]


class _Side(asyncio.Protocol):
    """One socket of a proxied pair; forwards what it reads to its peer."""

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.peer: _Side | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy._sides.add(self)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None or peer.transport is None:
            self.pending.append(data)
        else:
            peer.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy._sides.discard(self)
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()

    def flush_to(self, peer: _Side) -> None:
        self.peer = peer
        if peer.transport is not None:
            for chunk in self.pending:
                peer.transport.write(chunk)
        self.pending.clear()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()


class _ClientSide(_Side):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.proxy.accepted += 1
        mode = self.proxy.mode
        if mode == "drop":
            self.abort()
            return
        self.pause()  # nothing is read before the upstream connection exists
        if mode == "pass":
            asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: _Side(self.proxy), self.proxy.target_host, self.proxy.target_port
            )
        except OSError:
            self.abort()
            return
        upstream.flush_to(self)
        self.flush_to(upstream)
        if self.proxy.mode == "pass":
            self.resume()
        else:
            upstream.pause()


class FaultProxy:
    """``with FaultProxy(port) as proxy``: ``proxy.port`` to connect to, ``proxy.set_mode()``."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.mode: Mode = "pass"
        self.accepted = 0
        self.port = 0
        self._sides: set[_Side] = set()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="proxy")

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _ClientSide(self), sock=sock
        )

    def _call(self, coro: object) -> None:
        assert asyncio.iscoroutine(coro)
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def set_mode(self, mode: Mode) -> None:
        """Switch every existing and future connection to ``mode`` (returns once applied)."""

        async def apply() -> None:
            self.mode = mode
            for side in list(self._sides):
                if mode == "drop":
                    side.abort()
                elif mode == "stall":
                    side.pause()
                else:
                    side.resume()

        self._call(apply())

    def close(self) -> None:
        """Close every connection and the listener, stop the loop and join its thread."""
        if not self._thread.is_alive():
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for side in list(self._sides):
                side.abort()

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
