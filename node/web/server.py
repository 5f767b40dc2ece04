"""Uvicorn in a thread of the node's process: started beside the DICOM listener by
``sro-decoder serve`` (or alone by ``sro-decoder web``), stopped with it."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import uvicorn

from node.settings import WebSettings

log = logging.getLogger("node.web.server")


class WebServer:
    """One Uvicorn server for ``app`` on ``[web] host``/``port`` (TLS when a certificate is
    given); signals stay with the node (Uvicorn installs none outside the main thread)."""

    def __init__(self, app: Any, web: WebSettings) -> None:
        self.web = web
        config = uvicorn.Config(
            app, host=web.host, port=web.port, log_config=None, access_log=False,
            lifespan="off", ssl_certfile=web.tls_certificate or None,
            ssl_keyfile=web.tls_key or None, timeout_graceful_shutdown=5, server_header=False)
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"{'https' if self.web.tls_certificate else 'http'}://{host}:{port}"

    def start(self, timeout: float = 15.0) -> tuple[str, int]:
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the web server did not start on {self.web.host}:{self.web.port}")
            time.sleep(0.01)
        host, port = self.address
        log.info("web console listening", extra={"fields": {"url": self.url}})
        return host, port

    def _run(self) -> None:
        try:
            self.server.run()
        except SystemExit:  # Uvicorn exits when it cannot bind; start() reports it
            log.error("web server failed to start")

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
