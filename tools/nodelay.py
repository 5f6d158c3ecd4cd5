"""Imported for its effect: every socket pynetdicom connects gets TCP_NODELAY.

pynetdicom leaves Nagle on, so a request's command and data set go out as two small writes
and the second waits for a delayed ACK (~40 ms). Benchmarks must measure the servers, not
that.
"""

import socket

_connect = socket.socket.connect


def _connect_nodelay(self, address):
    try:
        self.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
    return _connect(self, address)


socket.socket.connect = _connect_nodelay
