#!/usr/bin/env python
"""Node throughput over DICOM TLS beside plain TCP, in the same run, with the same SROs.

One ``sro-decoder serve`` process listens on a plain port and, with ``[tls] enabled``, on a TLS
port (certificates made here with ``openssl``: a CA, the node's certificate and a client one;
``require_client_certificate`` on). ``--n`` synthetic SROs (``model.training.synth``) are pushed
with DCMTK ``storescu`` over 1 and ``--assocs`` concurrent associations, plainly and with
``+tls`` (the default BCP 195 profile of DCMTK 3.6.7), each to a fresh data folder. Default
sender network settings (``TCP_NODELAY`` removed from the environment). Prints objects/s per
scenario and the ratio TLS / plain. Everything listens on 127.0.0.1.

    python bench/bench_tls.py                       # 500 SROs, shipped model
    python bench/bench_tls.py --n 300 --model analytic --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from bench_node import free_port, storescu_path, wait_port  # noqa: E402


def make_certificates(folder: Path) -> dict[str, Path]:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=Bench CA")
    (folder / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, ext in (("server", ["-extfile", "server.ext"]), ("client", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", *ext)
    return {n: folder / n for n in ("ca.pem", "server.pem", "server.key", "client.pem",
                                    "client.key")}


def start_node(work: Path, certs: dict[str, Path], model: str | None
               ) -> tuple[subprocess.Popen[str], int, int]:
    plain, tls = free_port(), free_port()
    data = Path(tempfile.mkdtemp(prefix="node-", dir=work))
    config = data / "bench.toml"
    config.write_text(
        '[node]\nhost = "127.0.0.1"\nmax_associations = 16\n'
        '[smtp]\nhost = "127.0.0.1"\nport = 1\n[log]\nlevel = "WARNING"\n'
        f'[tls]\nenabled = true\nport = {tls}\ncertificate = "{certs["server.pem"]}"\n'
        f'key = "{certs["server.key"]}"\nca_file = "{certs["ca.pem"]}"\n'
        'require_client_certificate = true\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRO_DECODER_")}
    log = data / "node.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "node.cli.main", "serve", "--config", str(config),
             "--data-dir", str(data / "data"), "--port", str(plain),
             *(["--model", model] if model else [])],
            stdin=subprocess.DEVNULL, stderr=err, env=env, text=True)
    wait_port(plain, proc, log)
    wait_port(tls, proc, log)
    return proc, plain, tls


def push(port: int, files: list[Path], assocs: int, tls: list[str]) -> tuple[int, float]:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    shares = [files[i::assocs] for i in range(assocs)]
    start = time.perf_counter()
    procs = [subprocess.Popen([storescu_path(), "-v", "-aet", "BENCH", "-aec", "SRO_DECODER",
                               *tls, "127.0.0.1", str(port), *map(str, share)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) for share in shares]
    outputs = [p.communicate()[0] for p in procs]
    seconds = time.perf_counter() - start
    return sum(out.count("Received Store Response (Success)") for out in outputs), seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="number of SROs (default 500)")
    parser.add_argument("--assocs", type=int, default=4, help="concurrent associations")
    parser.add_argument("--model", default=None, help="the node's --model (default: shipped)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()

    from model.training.synth import SynthConfig, generate, write_set

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        work = Path(tmp)
        (work / "certs").mkdir()
        certs = make_certificates(work / "certs")
        sros = work / "sros"
        sros.mkdir()
        write_set(generate(SynthConfig(n=args.n, seed=5, corrupt_fraction=0.0)), sros)
        files = sorted(sros.glob("*.dcm"))
        tls_args = ["+tls", str(certs["client.key"]), str(certs["client.pem"]),
                    "+cf", str(certs["ca.pem"])]
        for assocs in (1, args.assocs):
            for transport in ("plain", "tls"):
                proc, plain_port, tls_port = start_node(work, certs, args.model)
                try:
                    ok, seconds = push(tls_port if transport == "tls" else plain_port, files,
                                       assocs, tls_args if transport == "tls" else [])
                finally:
                    proc.terminate()
                    proc.wait(30)
                row = {"transport": transport, "associations": assocs, "objects": len(files),
                       "succeeded": ok, "seconds": round(seconds, 3),
                       "per_second": round(ok / seconds, 1) if seconds else 0.0}
                results.append(row)
                print(f"{transport:5s} assocs={assocs} {ok}/{len(files)} ok "
                      f"{row['per_second']:7.1f} objects/s", flush=True)
    for assocs in (1, args.assocs):
        plain, tls = (next(r for r in results if r["transport"] == t
                           and r["associations"] == assocs) for t in ("plain", "tls"))
        if plain["per_second"]:
            print(f"assocs={assocs}: TLS / plain = "
                  f"{float(tls['per_second']) / float(plain['per_second']):.2f}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
