"""Batched decoding: concurrent associations share one decoder call.

A decoder call has a fixed cost that dwarfs the cost of one more row (the analytic decoder:
about 3.5 ms for one SRO, about 1.1 ms an SRO in fours), and decoding holds the GIL, so
concurrent C-STORE handlers gain nothing from decoding side by side. Decoding is flat-combined
(:mod:`node.combining`): the handler that finds the decoder free decodes everything pending,
grouped by decode options (the sender's offset profile and the policy), with
:func:`model.pipeline.decode_datasets`, the function ``sro-decoder decode`` uses on a folder; the
others wait on their own futures. A lone association decodes in its own thread, as before.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future

from pydicom.dataset import Dataset

from model.decision import DecodeRecord
from model.decoder import Decoder
from model.pipeline import DecodeOptions, decode_datasets
from node.combining import Combiner

log = logging.getLogger("node.decode")

Job = tuple[tuple[Dataset, DecodeOptions], "Future[DecodeRecord]"]


class DecodeBatcher:
    """Decodes data sets, batching those that arrive together (module docstring)."""

    def __init__(self, decoder: Decoder, batch_max: int = 64) -> None:
        self.decoder = decoder
        self._combiner: Combiner[tuple[Dataset, DecodeOptions], DecodeRecord] = Combiner(
            self._process, batch_max
        )
        self.calls = 0
        self.decoded = 0

    def decode(self, ds: Dataset, options: DecodeOptions) -> DecodeRecord:
        return self._combiner.run((ds, options))

    def stop(self) -> None:
        self._combiner.close()

    def _process(self, jobs: list[Job]) -> None:
        groups: dict[DecodeOptions, list[Job]] = {}
        for job in jobs:
            groups.setdefault(job[0][1], []).append(job)
        for options, group in groups.items():
            self._decode(options, group)

    def _decode(self, options: DecodeOptions, group: list[Job]) -> None:
        try:
            records = decode_datasets([(ds, None, None) for (ds, _), _ in group], self.decoder,
                                      options)
        except Exception as exc:
            if len(group) == 1:
                group[0][1].set_exception(exc)
                return
            log.warning("batch decode failed; decoding one at a time",
                        extra={"fields": {"batch": len(group), "error": repr(exc)}})
            for job in group:
                self._decode(options, [job])
            return
        self.calls += 1
        self.decoded += len(group)
        for (_, future), record in zip(group, records, strict=True):
            future.set_result(record)
