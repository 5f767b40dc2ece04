"""Measuring decoders side by side on labelled sets (issue 3 acceptance, ``sro-decoder evaluate``).

Wrong means not clinically equivalent to the truth: the transforms the top and the true
convention imply from the reported offset differ by more than ``tolerance_mm`` within
``radius_mm`` of the isocenter (:func:`model.geometry.displacement_bound_mm`, docs/contract.md
section 4).
Decisions come from :func:`model.decision.decide`, as in every record.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from model.conventions import FloatArray
from model.decision import DecisionKind, DecisionPolicy, decide
from model.decoder import Decoder, DecoderOutput
from model.decoders.analytic import AnalyticDecoder
from model.geometry import displacement_bound_mm, forward
from model.training.config import CalibrationConfig
from model.training.data import LabelledSet


@dataclass(frozen=True, slots=True)
class Metrics:
    """One decoder on one labelled set."""

    name: str
    n_clean: int
    n_corrupted: int
    confident: int
    confident_share: float
    confident_wrong: int
    ambiguous: int
    coverage: float
    ood_recall: float  # on corrupted cases no hypothesis explains (the analytic decoder's view)
    ood_recall_all: float  # on every corrupted case
    n_unexplained: int
    false_alarms: int
    false_alarm_rate: float
    ece: float
    top_accuracy: float
    throughput: float  # inputs per second, decode() alone

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def wrong_against_truth(data: LabelledSet, top: npt.NDArray[np.int64], policy: DecisionPolicy
                        ) -> npt.NDArray[np.bool_]:
    """Whether each top convention is not clinically equivalent to the true one (clean cases)."""
    b = data.batch
    predicted = forward(b.translation_mm, b.rotation_deg, b.isocenter_mm)
    n = len(data)
    truth = np.where(data.truth >= 0, data.truth, 0)
    bound = displacement_bound_mm(
        predicted[np.arange(n), top], predicted[np.arange(n), truth], b.isocenter_mm,
        policy.radius_mm,
    )
    return np.asarray((bound > policy.tolerance_mm) | (data.truth < 0), dtype=bool)


def expected_calibration_error(confidence: FloatArray, correct: npt.NDArray[np.bool_],
                               bins: int = 15) -> float:
    """ECE of the top probability against exact top-1 correctness, equal-width bins."""
    if len(confidence) == 0:
        return float("nan")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for k in range(bins):
        sel = which == k
        if sel.any():
            total += sel.mean() * abs(confidence[sel].mean() - correct[sel].mean())
    return float(total)


def reliability(confidence: FloatArray, correct: npt.NDArray[np.bool_], bins: int = 15
                ) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per-bin mean confidence, accuracy and count for the reliability diagram."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    conf = np.full(bins, np.nan)
    acc = np.full(bins, np.nan)
    count = np.zeros(bins)
    for k in range(bins):
        sel = which == k
        count[k] = sel.sum()
        if sel.any():
            conf[k] = confidence[sel].mean()
            acc[k] = correct[sel].mean()
    return conf, acc, count


def unexplained_mask(data: LabelledSet, reference: DecoderOutput | None = None
                     ) -> npt.NDArray[np.bool_]:
    """Corrupted cases no hypothesis explains, as the exact analytic decoder finds."""
    out = reference if reference is not None else AnalyticDecoder().decode(data.batch)
    return data.corrupted & out.out_of_distribution


@dataclass(frozen=True, slots=True)
class Evaluated:
    """A decoder's output on a set, its decisions and its metrics."""

    output: DecoderOutput
    decisions: list[DecisionKind]
    metrics: Metrics


def evaluate_decoder(
    decoder: Decoder,
    data: LabelledSet,
    policy: DecisionPolicy,
    unexplained: npt.NDArray[np.bool_],
    name: str | None = None,
) -> Evaluated:
    """Decode ``data`` and measure it (decisions through :func:`model.decision.decide`)."""
    start = time.perf_counter()
    out = decoder.decode(data.batch)
    elapsed = time.perf_counter() - start
    records = decide(data.batch, out, decoder.info, policy)
    kinds = [r.decision for r in records]
    posterior = np.exp(out.log_posterior)
    top = np.argmax(posterior, axis=1)
    clean = ~data.corrupted & (data.truth >= 0)
    corrupted = data.corrupted
    confident = np.array([k is DecisionKind.CONFIDENT for k in kinds])
    ambiguous = np.array([k is DecisionKind.AMBIGUOUS for k in kinds])
    ood = np.array([k is DecisionKind.OUT_OF_DISTRIBUTION for k in kinds])
    wrong = wrong_against_truth(data, top, policy)
    covered = np.zeros(len(data), dtype=bool)
    for i, r in enumerate(records):
        if clean[i] and r.convention is not None:
            members = {r.convention.index} | {a.convention.index for a in r.alternatives}
            covered[i] = int(data.truth[i]) in members
    n_clean = int(clean.sum())
    conf_clean = posterior[clean, top[clean]]
    correct = top[clean] == data.truth[clean]

    def share(num: int, den: int) -> float:
        return float(num) / den if den else float("nan")

    metrics = Metrics(
        name=name or decoder.info.name,
        n_clean=n_clean,
        n_corrupted=int(corrupted.sum()),
        confident=int((confident & clean).sum()),
        confident_share=share(int((confident & clean).sum()), n_clean),
        confident_wrong=int((confident & clean & wrong).sum()),
        ambiguous=int((ambiguous & clean).sum()),
        coverage=share(int(covered[clean].sum()), n_clean),
        ood_recall=share(int((ood & unexplained).sum()), int(unexplained.sum())),
        ood_recall_all=share(int((ood & corrupted).sum()), int(corrupted.sum())),
        n_unexplained=int(unexplained.sum()),
        false_alarms=int((ood & clean).sum()),
        false_alarm_rate=share(int((ood & clean).sum()), n_clean),
        ece=expected_calibration_error(conf_clean, correct),
        top_accuracy=share(int(correct.sum()), n_clean),
        throughput=len(data) / elapsed if elapsed > 0 else float("inf"),
    )
    return Evaluated(out, kinds, metrics)


def write_reliability_png(results: dict[str, Evaluated], data: LabelledSet, path: Path) -> None:
    """Reliability diagram (top probability against top-1 accuracy) per decoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clean = ~data.corrupted & (data.truth >= 0)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    for name, ev in results.items():
        post = np.exp(ev.output.log_posterior[clean])
        top = post.argmax(axis=1)
        conf, acc, _ = reliability(post.max(axis=1), top == data.truth[clean])
        ok = ~np.isnan(conf)
        ax.plot(conf[ok], acc[ok], marker="o",
                label=f"{name} (ECE {ev.metrics.ece:.3f})")
    ax.set_xlabel("top probability")
    ax.set_ylabel("top-1 accuracy (clean cases)")
    ax.set_title("Reliability")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_confusion_png(results: dict[str, Evaluated], data: LabelledSet, path: Path) -> None:
    """Decision against what the case is (clean / corrupted unexplained / corrupted explained)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    analytic_ood = next(
        (ev.output.out_of_distribution for n, ev in results.items() if n == "analytic"), None
    )
    clean = ~data.corrupted & (data.truth >= 0)
    unexplained = data.corrupted & (
        analytic_ood if analytic_ood is not None else np.ones(len(data), dtype=bool)
    )
    rows = {"clean": clean, "corrupted, unexplained": unexplained,
            "corrupted, explained": data.corrupted & ~unexplained}
    cols = [DecisionKind.CONFIDENT, DecisionKind.AMBIGUOUS, DecisionKind.OUT_OF_DISTRIBUTION]
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.6), squeeze=False)
    for ax, (name, ev) in zip(axes[0], results.items(), strict=True):
        kinds = np.array([k.value for k in ev.decisions])
        mat = np.array([[((kinds == c.value) & m).sum() for c in cols] for m in rows.values()])
        frac = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                ax.text(j, i, str(mat[i, j]), ha="center", va="center",
                        color="white" if frac[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(cols)), [c.value.replace("_", " ") for c in cols], fontsize=8)
        ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def calibrate_threshold(
    energy: np.ndarray, clean: np.ndarray, unexplained: np.ndarray, config: CalibrationConfig
) -> dict[str, float]:
    """The input-energy threshold above which an input is out of distribution.

    From held-out data: the ``clean_quantile`` of clean energies and the ``corrupt_quantile``
    of unexplained corrupted ones; midway between them when they are apart. When they overlap,
    the clean quantile wins (the false-alarm limit), and the card says so.
    """
    hi_clean = float(np.quantile(energy[clean], config.clean_quantile))
    lo_bad = float(np.quantile(energy[unexplained], config.corrupt_quantile)) if unexplained.any() \
        else hi_clean + 1.0
    threshold = 0.5 * (hi_clean + lo_bad) if lo_bad > hi_clean else hi_clean
    return {
        "threshold": threshold,
        "clean_quantile_energy": hi_clean,
        "corrupt_quantile_energy": lo_bad,
        "separated": float(lo_bad > hi_clean),
        "clean_max_energy": float(energy[clean].max()),
        "corrupt_min_energy":
            float(energy[unexplained].min()) if unexplained.any() else float("nan"),
    }
