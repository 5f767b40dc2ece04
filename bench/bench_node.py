#!/usr/bin/env python
"""Node throughput against a bare pynetdicom SCP, in the same run, with the same SROs.

Pushes ``--n`` synthetic SROs (``model.training.synth``) with DCMTK ``storescu`` over one
association and
over ``--assocs`` concurrent associations (that many ``storescu`` processes, one share of the
files each) to:

- ``node``: ``sro-decoder serve`` in its own process (archive fsync, decode, durable audit commit
  and alert outbox included), a fresh data folder per scenario;
- ``bare``: a pynetdicom SCP in its own process whose C-STORE handler only returns 0x0000, on
  pynetdicom's own transport (the baseline of issue 4).

Each is measured with the sender's default network settings (``TCP_NODELAY`` removed from its
environment, as consoles run it) and, with ``--nodelay``, also with ``TCP_NODELAY=1`` (no Nagle
stall: what remains is the receivers' own work). Prints instances/s per scenario and the ratio
node / bare; the issue-4 target is a ratio of at least 0.5. Everything listens on 127.0.0.1.

    python bench/bench_node.py                  # 1,000 SROs, 1 and 4 associations
    python bench/bench_node.py --n 300 --nodelay --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BARE_SCP = """
import sys
from pynetdicom import AE, evt
from pynetdicom.sop_class import SpatialRegistrationStorage, Verification
ae = AE(ae_title="BARE")
ae.add_supported_context(SpatialRegistrationStorage)
ae.add_supported_context(Verification)
ae.maximum_associations = 16
def handle_store(event):
    return 0x0000
server = ae.start_server(("127.0.0.1", 0), block=False,
                         evt_handlers=[(evt.EVT_C_STORE, handle_store)])
print(server.server_address[1], flush=True)
sys.stdin.read()
server.shutdown()
"""


@dataclass
class Result:
    receiver: str
    sender: str  # "default" or "nodelay"
    associations: int
    objects: int
    succeeded: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.succeeded / self.seconds if self.seconds > 0 else 0.0


def storescu_path() -> str:
    found = shutil.which("storescu", path="/usr/bin:/usr/local/bin")
    if found is None:
        sys.exit("DCMTK storescu is not installed")
    return found


def wait_port(port: int, proc: subprocess.Popen[str], log: Path | None,
              timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text()[-3000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"the receiver exited with status {proc.returncode}\n{text}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    proc: subprocess.Popen[str]

    def __init__(self, kind: str, work: Path, model: str | None) -> None:
        self.kind = kind
        env = {k: v for k, v in os.environ.items() if not k.startswith("SRO_DECODER_")}
        if kind == "bare":
            self.proc = subprocess.Popen([sys.executable, "-c", BARE_SCP], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
            assert self.proc.stdout is not None
            self.port = int(self.proc.stdout.readline())
            log = None
        else:
            self.port = free_port()
            data = Path(tempfile.mkdtemp(prefix="node-", dir=work))
            config = data / "bench.toml"
            config.write_text('[node]\nhost = "127.0.0.1"\nmax_associations = 16\n'
                              '[smtp]\nhost = "127.0.0.1"\nport = 1\n[log]\nlevel = "WARNING"\n')
            log = data / "node.log"
            with log.open("w") as err:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "node.cli.main", "serve", "--config", str(config),
                     "--data-dir", str(data / "data"), "--port", str(self.port),
                     *(["--model", model] if model else [])],
                    stdin=subprocess.DEVNULL, stderr=err, env=env, text=True)
        wait_port(self.port, self.proc, log)

    def stop(self) -> None:
        if self.kind == "bare":
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def push(port: int, files: list[Path], assocs: int, nodelay: bool) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    if nodelay:
        env["TCP_NODELAY"] = "1"
    exe = storescu_path()
    shares = [files[i::assocs] for i in range(assocs)]
    start = time.perf_counter()
    procs = [subprocess.Popen([exe, "-v", "-aet", "BENCH", "-aec", "SRO_DECODER", "127.0.0.1",
                               str(port), *map(str, share)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env=env)
             for share in shares]
    outputs = [p.communicate()[0] for p in procs]
    seconds = time.perf_counter() - start
    ok = sum(out.count("Received Store Response (Success)") for out in outputs)
    return ok, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="number of SROs (default 1000)")
    parser.add_argument("--assocs", type=int, default=4, help="concurrent associations")
    parser.add_argument("--nodelay", action="store_true",
                        help="also measure with TCP_NODELAY=1 in the sender's environment")
    parser.add_argument("--model", default=None,
                        help="the node's decoder (default: the shipped model)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    from model.training.synth import SynthConfig, generate, write_set

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        work = Path(tmp)
        sros = work / "sros"
        write_set(generate(SynthConfig(n=args.n, seed=1, corrupt_fraction=0.1)), sros)
        files = sorted(sros.glob("*.dcm"))
        modes = ["default", "nodelay"] if args.nodelay else ["default"]
        for mode in modes:
            for assocs in (1, args.assocs):
                for kind in ("bare", "node"):
                    receiver = Receiver(kind, work, args.model)
                    try:
                        ok, seconds = push(receiver.port, files, assocs, mode == "nodelay")
                    finally:
                        receiver.stop()
                    r = Result(kind, mode, assocs, len(files), ok, seconds)
                    results.append(r)
                    print(f"{kind:5} sender={mode:8} assocs={assocs}  {ok:5d}/{len(files)} ok  "
                          f"{seconds:7.2f} s  {r.per_second:8.1f} instances/s", flush=True)

    print("\nratio node / bare (instances/s); issue-4 target >= 0.5")
    summary = []
    for mode in sorted({r.sender for r in results}):
        for assocs in sorted({r.associations for r in results}):
            pick = {r.receiver: r for r in results
                    if r.sender == mode and r.associations == assocs}
            ratio = pick["node"].per_second / pick["bare"].per_second
            summary.append({"sender": mode, "associations": assocs, "ratio": ratio,
                            "node_per_s": pick["node"].per_second,
                            "bare_per_s": pick["bare"].per_second})
            print(f"  sender={mode:8} assocs={assocs}: node {pick['node'].per_second:8.1f}/s  "
                  f"bare {pick['bare'].per_second:8.1f}/s  ratio {ratio:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "results": [{**asdict(r), "per_second": r.per_second} for r in results],
            "summary": summary}, indent=2))
    failed = [r for r in results if r.succeeded != r.objects]
    if failed:
        print(f"\nWARNING: {len(failed)} run(s) had failed C-STOREs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
