"""Byte-level mutants of valid SROs through the raw-bytes paths (issue 9 acceptance figures).

Valid synthetic SROs (model.training.synth, model.dicom.sro.write; half with undefined-length nested
sequences) in every transfer syntax the node accepts (Explicit and Implicit VR Little Endian,
Deflated Explicit VR Little Endian, Explicit VR Big Endian) are mutated (bytes flipped, cut
short, VRs and lengths changed, undefined-length sequences nested deeply, items inserted, the
deflate stream damaged; ``tests/fuzz/mutants.py``), and each mutant goes through the structure
check, the fast Registration Sequence reader and pydicom's, and the decode pipeline. Printed:
mutants, exceptions escaping, disagreements fast vs pydicom, damaged structures decoded, max
seconds per file, files over 1 s. Exit status 1 unless the last four are 0.

    python bench/fuzz_inputs.py [--n 10000] [--seed 0] [--model analytic]
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.fuzz.mutants

from model.decoders.registry import load_decoder
from tests.fuzz.mutants import (
    TRANSFER_SYNTAXES,
    base_datasets,
    encode,
    examine,
    mutate,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="mutants (default 10,000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="analytic")
    parser.add_argument("--bases", type=int, default=8, help="valid SROs to mutate")
    parser.add_argument("--show", type=int, default=10, help="failures to print in full")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # pydicom warns about every odd value it meets
    decoder = load_decoder(args.model)
    rng = random.Random(args.seed)
    bodies = {ts: [encode(ds, ts) for ds in base_datasets(args.bases, seed=args.seed + 11)]
              for ts in TRANSFER_SYNTAXES}
    escaped = disagreements = damaged_decoded = over_1s = 0
    worst = 0.0
    kinds: collections.Counter[str] = collections.Counter()
    labels: collections.Counter[str] = collections.Counter()
    decisions: collections.Counter[str] = collections.Counter()
    shown = 0
    start = time.perf_counter()
    for i in range(args.n):
        ts = TRANSFER_SYNTAXES[i % len(TRANSFER_SYNTAXES)]
        body = rng.choice(bodies[ts])
        m = mutate(rng, body, ts)
        out = examine(m, ts, decoder)
        kinds[m.kind] += 1
        labels[m.label] += 1
        decisions[str(out.decision)] += 1
        worst = max(worst, out.seconds)
        over_1s += out.seconds > 1.0
        bad = [x for x in (out.escaped, out.disagreement) if x]
        escaped += out.escaped is not None
        disagreements += out.disagreement is not None
        damaged_decoded += out.damaged_decoded
        if out.damaged_decoded:
            bad.append(f"damaged, decoded {out.decision}")
        if bad and shown < args.show:
            shown += 1
            print(f"  #{i} {ts.name} {m.kind} ({m.detail}): {'; '.join(bad)}")
    total = time.perf_counter() - start
    print(f"mutants: {args.n}  (seed {args.seed}, model {args.model}, {total:.1f} s)")
    print(f"  by kind: {dict(sorted(kinds.items()))}")
    print(f"  by label: {dict(sorted(labels.items()))}")
    print(f"  decisions: {dict(sorted(decisions.items()))}")
    print(f"exceptions escaping: {escaped}")
    print(f"disagreements fast vs pydicom: {disagreements}")
    print(f"damaged structures decoded: {damaged_decoded}")
    print(f"max seconds per file: {worst:.4f}")
    print(f"files over 1 s: {over_1s}")
    return int(bool(escaped or disagreements or damaged_decoded or over_1s))


if __name__ == "__main__":
    sys.exit(main())
