#!/usr/bin/env python
"""Consoles against a stream of half-open connections (issue 9, defect 7; PS3.8 section 9.1.5).

Starts ``sro-decoder serve`` in its own process on 127.0.0.1 with the shipped defaults
(``[node] max_associations`` 10, ``[node] first_pdu_timeout_s``), then runs ``--hostile`` peers
(10) that each connect, send two bytes of an A-ASSOCIATE-RQ (or nothing, ``--payload silent``),
say nothing more and reconnect as soon as the node closes the connection (or after ``--hold-s``,
when it does not). Meanwhile a console runs DCMTK ``echoscu`` every ``--interval-s`` (3 s) for
``--duration-s`` (60 s) and the script prints each attempt's latency, then successes/attempts,
the longest latency and how long the node held the hostile connections. Acceptance: every
``echoscu`` succeeds within 5 s (exit status 0; 1 otherwise).

``--flood-rate R`` adds a host (127.0.0.2) that opens R connections a second, sends the same
bytes on each and keeps every one open until the node closes it; the script also prints the
most threads the node's process had, against its count before the peers came (the connections
waiting for their first PDU are bounded by ``[node] max_connections_per_address``).

    python bench/bench_hostile_peers.py
    python bench/bench_hostile_peers.py --flood-rate 100 --duration-s 30
    python bench/bench_hostile_peers.py --payload silent --duration-s 30
    python bench/bench_hostile_peers.py --root /path/to/other/checkout   # e.g. an older commit
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ACCEPT_WITHIN_S = 5.0


@dataclass
class Attempt:
    at_s: float  # since the start of the measurement
    ok: bool
    latency_s: float
    detail: str = ""


@dataclass
class Hostile:
    connections: int = 0
    held_s: list[float] = field(default_factory=list)  # accept -> closed by the node
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def dcmtk_echoscu() -> str:
    for folder in ("/usr/bin", "/usr/local/bin"):
        path = shutil.which("echoscu", path=folder)
        if path is None:
            continue
        probe = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        if "dcmtk" in probe.stdout.lower():
            return path
    sys.exit("DCMTK echoscu is not installed (pynetdicom's echoscu is not DCMTK's)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def echo(echoscu: str, port: int, timeout_s: float = 30.0) -> tuple[bool, float, str]:
    cmd = [echoscu, "-aet", "CONSOLE1", "-aec", "SRO_DECODER", "-to", "10", "-ta", "10",
           "127.0.0.1", str(port)]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return False, time.monotonic() - start, f"no answer within {timeout_s:.0f} s"
    latency = time.monotonic() - start
    detail = " ".join((proc.stdout + proc.stderr).split())[:120]
    return proc.returncode == 0, latency, detail


def start_node(root: Path, port: int, work: Path, echoscu: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ, SRO_DECODER_NODE__HOST="127.0.0.1", PYTHONPATH=str(root))
    cmd = [sys.executable, "-m", "node.cli.main", "serve", "--port", str(port),
           "--data-dir", str(work / "data"), "--model", "analytic", "--log-level", "WARNING"]
    log = (work / "node.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the node exited ({proc.returncode}):\n"
                     + (work / "node.log").read_text(errors="replace")[-2000:])
        if echo(echoscu, port, timeout_s=5)[0]:
            return proc
        time.sleep(0.3)
    stop_node(proc)
    sys.exit("the node did not answer a C-ECHO within 120 s")


def stop_node(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def hostile_peer(port: int, payload: bytes, hold_s: float, stop: threading.Event,
                 tally: Hostile) -> None:
    """Connect, send ``payload``, wait for the node to close (at most ``hold_s``), repeat."""
    while not stop.is_set():
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        except OSError:
            with tally.lock:
                tally.refused += 1
            stop.wait(0.1)
            continue
        start = time.monotonic()
        with tally.lock:
            tally.connections += 1
        with sock:
            try:
                if payload:
                    sock.sendall(payload)
                sock.settimeout(0.5)
                while not stop.is_set() and time.monotonic() - start < hold_s:
                    try:
                        if sock.recv(4096) == b"":
                            break  # closed by the node
                    except TimeoutError:
                        continue
                else:
                    continue  # held for hold_s (or stopping): not closed by the node
            except OSError:
                pass  # reset by the node: closed too
            with tally.lock:
                tally.held_s.append(time.monotonic() - start)


def flood(port: int, payload: bytes, rate: float, stop: threading.Event, tally: Hostile,
          source: str = "127.0.0.2") -> None:
    """Open ``rate`` connections a second from ``source``, each kept open until the node
    closes it (checked as the next ones are opened); close the rest at the end."""
    import select

    open_socks: list[socket.socket] = []
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            next_at += 1.0 / rate
            try:
                sock = socket.socket()
                sock.settimeout(2)
                sock.bind((source, 0))
                sock.connect(("127.0.0.1", port))
                if payload:
                    sock.sendall(payload)
                open_socks.append(sock)
                with tally.lock:
                    tally.connections += 1
            except OSError:
                with tally.lock:
                    tally.refused += 1
            readable, _, _ = select.select(open_socks, [], [], 0) if open_socks else ([], [], [])
            for r in readable:  # readable with nothing to read: closed by the node
                with contextlib.suppress(OSError):
                    if r.recv(4096):
                        continue
                open_socks.remove(r)
                r.close()
                with tally.lock:
                    tally.held_s.append(0.0)
            stop.wait(max(0.0, next_at - time.monotonic()))
    finally:
        for sock in open_socks:
            sock.close()


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hostile", type=int, default=10, help="half-open peers (10)")
    ap.add_argument("--payload", choices=("two-bytes", "silent"), default="two-bytes")
    ap.add_argument("--hold-s", type=float, default=30.0,
                    help="a peer reconnects after this long if the node has not closed it")
    ap.add_argument("--duration-s", type=float, default=60.0)
    ap.add_argument("--interval-s", type=float, default=3.0, help="between two echoscu runs")
    ap.add_argument("--root", type=Path, default=ROOT, help="the checkout whose node is run")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    ap.add_argument("--flood-rate", type=float, default=0.0,
                    help="connections a second from a flooding host (0: none)")
    args = ap.parse_args(argv)

    echoscu = dcmtk_echoscu()
    payload = b"\x01\x00" if args.payload == "two-bytes" else b""
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        work = Path(tmp)
        port = free_port()
        node = start_node(args.root.resolve(), port, work, echoscu)
        stop = threading.Event()
        tally = Hostile()
        peers = [threading.Thread(target=hostile_peer, daemon=True,
                                  args=(port, payload, args.hold_s, stop, tally))
                 for _ in range(args.hostile)]
        flooded = Hostile()
        if args.flood_rate > 0:
            peers.append(threading.Thread(target=flood, daemon=True, args=(
                port, payload, args.flood_rate, stop, flooded)))
        threads_before = threads_of(node.pid)
        most_threads = [threads_before]

        def sample() -> None:
            while not stop.wait(0.2):
                with contextlib.suppress(OSError):
                    most_threads.append(threads_of(node.pid))

        peers.append(threading.Thread(target=sample, daemon=True))
        attempts: list[Attempt] = []
        try:
            for p in peers:
                p.start()
            time.sleep(1.0)  # every hostile peer connected before the first console
            t0 = time.monotonic()
            while time.monotonic() - t0 < args.duration_s:
                at = time.monotonic() - t0
                answered, latency, detail = echo(echoscu, port)
                attempt = Attempt(round(at, 2), answered and latency <= ACCEPT_WITHIN_S,
                                  round(latency, 3), "" if answered else detail)
                attempts.append(attempt)
                print(f"t=+{at:5.1f} s  echoscu {'ok  ' if attempt.ok else 'FAIL'} "
                      f"{latency:6.3f} s {attempt.detail}", flush=True)
                time.sleep(max(0.0, args.interval_s - latency))
        finally:
            stop.set()
            for p in peers:
                p.join(5)
            stop_node(node)

    ok = sum(a.ok for a in attempts)
    latencies = [a.latency_s for a in attempts]
    held = tally.held_s
    summary: dict[str, Any] = {
        "hostile_peers": args.hostile, "payload": args.payload, "duration_s": args.duration_s,
        "attempts": len(attempts), "successes": ok,
        "max_latency_s": max(latencies, default=0.0),
        "median_latency_s": statistics.median(latencies) if latencies else 0.0,
        "hostile_connections": tally.connections, "hostile_refused": tally.refused,
        "hostile_closed_by_node": len(held),
        "hostile_median_held_s": round(statistics.median(held), 3) if held else None,
        "hostile_max_held_s": round(max(held), 3) if held else None,
        "flood_rate": args.flood_rate, "flood_connections": flooded.connections,
        "flood_closed_by_node": len(flooded.held_s), "node_threads_before": threads_before,
        "node_threads_max": max(most_threads),
        "pass": bool(attempts) and ok == len(attempts),
    }
    print(f"\nechoscu: {ok}/{len(attempts)} succeeded within {ACCEPT_WITHIN_S:g} s; "
          f"max latency {summary['max_latency_s']:.3f} s, "
          f"median {summary['median_latency_s']:.3f} s")
    print(f"hostile: {tally.connections} connections by {args.hostile} peers, "
          f"{len(held)} closed by the node (median held {summary['hostile_median_held_s']} s, "
          f"max {summary['hostile_max_held_s']} s), {tally.refused} refused")
    if args.flood_rate:
        print(f"flood: {flooded.connections} connections from 127.0.0.2 at "
              f"{args.flood_rate:g}/s, {len(flooded.held_s)} closed by the node")
    print(f"node threads: {threads_before} before the peers, at most {max(most_threads)}")
    print(f"acceptance (every echoscu within {ACCEPT_WITHIN_S:g} s for the whole run): "
          f"{'PASS' if summary['pass'] else 'FAIL'}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary,
                                         "attempts": [asdict(a) for a in attempts]}, indent=1))
    return 0 if summary["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
