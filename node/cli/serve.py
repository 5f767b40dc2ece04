"""``sro-decoder serve``: run the DICOM node until SIGTERM or Ctrl-C; with ``[web] enabled``
the web console (node/web) runs beside it in the same process, starts before the DICOM
listener opens (no C-STORE waits on its start-up) and stops with it."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Any

from node.cli.common import add_settings_arguments, settings_from_args

log = logging.getLogger("node.serve")


class _WebStartError(Exception):
    """The web console did not start (its reason in ``cause``)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the DICOM node (C-STORE SCP for SROs, C-ECHO)")
    add_settings_arguments(p)
    p.add_argument("--port", type=int, default=None, metavar="N", help="listening port")
    p.add_argument("--host", default=None, metavar="ADDR", help="listening address")
    p.add_argument("--ae-title", default=None, metavar="AET", help="the node's AE title")
    p.add_argument("--model", default=None, metavar="ebm|analytic|WEIGHTS_FILE",
                   help="decoder (setting [model] name)")
    p.add_argument("--log-level", default=None, choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from model.decoders.registry import UnknownModelError
    from node.dimse.service import Node, quiet_pynetdicom_event_logs, set_torch_threads
    from node.logs import configure_logging
    from node.settings import SettingsError

    settings = settings_from_args(
        args,
        node={"port": args.port, "host": args.host, "ae_title": args.ae_title},
        model={"name": args.model},
        log={"level": args.log_level},
    )
    configure_logging(settings.log.level, settings.log.format)
    set_torch_threads(settings.model.torch_threads)  # before the decoder starts torch's pool
    quiet_pynetdicom_event_logs()
    node = Node(settings)
    web: list[Any] = []  # the web console, started before the DICOM listener opens

    def start_web(started: Node) -> None:
        from node.web.app import create_app
        from node.web.server import WebServer

        assert started.engine is not None
        try:
            server = WebServer(create_app(settings, started.engine, metrics=started.metrics,
                                          store=started.store), settings.web)
            server.start()
        except Exception as exc:
            raise _WebStartError(exc) from exc
        web.append(server)

    try:
        node.start(before_listening=start_web if settings.web.enabled else None)
    except UnknownModelError as exc:
        print(f"sro-decoder: setting [model] name: {exc}", file=sys.stderr)
        node.stop(0)
        return 2
    except SettingsError as exc:  # a file a setting names cannot be used ([tls] certificate)
        print(f"sro-decoder: {exc}", file=sys.stderr)
        node.stop(0)
        return 2
    except _WebStartError as exc:
        log.error("cannot start the web console", extra={"fields": {"error": repr(exc.cause)}})
        print(f"sro-decoder: cannot start the web console: {exc.cause}", file=sys.stderr)
        node.stop(0)
        return 1
    except Exception as exc:  # database, port, model weights: say why and stop
        log.error("cannot start", extra={"fields": {"error": repr(exc)}})
        print(f"sro-decoder: cannot start: {exc}", file=sys.stderr)
        for server in web:
            server.stop()
        node.stop(0)
        return 1

    # What start-up built (torch, the model, pydicom's dictionaries, SQLAlchemy) lives as long as
    # the process: keep it out of the collector's full passes, which would otherwise walk it
    # again and again while C-STOREs wait (Python's gc.freeze)
    gc.freeze()
    stop_requested = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal received; shutting down",
                 extra={"fields": {"signal": signal.Signals(signum).name}})
        stop_requested.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stop_requested.wait(1.0):
        pass
    for server in web:
        server.stop()
    node.stop()
    return 0
