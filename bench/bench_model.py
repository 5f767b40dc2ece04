"""Throughput of the energy model alone (features + network) against the analytic decoder.

Issue 3 targets on the 2-core machine: at least 20,000 inputs/s at a batch of 4,096 and a
single input in under 5 ms. Both decoders are timed in the same run on the same inputs
(best of ``--repeats`` for batches, median for single inputs); the ratio is printed.

    python bench/bench_model.py [--weights FILE] [--batch 4096] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from model.decoders.analytic import AnalyticDecoder
from model.decoders.energy.inference import load_energy_decoder
from model.training.data import Role, mixture

RANGES = (1.0, 3.0, 6.0, 10.0)
PRECISIONS = ((0.1, 0.1), (0.1, 1.0), (0.5, 0.2), (1.0, 1.0))


def best_of(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def median_of(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None, help="default: shipped weights")
    parser.add_argument("--batch", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--single-repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = mixture(args.batch, 12345, Role.EVALUATION, RANGES, PRECISIONS, isocenter_fraction=0.5)
    batch = data.batch
    one = batch.subset(slice(0, 1))
    ebm = load_energy_decoder(args.weights)
    analytic = AnalyticDecoder()

    # interleaved rounds, best of each: a busy neighbour on the machine hits all alike
    ebm_batch = ebm_decode = ana_batch = float("inf")
    for _ in range(args.repeats):
        ebm_batch = min(ebm_batch, best_of(lambda: ebm.energies(batch), 1))
        ebm_decode = min(ebm_decode, best_of(lambda: ebm.decode(batch), 1))
        ana_batch = min(ana_batch, best_of(lambda: analytic.decode(batch), 1))
    ebm_one = median_of(lambda: ebm.energies(one), args.single_repeats)
    ana_one = median_of(lambda: analytic.decode(one), args.single_repeats)

    n = len(batch)
    print(f"threads {torch.get_num_threads()}, batch {n}, model {ebm.info.sha256}")
    print(f"ebm features+network   batch: {n / ebm_batch:12,.0f} inputs/s  "
          f"({ebm_batch * 1e3:.1f} ms)   target >= 20,000")
    print(f"ebm decode (posterior) batch: {n / ebm_decode:12,.0f} inputs/s")
    print(f"analytic decode        batch: {n / ana_batch:12,.0f} inputs/s")
    print(f"ratio ebm / analytic   batch: {ana_batch / ebm_batch:12.2f}x")
    print(f"ebm features+network  single: {ebm_one * 1e3:12.3f} ms   target < 5 ms")
    print(f"analytic decode       single: {ana_one * 1e3:12.3f} ms")
    print(f"ratio ebm / analytic  single: {ana_one / ebm_one:12.2f}x")
    ok = n / ebm_batch >= 20_000 and ebm_one < 0.005
    print("targets met" if ok else "TARGETS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
