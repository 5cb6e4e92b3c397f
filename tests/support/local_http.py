"""What the tests' stand-in HTTP servers share: ``http.server`` on 127.0.0.1, a free port,
served from a daemon thread, with a backlog a burst of clients fits in."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # listen()'s backlog: a worker or a fleet opens dozens of connections at once, and
    # http.server's default of 5 makes the kernel refuse the ones that do not fit (a
    # provider's front end never does that).
    request_queue_size = 1024


class LocalHTTPServer:
    """Serves ``handler`` on loopback in the background; ``closing`` is set on stop, so
    a handler waiting on it (a slow or hung answer) wakes and gives up."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], name: str) -> None:
        self._closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), handler)
        # A short poll interval: shutdown() waits up to one interval.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        name=name, daemon=True)

    @property
    def url(self) -> str:
        """The base URL to give the client: ``http://127.0.0.1:<port>/v1``."""
        return "http://127.0.0.1:%d/v1" % self._httpd.server_address[1]

    def start(self) -> Any:
        """Serve in the background; returns the server."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (answers still waiting are dropped)."""
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
