"""The web console beside ``sro-decoder serve`` (``[web] enabled``), in a process of its own.

FastAPI, Jinja2 and Uvicorn in the node's process cost C-STORE throughput (about 15% on a
2-core machine, more than the console's own work), and a web request could hold the
interpreter that answers consoles; so the node starts ``sro-decoder web`` as a child process
linked to it (:mod:`node.web.link`): STOW-RS instances and ``/metrics`` still go through the
node. The child runs in a session of its own (a terminal's Ctrl-C reaches the node, which stops
it); it stops by itself when the node's process ends, even by SIGKILL. If it exits while the
node runs, the node says so and starts it again, waiting 1 s, then up to 30 s, between tries.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading

from node.metrics import Metrics
from node.settings import Settings
from node.web.link import LinkError, NodeEnd, PartStore, recv_frame, send_frame

log = logging.getLogger("node.web.process")

#: sockets the web process may use at once for STOW-RS, metrics and readiness
POOL = 4


class WebProcess:
    """Start, watch and stop the web console process of one node."""

    def __init__(self, settings: Settings, store: PartStore, metrics: Metrics, *,
                 start_timeout_s: float = 90.0) -> None:
        self._settings = settings
        self._store = store
        self._metrics = metrics
        self._start_timeout_s = start_timeout_s
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._end: NodeEnd | None = None
        self._watcher: threading.Thread | None = None
        self.url: str | None = None
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def start(self) -> str:
        """Start the web process and wait until it listens; return its URL. Raises
        :class:`OSError` when it does not start (its reason is in the log)."""
        url = self._spawn()
        self._watcher = threading.Thread(target=self._watch, name="web-process", daemon=True)
        self._watcher.start()
        return url

    def _spawn(self) -> str:
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(POOL + 1)]
        mine, theirs = [a for a, _ in pairs], [b for _, b in pairs]
        fds = [s.fileno() for s in theirs]
        for fd in fds:
            os.set_inheritable(fd, True)
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "node.cli.main", "web", "--linked",
                 ",".join(map(str, fds))],
                pass_fds=fds, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                start_new_session=True)
        except BaseException:
            for s in mine + theirs:
                s.close()
            raise
        for s in theirs:
            s.close()
        control = mine[0]
        try:
            send_frame(control, {"op": "settings",
                                 "settings": self._settings.model_dump(mode="json")})
            control.settimeout(self._start_timeout_s)
            reply, _ = recv_frame(control)
            if "url" not in reply:
                raise LinkError(str(reply.get("error", "no URL in its answer")))
        except (OSError, ValueError) as exc:
            for s in mine:
                s.close()
            self._end_process(proc)
            raise OSError(f"the web console did not start on {self._settings.web.host}:"
                          f"{self._settings.web.port}: {exc}") from None
        control.settimeout(None)
        end = NodeEnd(self._store, self._metrics, mine[1:])
        end.start()
        self._proc, self._control, self._end = proc, control, end
        self.url = str(reply["url"])
        log.info("web console process started", extra={"fields": {
            "pid": proc.pid, "url": self.url}})
        return self.url

    def _watch(self) -> None:
        wait = 1.0
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            log.error("web console process exited; starting it again", extra={"fields": {
                "pid": proc.pid, "returncode": code, "retry_in_s": wait}})
            self._drop_link()
            while not self._stopping.wait(wait):
                try:
                    self._spawn()
                    self.restarts += 1
                    wait = 1.0
                    break
                except OSError as exc:
                    wait = min(wait * 2, 30.0)
                    log.error("web console process did not start", extra={"fields": {
                        "error": str(exc), "retry_in_s": wait}})

    def _drop_link(self) -> None:
        if self._end is not None:
            self._end.close()
            self._end = None
        if self._control is not None:
            self._control.close()
            self._control = None

    @staticmethod
    def _end_process(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the web process (SIGTERM, then SIGKILL after ``timeout``)."""
        self._stopping.set()
        proc = self._proc
        if proc is not None:
            self._end_process(proc, timeout)
        self._drop_link()
        if self._watcher is not None:
            self._watcher.join(timeout)
