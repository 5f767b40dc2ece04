#!/usr/bin/env python
"""The web console under load (issue 13): the list page and the records API with 100,000
records in the database, and C-STORE throughput with the web application enabled against the
node without it, in the same run.

1. A fresh SQLite database is migrated and filled with ``--records`` decision records (SQLAlchemy
   Core, in batches: about a third flagged, some acknowledged, eight consoles), then
   ``sro-decoder web`` runs on it in its own process; each URL is fetched ``--repeat`` times by a
   logged-in client (the page) or with an API token (the API). Prints the median and the 90th
   percentile; the target is a median under 200 ms.
2. ``sro-decoder serve`` in its own process, with ``[web] enabled`` (the web console, a process
   of its own, node/web/process.py, answering ``/healthz`` first) and without, pushed ``--n``
   synthetic SROs by DCMTK ``storescu`` over one association, alternately, ``--rounds`` times;
   prints instances/s and the ratio (target: within 10%).

    python bench/bench_web.py
    python bench/bench_web.py --records 20000 --n 200 --rounds 1
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_node import free_port, push, wait_port  # noqa: E402

DECISIONS = ["confident"] * 6 + ["ambiguous", "out_of_distribution", "invalid", "no_offset"]
PASSWORD = "bench password"


def fill(url: str, n: int) -> None:
    from sqlalchemy import insert

    from node.audit.models import Acknowledgement, DecisionRecord, ReceivedObject
    from node.audit.store import open_database

    engine = open_database(url)
    rng = random.Random(5)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
    record = json.dumps({"decision": "confident", "alternatives": [], "top_conventions": []})
    batch = 5000
    with engine.begin() as conn:
        for first in range(0, n, batch):
            objects, decisions, acks = [], [], []
            for i in range(first, min(n, first + batch)):
                when = start + dt.timedelta(seconds=i * 60 * 24 * 60 * 60 / n * 0.99)
                uid = f"1.2.826.0.1.3680043.10.1433.{i}"
                kind = rng.choice(DECISIONS)
                objects.append({
                    "id": i + 1, "sop_instance_uid": uid,
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.66.1",
                    "transfer_syntax_uid": "1.2.840.10008.1.2.1",
                    "archive_path": f"objects/x/{uid}.dcm",
                    "placement": "primary", "size_bytes": 4000,
                    "calling_ae_title": f"CONSOLE{i % 8}", "called_ae_title": "SRO_DECODER",
                    "peer_address": "127.0.0.1:1", "association_id": None, "source": "c-store",
                    "status": 0, "received_at": when, "recorded_at": when,
                    "duplicate_of_id": None})
                flagged = kind in ("ambiguous", "out_of_distribution", "invalid")
                decisions.append({
                    "id": i + 1, "object_id": i + 1, "sop_instance_uid": uid, "decision": kind,
                    "flagged": flagged, "reason_code": None, "reason": None,
                    "convention": "xyz/direct/HFS", "probability": 0.9, "energy": 1.0,
                    "model_name": "analytic", "model_version": "0", "model_sha256": None,
                    "record_json": record, "decided_at": when, "console": f"CONSOLE{i % 8}"})
                if flagged and rng.random() < 0.5:
                    acks.append({"decision_id": i + 1, "acknowledged_by": "bench", "note": None,
                                 "acknowledged_at": when, "user_id": None})
            conn.execute(insert(ReceivedObject.__table__), objects)
            conn.execute(insert(DecisionRecord.__table__), decisions)
            if acks:
                conn.execute(insert(Acknowledgement.__table__), acks)
    engine.dispose()


def timed(client: object, path: str, repeat: int, **kwargs: object) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        r = client.get(path, **kwargs)  # type: ignore[attr-defined]
        times.append((time.perf_counter() - started) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def bench_pages(work: Path, n: int, repeat: int) -> bool:
    import httpx
    from sqlalchemy.orm import Session

    from node.audit.store import open_database
    from node.audit.users import Role, add_user, new_token

    data = work / "pages"
    url = f"sqlite:///{data / 'audit.db'}"
    started = time.perf_counter()
    fill(url, n)
    engine = open_database(url)
    with Session(engine) as session, session.begin():
        token = new_token(session, add_user(session, "bench", Role.VIEWER, PASSWORD))
    engine.dispose()
    print(f"filled {n:,} records in {time.perf_counter() - started:.1f} s")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRO_DECODER_")}
    proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "web", "--data-dir",
                             str(data), "--port", str(port), "--log-level", "WARNING"],
                            env=env, stderr=(work / "web.log").open("w"))
    ok = True
    try:
        wait_port(port, proc, work / "web.log")
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60) as c:
            page = c.get("/login")
            csrf = re.search(r'name="csrf_token" value="([^"]*)"', page.text)[1]  # type: ignore[index]
            assert c.post("/login", data={"name": "bench", "password": PASSWORD,
                                          "csrf_token": csrf}).status_code == 303
            auth = {"Authorization": f"Bearer {token}"}
            cases = [
                ("page", "/records", {}),
                ("page", "/records?flagged=yes&unacknowledged=yes", {}),
                ("page", "/records?console=CONSOLE3&decision=ambiguous&page=20", {}),
                ("page", "/", {}),
                ("api", "/api/v1/records", {"headers": auth}),
                ("api", "/api/v1/records?flagged=true&unacknowledged=true&offset=5000",
                 {"headers": auth}),
                ("api", "/api/v1/records?calling_ae_title=CONSOLE5&since=2000-01-01",
                 {"headers": auth}),
            ]
            print(f"\n{'':5} {'URL':62} {'median ms':>10} {'p90 ms':>8}")
            for kind, path, kwargs in cases:
                median, p90 = timed(c if kind == "page" else httpx.Client(base_url=base),
                                    path, repeat, **kwargs)
                flag = "" if median < 200 else "  OVER 200 ms"
                ok = ok and median < 200
                print(f"{kind:5} {path:62} {median:10.1f} {p90:8.1f}{flag}")
    finally:
        proc.terminate()
        proc.wait(30)
    return ok


def serve(work: Path, name: str, web: bool) -> tuple[subprocess.Popen[bytes], int]:
    port, web_port = free_port(), free_port()
    data = work / name
    data.mkdir(parents=True)
    config = data / "bench.toml"
    config.write_text('[node]\nhost = "127.0.0.1"\n[smtp]\nhost = "127.0.0.1"\nport = 1\n'
                      '[log]\nlevel = "WARNING"\n'
                      f'[web]\nenabled = {"true" if web else "false"}\nport = {web_port}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("SRO_DECODER_")}
    proc = subprocess.Popen([sys.executable, "-m", "node.cli.main", "serve", "--config",
                             str(config), "--data-dir", str(data / "data"), "--port", str(port),
                             "--model", "analytic"], env=env, stderr=subprocess.DEVNULL)
    wait_port(port, proc, None)
    if web:  # the web console answers before the burst: its start-up is not measured
        wait_port(web_port, proc, None)
        import httpx

        assert httpx.get(f"http://127.0.0.1:{web_port}/healthz", timeout=30).status_code == 200
    return proc, port


def bench_throughput(work: Path, n: int, rounds: int) -> None:
    from model.training.synth import SynthConfig, generate, write_set

    sros = work / "sros"
    write_set(generate(SynthConfig(n=n, seed=3)), sros)
    files = sorted(sros.glob("*.dcm"))
    rates: dict[bool, list[float]] = {False: [], True: []}
    for r in range(rounds):
        for web in ((False, True) if r % 2 == 0 else (True, False)):
            proc, port = serve(work, f"node-{r}-{'web' if web else 'plain'}", web)
            try:
                ok, seconds = push(port, files, 1, False)
                assert ok == n, (ok, n)
                rates[web].append(n / seconds)
            finally:
                proc.terminate()
                proc.wait(30)
    plain, with_web = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"\nC-STORE, {n} SROs, 1 association, {rounds} round(s) each (analytic decoder):")
    print(f"  node without web: {plain:8.1f} instances/s  {[round(x) for x in rates[False]]}")
    print(f"  node with web:    {with_web:8.1f} instances/s  {[round(x) for x in rates[True]]}")
    print(f"  ratio web/plain:  {with_web / plain:8.3f}  (target >= 0.90)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=100_000, help="records in the database")
    parser.add_argument("--repeat", type=int, default=30, help="fetches of each URL")
    parser.add_argument("--n", type=int, default=500, help="SROs pushed per node")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each node")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        work = Path(tmp)
        ok = bench_pages(work, args.records, args.repeat)
        bench_throughput(work, args.n, args.rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
