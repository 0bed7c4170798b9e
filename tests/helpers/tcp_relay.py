"""A TCP relay on 127.0.0.1 in front of a real server, that a test can make die and come back on the same port: what
a client sees of a server that dies mid-run (its open connections reset, its port refusing) and is started again,
without restarting the server behind it. It counts the requests whose bytes carry a given needle (a bearer token)."""

from __future__ import annotations

import socket
import struct
import threading


class Relay:
    def __init__(self, upstream: tuple[str, int], port: int = 0, needle: bytes = b""):
        self.upstream, self.needle = upstream, needle.lower()
        self.carrying = 0  # client chunks that held the needle
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", port))
        self.listener.listen(64)
        self.listener.settimeout(0.05)
        self.port = self.listener.getsockname()[1]
        self.alive = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self.alive:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                if not self.alive:
                    client.close(), server.close()
                    return
                self.sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if from_client and self.needle and self.needle in chunk.lower():
                    with self.lock:
                        self.carrying += 1
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def kill(self) -> None:
        """Die: stop listening (connections refused), reset every open connection."""
        with self.lock:
            self.alive = False
            self.listener.close()
            for s in self.sockets:
                try:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            self.sockets.clear()
