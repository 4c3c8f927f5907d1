"""The server side of WebSocket sessions under uvicorn: its websockets-sansio protocol, but at shutdown an open
session keeps going through the grace period (uvicorn's `timeout_graceful_shutdown`) and is then closed with
1001 (going away), which tells a client to reconnect elsewhere; uvicorn's own closes it at once with 1012.
"""

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

GOING_AWAY = 1001


class GracefulWebSocketProtocol(WebSocketsSansIOProtocol):
    def shutdown(self) -> None:
        grace = self.config.timeout_graceful_shutdown
        if not self.handshake_complete or self.close_sent or self.disconnected or grace is None:
            super().shutdown()
            return
        # uvicorn waits for connections a tenth of a second longer than the grace before it cancels their tasks
        self.loop.call_later(grace, self._go_away)

    def _go_away(self) -> None:
        if self.close_sent or self.disconnected:
            return
        self.stop_keepalive()
        self.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY, "reason": "server shutting down"})
        self.conn.send_close(GOING_AWAY, "server shutting down")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()
