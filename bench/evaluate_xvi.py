"""Both decoders on an XVI-layout set (SROs + RPS companions, paired as `decode` pairs them).

Writes a synthetic set with `sro-decoder synth --layout xvi`, decodes the folder with the
`elekta_xvi` profile through `model.pipeline.decode_files` (pairing included) for the energy
model and the analytic decoder, and prints, against truth.jsonl: SROs decoded from their own
companion, decisions, confident-and-wrong (a confident convention not clinically equivalent to
the truth; here counted strictly: the truth outside the credible set), coverage (truth in the
credible set) and false alarms (out of distribution or a failing check) on clean cases, and, per
labelled corruption, how many are flagged.

    python bench/evaluate_xvi.py [--n 2000] [--seed 77] [--corrupt-fraction 0.2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from model.decision import DecisionKind
from model.decoders.registry import load_decoder
from model.inputs.profiles import SHIPPED_PROFILES
from model.pipeline import DecodeOptions, decode_files, expand_paths
from node.cli.main import main as cli


def _convention(d: dict[str, object]) -> tuple[str, bool, str]:
    return (str(d["order"]), bool(d["inverse"]), str(d["patient_position"]))


def evaluate(folder: Path, model: str) -> dict[str, object]:
    truth = {json.loads(line)["sop_instance_uid"]: json.loads(line)
             for line in (folder / "truth.jsonl").read_text().splitlines()}
    options = DecodeOptions(profile=SHIPPED_PROFILES["elekta_xvi"])
    decoder = load_decoder(model)
    counts: Counter[str] = Counter()
    for record, _ in decode_files(expand_paths([folder]), decoder, options):
        row = record.as_dict()
        t = truth.get(row["sop_instance_uid"] or "")
        if t is None:  # a companion's offset_only line
            counts[f"companion {row['decision']}"] += 1
            continue
        counts["sros"] += 1
        counts[f"decision {row['decision']}"] += 1
        source = row.get("offset_source") or {}
        if source.get("sop_instance_uid") == t["companion_sop_instance_uid"]:
            counts["decoded from its own companion"] += 1
        clean = t["corruption"] is None
        counts["clean" if clean else "corrupted"] += 1
        credible = {_convention(a["convention"]) for a in row["alternatives"]}
        if row["convention"] is not None:
            credible.add(_convention(row["convention"]))
        truth_c = _convention(t["convention"])
        if clean:
            if record.decision is DecisionKind.CONFIDENT and truth_c not in credible:
                # confident and the truth outside the credible set: wrong unless equivalent
                counts["clean confident, truth not in credible set"] += 1
            if truth_c in credible:
                counts["clean covered"] += 1
            if record.decision is DecisionKind.OUT_OF_DISTRIBUTION or any(
                    c.result.flags for c in record.checks):
                counts["clean false alarm (out_of_distribution or a failing check)"] += 1
        else:
            kind = f"corrupted {t['corruption']}"
            counts[kind] += 1
            if record.flagged:
                counts[f"{kind} flagged"] += 1
            if record.decision is DecisionKind.CONFIDENT and not record.flagged \
                    and truth_c not in credible:
                counts[f"{kind} confident, unflagged, truth not in credible set"] += 1
    return dict(sorted(counts.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=77)
    parser.add_argument("--corrupt-fraction", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "xvi"
        assert cli(["synth", "--layout", "xvi", "--n", str(args.n), "--out", str(folder),
                    "--seed", str(args.seed), "--xvi-corrupt-fraction",
                    str(args.corrupt_fraction)]) == 0
        for model in ("ebm", "analytic"):
            print(model, json.dumps(evaluate(folder, model), indent=1))


if __name__ == "__main__":
    main()
