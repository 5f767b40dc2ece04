"""Throughput of ``sro-decoder decode`` on 1,000 SRO files in one call (target: 300 files/s).

Startup (interpreter, imports) is excluded: the files are decoded in-process through the same
``decode_files`` the command uses, after one warm-up. The baseline measured in the same run is
reading the same files with pydicom alone, the floor any decoder pays.

    python bench/bench_decode.py [--n 1000] [--model analytic]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from model.decoders.registry import load_decoder
from model.pipeline import DecodeOptions, decode_files, expand_paths
from model.training.synth import SynthConfig, generate, write_set

TARGET_FILES_PER_S = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--model", default="analytic")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_set(generate(SynthConfig(n=args.n, seed=2024, corrupt_fraction=0.1)), folder)
        paths = expand_paths([folder])
        decoder = load_decoder(args.model)
        options = DecodeOptions()
        list(decode_files(paths[:10], decoder, options))  # warm-up

        def timed(fn: Callable[[], object]) -> float:
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - start)
            return best

        read_only = timed(lambda: [pydicom.dcmread(p) for p in paths])
        decode = timed(lambda: list(decode_files(paths, decoder, options)))
        # the real command, one call over the folder, less its start-up (a call on one file)
        cmd = [sys.executable, "-m", "node.cli.main", "decode", "--json", "--model", args.model]
        one = timed(lambda: subprocess.run([*cmd, str(paths[0])], capture_output=True, check=True))
        full = timed(lambda: subprocess.run([*cmd, str(folder)], capture_output=True, check=True))
    rate = len(paths) / decode
    base = len(paths) / read_only
    print(f"files: {len(paths)}  model: {args.model}")
    print(f"pydicom read only (baseline): {base:8.1f} files/s")
    print(f"decode (read + check + decode + decide): {rate:8.1f} files/s")
    print(f"ratio decode/read-only: {rate / base:.2f}")
    cli_rate = (len(paths) - 1) / (full - one)
    print(f"sro-decoder decode --json, one call, start-up ({one:.2f} s) excluded: ", end="")
    print(f"{cli_rate:8.1f} files/s")
    rate = min(rate, cli_rate)
    verdict = "PASS" if rate >= TARGET_FILES_PER_S else "FAIL"
    print(f"target >= {TARGET_FILES_PER_S:.0f} files/s: {verdict}")


if __name__ == "__main__":
    main()
