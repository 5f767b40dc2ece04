#!/usr/bin/env python
"""C-STORE receivers compared, all in one run, with the same SROs and the same default sender.

The sender is DCMTK ``storescu`` with its default network settings (``TCP_NODELAY`` removed from
its environment, as consoles in the field run it). It pushes the same ``--n`` synthetic SROs
(``model.training.synth.generate`` + ``write_set``) to each receiver:

- ``node``: this project's node, ``sro-decoder serve --port N --data-dir DIR`` (decode, archive
  fsync and audit commit included), a fresh data folder per scenario;
- ``bare``: a pynetdicom SCP that only acknowledges, on pynetdicom's own transport (the baseline);
- ``bare-prompt``: the same SCP on ``node.dimse.transport`` (prompt acknowledgement), for reference;
- ``storescp``: DCMTK ``storescp --fork``, writing files to its own folder;
- ``orthanc``: Orthanc (Debian package), a generated JSON config with its own storage folder,
  no plugins, loopback ports.

Scenarios: one association (one ``storescu`` with all files) and ``--assocs`` concurrent
associations (that many ``storescu`` processes, one contiguous share of the files each).

Latency: each ``storescu`` logs through a log4cplus config with microsecond timestamps; the
C-STORE latency of an object is the time from its "Sending Store Request" line to its "Received
Store Response" line, i.e. what the sender waits per object (the Nagle/delayed-ACK stall
included). Throughput: successful objects / wall time from the first sender's start to the last
sender's exit.

DCMTK ``storescp`` 3.6.7 and Orthanc 1.10.1 cannot listen on loopback only, so the whole
benchmark re-executes itself in a private network namespace (``unshare -n``, then
``ip link set lo up``) where every receiver and sender runs: nothing listens on a real interface.
Where that is impossible (not root, no ``unshare``), ``storescp`` and ``orthanc`` are skipped and
the others listen on 127.0.0.1. The script installs nothing; missing tools are reported and
skipped.

    python bench/bench_receivers.py                      # everything, 1,000 SROs, 1 and 4 assocs
    python bench/bench_receivers.py --receivers node,bare --n 300 --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECEIVERS = ("node", "bare", "bare-prompt", "storescp", "orthanc")
NETNS_ENV = "SRO_BENCH_IN_NETNS"
LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%H:%M:%S.%Q} %p %m%n
"""
_STAMP = r"(\d\d):(\d\d):(\d\d)\.(\d{3})\.(\d{3})"
_SENDING = re.compile(_STAMP + r" INFO Sending Store Request")
_RECEIVED = re.compile(_STAMP + r" INFO Received Store Response \((.*)\)")


# --------------------------------------------------------------------------------------------
# tools


def find_dcmtk(tool: str) -> str | None:
    """Path of a DCMTK tool; pynetdicom installs Python apps with the same names."""
    candidates = [shutil.which(tool, path=d) for d in ("/usr/bin", "/usr/local/bin")]
    candidates.append(shutil.which(tool))
    for path in candidates:
        if path is None:
            continue
        probe = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
        if "dcmtk" in probe.stdout.lower():
            return path
    return None


def first_line(cmd: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(cmd), capture_output=True, text=True, check=False, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0].strip() if lines else "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sender_env() -> dict[str, str]:
    """The sender's environment as in the field: no TCP_NODELAY, so Nagle stays on."""
    return {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}


# --------------------------------------------------------------------------------------------
# measurements


@dataclass
class Result:
    receiver: str
    associations: int
    objects: int
    ok: int = 0
    seconds: float = float("nan")
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    note: str = ""

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else float("nan")

    @property
    def median_ms(self) -> float:
        return float(np.median(self.latencies_ms)) if self.latencies_ms else float("nan")

    @property
    def p99_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 99)) if self.latencies_ms else float("nan")

    def summary(self) -> dict[str, object]:
        out = asdict(self)
        del out["latencies_ms"]
        out.update(rate=self.rate, median_ms=self.median_ms, p99_ms=self.p99_ms)
        return out


def _seconds(match: re.Match[str]) -> float:
    h, m, s, ms, us = (int(g) for g in match.groups()[:5])
    return h * 3600 + m * 60 + s + ms / 1e3 + us / 1e6


def parse_storescu_log(text: str) -> tuple[int, list[float]]:
    """(successful responses, per-object latencies in ms) from a storescu log."""
    ok = 0
    latencies: list[float] = []
    sent: float | None = None
    for line in text.splitlines():
        if m := _SENDING.match(line):
            sent = _seconds(m)
        elif (m := _RECEIVED.match(line)) and sent is not None:
            dt = _seconds(m) - sent
            if dt < 0:  # past midnight
                dt += 86400
            latencies.append(dt * 1e3)
            ok += m.group(6) == "Success"
            sent = None
    return ok, latencies


def push(storescu: str, port: int, files: list[Path], shares: int, work: Path) -> Result:
    """Send ``files`` over ``shares`` concurrent associations; one storescu per association."""
    log_config = work / "storescu-log.cfg"
    log_config.write_text(LOG_CONFIG)
    parts = [list(p) for p in np.array_split(np.array(files, dtype=object), shares)]
    procs: list[tuple[subprocess.Popen[bytes], Path]] = []
    start = time.perf_counter()
    for i, part in enumerate(parts):
        log = work / f"storescu-{shares}-{i}.log"
        with log.open("wb") as fh:
            cmd = [storescu, "-lc", str(log_config), "127.0.0.1", str(port), *map(str, part)]
            procs.append((subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                           env=sender_env()), log))
    for proc, _ in procs:
        proc.wait()
    elapsed = time.perf_counter() - start
    result = Result("", shares, len(files), seconds=elapsed)
    for proc, log in procs:
        ok, latencies = parse_storescu_log(log.read_text(errors="replace"))
        result.ok += ok
        result.latencies_ms.extend(latencies)
        if proc.returncode != 0:
            result.note += f"storescu exit {proc.returncode} ({log.name}); "
    return result


# --------------------------------------------------------------------------------------------
# receivers: each starter returns the process (in its own session) once it answers C-ECHO


class Unavailable(Exception):
    """The receiver cannot run here; the message says why."""


@dataclass
class Tools:
    storescu: str
    echoscu: str
    storescp: str | None
    orthanc: str | None
    netns: bool


def wait_ready(proc: subprocess.Popen[bytes], echoscu: str, port: int, log: Path,
               timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise Unavailable(f"exited with status {proc.returncode} before answering:\n{tail}")
        probe = subprocess.run([echoscu, "-to", "2", "127.0.0.1", str(port)],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise Unavailable(f"no C-ECHO answer on port {port} within {timeout_s:.0f} s")


def spawn(cmd: Sequence[str], log: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as fh:
        return subprocess.Popen(list(cmd), stdout=fh, stderr=subprocess.STDOUT, env=env,
                                cwd=cwd, start_new_session=True)


def stop(proc: subprocess.Popen[bytes], grace_s: float = 30.0) -> None:
    """SIGTERM the receiver's process group (it was started in its own session), then SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError):  # storescp --fork children, if any remain
        os.killpg(proc.pid, signal.SIGKILL)


#: extra ``sro-decoder serve`` arguments (``--node-model``); the shipped defaults otherwise
NODE_ARGS: list[str] = []


def start_node(tools: Tools, port: int, work: Path) -> subprocess.Popen[bytes]:
    if importlib.util.find_spec("node.cli.serve") is None:
        raise Unavailable("node/cli/serve.py does not exist yet (issue 4 in progress)")
    env = dict(os.environ, SRO_DECODER_NODE__HOST="127.0.0.1")
    cmd = [sys.executable, "-m", "node.cli.main", "serve", "--port", str(port),
           "--data-dir", str(work / "data"), *NODE_ARGS]
    log = work / "receiver.log"
    proc = spawn(cmd, log, env=env, cwd=ROOT)
    wait_ready(proc, tools.echoscu, port, log)
    return proc


def _bare(tools: Tools, port: int, work: Path, prompt: bool) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "_bare-scp", "--port", str(port)]
    if prompt:
        cmd.append("--prompt-ack")
    log = work / "receiver.log"
    proc = spawn(cmd, log, cwd=ROOT)
    wait_ready(proc, tools.echoscu, port, log)
    return proc


def start_bare(tools: Tools, port: int, work: Path) -> subprocess.Popen[bytes]:
    return _bare(tools, port, work, prompt=False)


def start_bare_prompt(tools: Tools, port: int, work: Path) -> subprocess.Popen[bytes]:
    return _bare(tools, port, work, prompt=True)


def start_storescp(tools: Tools, port: int, work: Path) -> subprocess.Popen[bytes]:
    if tools.storescp is None:
        raise Unavailable("DCMTK storescp is not installed")
    if not tools.netns:
        raise Unavailable("storescp cannot bind loopback only and no private network namespace")
    out = work / "storescp"
    out.mkdir()
    log = work / "receiver.log"
    proc = spawn([tools.storescp, "--fork", "-od", str(out), str(port)], log)
    wait_ready(proc, tools.echoscu, port, log)
    return proc


def start_orthanc(tools: Tools, port: int, work: Path) -> subprocess.Popen[bytes]:
    if tools.orthanc is None:
        raise Unavailable("Orthanc is not installed (Debian package 'orthanc')")
    if not tools.netns:
        raise Unavailable("Orthanc cannot bind loopback only and no private network namespace")
    http_port = free_port()
    config = {
        "Name": "bench",
        "StorageDirectory": str(work / "orthanc-storage"),
        "IndexDirectory": str(work / "orthanc-index"),
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": port,
        "DicomCheckCalledAet": False,
        "StorageCompression": False,
    }
    path = work / "orthanc.json"
    path.write_text(json.dumps(config, indent=2))
    log = work / "receiver.log"
    proc = spawn([tools.orthanc, str(path)], log)
    wait_ready(proc, tools.echoscu, port, log)
    proc.http_port = http_port  # type: ignore[attr-defined]
    return proc


STARTERS: dict[str, Callable[[Tools, int, Path], subprocess.Popen[bytes]]] = {
    "node": start_node,
    "bare": start_bare,
    "bare-prompt": start_bare_prompt,
    "storescp": start_storescp,
    "orthanc": start_orthanc,
}


def stored_count(name: str, proc: subprocess.Popen[bytes], work: Path) -> str:
    """What the receiver itself says it kept (a cross-check of the senders' counts)."""
    if name == "storescp":
        return f"{sum(1 for _ in (work / 'storescp').iterdir())} files written"
    if name == "orthanc":
        url = f"http://127.0.0.1:{proc.http_port}/statistics"  # type: ignore[attr-defined]
        with contextlib.suppress(OSError, ValueError, KeyError), \
                urllib.request.urlopen(url, timeout=10) as resp:
            return f"{json.load(resp)['CountInstances']} instances stored"
    return ""


def node_audit_count(work: Path) -> str:
    if importlib.util.find_spec("node.cli.audit") is None:
        return ""
    cmd = [sys.executable, "-m", "node.cli.main", "audit", "--data-dir", str(work / "data"),
           "export", "--format", "jsonl"]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        return f"audit export failed: {out.stderr.strip()[-300:]}"
    return f"{sum(1 for line in out.stdout.splitlines() if line.strip())} audit records"


def run_one(name: str, tools: Tools, files: list[Path], shares: int, work: Path) -> Result:
    work.mkdir(parents=True)
    port = free_port()
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = STARTERS[name](tools, port, work)
        result = push(tools.storescu, port, files, shares, work)
        result.receiver = name
        count = stored_count(name, proc, work)
    except Unavailable as exc:
        return Result(name, shares, len(files), note=f"skipped: {exc}")
    finally:
        if proc is not None:
            stop(proc)
    if name == "node":
        count = node_audit_count(work)
    if count:
        result.note += count
    return result


# --------------------------------------------------------------------------------------------
# report


def fmt(value: float, digits: int = 1) -> str:
    return "-" if value != value else f"{value:.{digits}f}"  # NaN -> "-"


def report(results: list[Result], n: int, assocs: int) -> dict[str, object]:
    print()
    header = f"{'receiver':<12} {'assocs':>6} {'ok/sent':>10} {'seconds':>8} {'objects/s':>10}"
    print(header + f" {'median ms':>10} {'p99 ms':>8}  note")
    for r in results:
        print(f"{r.receiver:<12} {r.associations:>6} {f'{r.ok}/{r.objects}':>10} "
              f"{fmt(r.seconds, 2):>8} {fmt(r.rate):>10} {fmt(r.median_ms, 2):>10} "
              f"{fmt(r.p99_ms, 2):>8}  {r.note.strip().splitlines()[0][:90] if r.note else ''}")

    def get(name: str, shares: int) -> Result | None:
        for r in results:
            if r.receiver == name and r.associations == shares and r.ok == r.objects > 0:
                return r
        return None

    def ratio(a: Result | None, b: Result | None) -> float:
        return a.rate / b.rate if a and b else float("nan")

    node1, node4 = get("node", 1), get("node", assocs)
    ratios = {
        "node / bare pynetdicom (1 assoc)": ratio(node1, get("bare", 1)),
        "node / Orthanc (1 assoc)": ratio(node1, get("orthanc", 1)),
        "node / DCMTK storescp (1 assoc)": ratio(node1, get("storescp", 1)),
        f"node / bare pynetdicom ({assocs} assocs)": ratio(node4, get("bare", assocs)),
        f"node {assocs} assocs / node 1 assoc": ratio(node4, node1),
        "bare-prompt / bare (1 assoc)": ratio(get("bare-prompt", 1), get("bare", 1)),
    }
    print("\nratios (objects/s)")
    for label, value in ratios.items():
        print(f"  {label:<40} {fmt(value, 2)}")

    def verdict(ok: bool | None) -> str:
        return "n/a (not measured)" if ok is None else ("PASS" if ok else "FAIL")

    def at_least(value: float, target: float) -> bool | None:
        return None if value != value else value >= target

    checks = {
        "1 assoc: node >= 5x bare pynetdicom": at_least(
            ratios["node / bare pynetdicom (1 assoc)"], 5.0),
        "1 assoc: node >= 5x Orthanc": at_least(ratios["node / Orthanc (1 assoc)"], 5.0),
        f"{assocs} assocs: node total >= node 1 assoc": at_least(
            ratios[f"node {assocs} assocs / node 1 assoc"], 1.0),
        "1 assoc: node p99 C-STORE latency < 20 ms": (
            None if node1 is None else node1.p99_ms < 20.0),
    }
    print(f"\nacceptance (issue 5, {n} SROs, default storescu)")
    for label, ok in checks.items():
        print(f"  {label:<45} {verdict(ok)}")
    return {"ratios": ratios, "acceptance": {k: verdict(v) for k, v in checks.items()}}


# --------------------------------------------------------------------------------------------
# the bare pynetdicom SCP (run as a subprocess of this script)


def bare_scp(port: int, prompt_ack: bool) -> int:
    import logging
    import threading

    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        SpatialRegistrationStorage,
        Verification,
    )

    from node.dimse.transport import start_server

    logging.basicConfig(level=logging.WARNING)
    ae = AE(ae_title="BARE")
    ae.maximum_associations = 16
    ae.add_supported_context(SpatialRegistrationStorage)
    ae.add_supported_context(Verification)
    start_server(ae, ("127.0.0.1", port), [(evt.EVT_C_STORE, lambda event: 0x0000)],
                 prompt_ack=prompt_ack)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    ae.shutdown()
    return 0


# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def synthetic_files(n: int, seed: int, keep: Path | None) -> Iterator[list[Path]]:
    from model.training.synth import SynthConfig, generate, write_set

    with tempfile.TemporaryDirectory(prefix="bench-sro-") as tmp:
        out = keep or Path(tmp)
        write_set(generate(SynthConfig(n=n, seed=seed)), out)
        yield sorted(out.glob("*.dcm"))


def enter_netns(argv: Sequence[str]) -> int | None:
    """Re-run this script in a private network namespace; None where that is impossible."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    if unshare is None or ip is None:
        print("no unshare/ip: running on the host's loopback", file=sys.stderr)
        return None
    probe = subprocess.run([unshare, "-n", ip, "link", "set", "lo", "up"],
                           capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        print(f"cannot create a network namespace ({probe.stderr.strip()}): running on the "
              "host's loopback", file=sys.stderr)
        return None
    env = dict(os.environ, **{NETNS_ENV: "1"})
    inner = f'"{ip}" link set lo up && exec "$0" "$@"'
    cmd = [unshare, "-n", "sh", "-c", inner, sys.executable, str(Path(__file__).resolve()),
           *argv]
    return subprocess.run(cmd, env=env, check=False).returncode


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_bare-scp"]:
        sub = argparse.ArgumentParser(prog="bench_receivers.py _bare-scp")
        sub.add_argument("--port", type=int, required=True)
        sub.add_argument("--prompt-ack", action="store_true")
        a = sub.parse_args(argv[1:])
        return bare_scp(a.port, a.prompt_ack)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="SROs to send (default 1000)")
    parser.add_argument("--assocs", type=int, default=4,
                        help="concurrent associations of the second scenario (default 4)")
    parser.add_argument("--receivers", default=",".join(RECEIVERS),
                        help=f"comma-separated subset of {','.join(RECEIVERS)}")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--no-netns", action="store_true",
                        help="stay in the host's network namespace (storescp, orthanc skipped)")
    parser.add_argument("--node-model", metavar="ebm|analytic|WEIGHTS_FILE",
                        help="the node's decoder (default: the shipped model)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--keep", type=Path, help="keep the receivers' folders and logs here")
    args = parser.parse_args(argv)
    names = [r.strip() for r in args.receivers.split(",") if r.strip()]
    unknown = sorted(set(names) - set(RECEIVERS))
    if unknown:
        parser.error(f"unknown receivers: {', '.join(unknown)}")

    if args.node_model:
        NODE_ARGS.extend(["--model", args.node_model])
    in_netns = os.environ.get(NETNS_ENV) == "1"
    if not in_netns and not args.no_netns:
        code = enter_netns(argv)
        if code is not None:
            return code

    storescu, echoscu = find_dcmtk("storescu"), find_dcmtk("echoscu")
    if storescu is None or echoscu is None:
        print("DCMTK storescu/echoscu are required (Debian package dcmtk)", file=sys.stderr)
        return 1
    orthanc = shutil.which("Orthanc")
    tools = Tools(storescu, echoscu, find_dcmtk("storescp"), orthanc, netns=in_netns)

    import pynetdicom

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    print(f"sender: {first_line([storescu, '--version'])} (default settings, TCP_NODELAY unset)")
    print(f"pynetdicom {pynetdicom.__version__}; storescp: "
          f"{first_line([tools.storescp, '--version']) if tools.storescp else 'absent'}; "
          f"orthanc: {first_line([orthanc, '--version']) if orthanc else 'absent'}")
    print(f"node: sro-decoder serve {' '.join(NODE_ARGS) or '(shipped defaults)'}")
    print(f"network: {'private namespace (unshare -n), loopback' if in_netns else 'host loopback'}")
    print(f"{args.n} SROs (model.training.synth, seed {args.seed}); scenarios: 1 and {args.assocs} "
          f"associations; receivers: {', '.join(names)}")

    results: list[Result] = []
    with synthetic_files(args.n, args.seed, None) as files, \
            tempfile.TemporaryDirectory(prefix="bench-recv-") as tmp:
        base = args.keep or Path(tmp)
        for shares in (1, args.assocs):
            for name in names:
                print(f"  {name}, {shares} association(s) ...", end=" ", flush=True)
                r = run_one(name, tools, files, shares, base / f"{name}-{shares}")
                print(r.note if r.note.startswith("skipped") else
                      f"{fmt(r.rate)} objects/s, p99 {fmt(r.p99_ms, 2)} ms", flush=True)
                results.append(r)
    summary = report(results, args.n, args.assocs)
    if args.json:
        args.json.write_text(json.dumps(
            {"n": args.n, "assocs": args.assocs, "results": [r.summary() for r in results],
             **summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
