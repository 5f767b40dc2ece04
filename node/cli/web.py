"""``sro-decoder web``: the web console alone, against the same database as ``serve`` (a review
machine); STOW-RS needs the node and answers 503 here.

``--linked`` (not for people): the process ``sro-decoder serve`` starts for ``[web] enabled``
(:mod:`node.web.process`), given its settings and its link to the node on inherited sockets
(:mod:`node.web.link`); it stops when the node's process ends."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

from node.cli.common import add_settings_arguments, settings_from_args

log = logging.getLogger("node.web.cli")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("web", help="run the web console alone (review machine)")
    add_settings_arguments(p)
    p.add_argument("--port", type=int, default=None, metavar="N",
                   help="listening port (setting [web] port)")
    p.add_argument("--host", default=None, metavar="ADDR",
                   help="listening address (setting [web] host)")
    p.add_argument("--log-level", default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                   help="log level (setting [log] level)")
    p.add_argument("--linked", default=None, metavar="FDS", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _serve_until_stopped(server: Any, stop: threading.Event) -> None:
    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop.wait(1.0):
        pass
    server.stop()


def run_linked(fds: str) -> int:
    """The web process of a node: settings from the control socket, STOW-RS and the node's
    counters over the link, stop at the end of the control socket (the node has gone)."""
    from node.audit.store import open_database
    from node.logs import configure_logging
    from node.settings import Settings
    from node.web.app import create_app
    from node.web.link import LinkedMetrics, WebEnd, recv_frame, send_frame
    from node.web.server import WebServer

    sockets = [socket.socket(fileno=int(fd)) for fd in fds.split(",")]
    control, pool = sockets[0], sockets[1:]
    header, _ = recv_frame(control)
    settings = Settings.model_validate(header["settings"])
    configure_logging(settings.log.level, settings.log.format)
    node = WebEnd(pool)
    try:
        engine = open_database(settings.database_url, migrate_schema=False,
                               sqlite_synchronous=settings.storage.sqlite_synchronous)
        server = WebServer(create_app(settings, engine, metrics=LinkedMetrics(node.metrics_text),
                                      store=node, node_alive=node.alive), settings.web)
        server.start()
    except Exception as exc:
        log.error("the web console cannot start", extra={"fields": {"error": repr(exc)}})
        send_frame(control, {"error": repr(exc)[:1000]})
        return 1
    send_frame(control, {"url": server.url})
    stop = threading.Event()

    def watch_node() -> None:
        with contextlib.suppress(OSError):  # nothing more is sent: this returns when the
            recv_frame(control)                # node has gone
        if not stop.is_set():
            log.info("the node has gone; the web console stops")
        stop.set()

    threading.Thread(target=watch_node, name="node-watch", daemon=True).start()
    _serve_until_stopped(server, stop)
    engine.dispose()
    return 0


def run(args: argparse.Namespace) -> int:
    if args.linked:
        return run_linked(args.linked)
    from node.audit.store import open_database
    from node.logs import configure_logging
    from node.web.app import create_app
    from node.web.server import WebServer

    settings = settings_from_args(args, web={"port": args.port, "host": args.host},
                                  log={"level": args.log_level})
    configure_logging(settings.log.level, settings.log.format)
    try:
        engine = open_database(settings.database_url,
                               sqlite_synchronous=settings.storage.sqlite_synchronous)
        server = WebServer(create_app(settings, engine), settings.web)
        server.start()
    except Exception as exc:
        print(f"sro-decoder: cannot start: {exc}", file=sys.stderr)
        return 1
    print(f"web console on {server.url}", file=sys.stderr)
    _serve_until_stopped(server, threading.Event())
    engine.dispose()
    return 0
