"""``sro-decoder serve``: run the DICOM node until SIGTERM or Ctrl-C; with ``[web] enabled``
the web console (node/web) runs beside it in the same process and stops with it."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import threading
from types import FrameType

from node.cli.common import add_settings_arguments, settings_from_args

log = logging.getLogger("node.serve")


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
    try:
        node.start()
    except UnknownModelError as exc:
        print(f"sro-decoder: setting [model] name: {exc}", file=sys.stderr)
        node.stop(0)
        return 2
    except SettingsError as exc:  # a file a setting names cannot be used ([tls] certificate)
        print(f"sro-decoder: {exc}", file=sys.stderr)
        node.stop(0)
        return 2
    except Exception as exc:  # database, port, model weights: say why and stop
        log.error("cannot start", extra={"fields": {"error": repr(exc)}})
        print(f"sro-decoder: cannot start: {exc}", file=sys.stderr)
        node.stop(0)
        return 1
    web = None
    if settings.web.enabled:  # in its own process, linked to this one (node/web/process.py)
        from node.web.process import WebProcess

        assert node.store is not None
        try:
            web = WebProcess(settings, node.store, node.metrics)
            web.start()
        except Exception as exc:
            log.error("cannot start the web console", extra={"fields": {"error": repr(exc)}})
            print(f"sro-decoder: cannot start the web console: {exc}", file=sys.stderr)
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
    if web is not None:
        web.stop()
    node.stop()
    return 0
