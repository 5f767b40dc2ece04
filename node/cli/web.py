"""``sro-decoder web``: the web console alone, against the same database as ``serve`` (a review
machine); STOW-RS needs the node and answers 503 here."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from types import FrameType

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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
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
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(f"web console on {server.url}", file=sys.stderr)
    while not stop.wait(1.0):
        pass
    server.stop()
    engine.dispose()
    return 0
