"""Loopback networking helpers shared by tests, benchmarks and scripts."""

from __future__ import annotations

import contextlib
import socket
import threading

# Proxy variables that would send loopback HTTP through a proxy; clear them for local servers.
PROXY_VARS = ("ALL_PROXY", "HTTPS_PROXY", "HTTP_PROXY", "all_proxy", "https_proxy", "http_proxy")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class TcpForwarder:
    """A loopback TCP port that forwards every connection to ``target``, and can go away and come back.

    ``stop`` closes the listener and every forwarded connection, so the port refuses connections
    like a server that is down; ``start`` listens on the same port again. With ``silent`` set, new
    connections are accepted and then never answered, like a host that drops packets (what a client's
    connect timeout is for). Tests put it between a process and a real server (e.g. PostgreSQL) to take
    that server away from it.
    """

    def __init__(self, target: tuple[str, int], host: str = "127.0.0.1", port: int | None = None) -> None:
        self.target = target
        self.host = host
        self.port = port or free_port(host)
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.silent = False

    def start(self) -> TcpForwarder:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True, name="tcp-forwarder").start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            if self.silent:
                with self._lock:
                    self._conns.add(client)  # held open, never answered; closed by stop()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True, name="tcp-forwarder-pump").start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
