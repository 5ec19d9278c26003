"""The embedded stack's HTTP servers (the API, the Invoke API): threads per request, and quiet about clients
that hang up (`curl … | head -3` closes its end early): one line for those, not a traceback."""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any

CLIENT_DISCONNECTS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)


class LocalHttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], CLIENT_DISCONNECTS):
            print(f"[host] client {client_address[0]} hung up before the answer was sent", file=sys.stderr)
            return
        super().handle_error(request, client_address)
