"""Throughput of ``sro-decoder decode`` on Elekta XVI-layout folders, pairing included
(target: 300 SROs/s).

Each case is an XVI SRO-Standard file (identity item, Correction, Align.Clip1, Align.Mask1,
``--frames`` 4D frames) and its RPS companion (ZIP + INI), written by ``synth --layout xvi``. The
time covers reading both files, unzipping the companion, pairing, decoding the SRO with the
companion's offset and deciding, in-process through the same ``decode_files`` the command uses,
after one warm-up; the rate counts SROs (each with its companion). The run also checks that every
SRO was decoded from its own companion.

    python bench/bench_decode_xvi.py [--n 1000] [--frames 2] [--model analytic]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from model.decision import OffsetSourceKind
from model.decoders.registry import load_decoder
from model.inputs.profiles import SHIPPED_PROFILES
from model.pipeline import DecodeOptions, decode_files, expand_paths
from model.training.synth import SynthConfig, generate
from model.training.xvi import XviConfig, write_xvi_set

TARGET_SROS_PER_S = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=2)
    parser.add_argument("--model", default="analytic")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_xvi_set(generate(SynthConfig(n=args.n, seed=2024)), folder,
                      XviConfig(frames=args.frames, seed=2024))
        truth = [json.loads(x) for x in (folder / "truth.jsonl").read_text().splitlines()]
        paths = expand_paths([folder])
        decoder = load_decoder(args.model)
        options = DecodeOptions(profile=SHIPPED_PROFILES["elekta_xvi"])
        list(decode_files(paths[:10], decoder, options))  # warm-up
        best = float("inf")
        records = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            records = [r for r, _ in decode_files(paths, decoder, options)]
            best = min(best, time.perf_counter() - start)
    by_uid = {r.sop_instance_uid: r for r in records}
    paired = sum(1 for t in truth if (s := by_uid[t["sop_instance_uid"]].offset_source)
                 is not None and s.kind is OffsetSourceKind.COMPANION
                 and s.sop_instance_uid == t["companion_sop_instance_uid"])
    rate = len(truth) / best
    print(f"SROs: {len(truth)} (+{len(truth)} RPS companions, {args.frames} 4D frames each)  "
          f"model: {args.model}")
    print(f"decoded from their own companion: {paired}/{len(truth)}")
    print(f"decode (read both + unzip + pair + decode + decide): {rate:8.1f} SROs/s "
          f"({2 * len(truth) / best:.1f} files/s)")
    verdict = "PASS" if rate >= TARGET_SROS_PER_S and paired == len(truth) else "FAIL"
    print(f"target >= {TARGET_SROS_PER_S:.0f} SROs/s, all paired: {verdict}")


if __name__ == "__main__":
    main()
