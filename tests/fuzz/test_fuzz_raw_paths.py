"""Fuzzing the raw-bytes paths (issue 9, "what must exist" item 5), on a fixed small budget.

Property-based (hypothesis, derandomised: the same examples on every run) and byte-level
mutation tests of the structure check, the fast Registration Sequence reader and the decode
pipeline: no exception escapes; the fast path and pydicom agree on every mutant (or the fast
path hands over, which is agreement by construction); no structurally damaged file is decoded.
``bench/fuzz_inputs.py`` runs the same mutants at length.
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.decoder import Decoder
from model.decoders.registry import load_decoder
from model.dicom.structure import NotParsed, StructureError, check_structure, encoded_items
from model.pipeline import DecodeOptions, decode_datasets, read_bytes
from tests.fuzz.mutants import (
    MUTATORS,
    TRANSFER_SYNTAXES,
    Outcome,
    base_datasets,
    encode,
    examine,
    mutate,
    part10,
)

FUZZ = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow])

BODIES = {ts: [encode(ds, ts) for ds in base_datasets(4)] for ts in TRANSFER_SYNTAXES}


@pytest.fixture(scope="module")
def decoder() -> Decoder:
    return load_decoder("analytic")


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about every odd value it meets
        yield


def assert_sound(out: Outcome, what: str) -> None:
    assert out.escaped is None, f"{what}: {out.escaped}"
    assert out.disagreement is None, f"{what}: {out.disagreement}"
    assert not out.damaged_decoded, f"{what}: a damaged structure was decoded {out.decision}"
    assert out.seconds < 1.0, f"{what}: {out.seconds:.2f} s"


@FUZZ
@given(data=st.binary(max_size=512), implicit=st.booleans(), little=st.booleans(),
       deflated=st.booleans())
def test_arbitrary_bytes_only_ever_fail_as_structure_errors(
        data: bytes, implicit: bool, little: bool, deflated: bool) -> None:
    with contextlib.suppress(StructureError):
        check_structure(data, implicit=implicit, little=little and not deflated,
                        deflated=deflated)
    with contextlib.suppress(NotParsed):
        encoded_items(data, implicit_vr=implicit, little_endian=little,
                      sequences=(0x00700309, 0x0070030A))


@FUZZ
@given(data=st.binary(max_size=512))
def test_arbitrary_files_become_records(data: bytes, decoder: Decoder) -> None:
    """Junk after a valid preamble and File Meta Information, and junk files: one record each,
    ``invalid`` unless pydicom and the checks read a whole SRO."""
    for blob in (data, part10(data, TRANSFER_SYNTAXES[len(data) % 4])):
        ds, error = read_bytes(blob)
        (record,) = decode_datasets([(ds, None, error)], decoder, DecodeOptions())
        assert record.decision.value == "invalid" or ds is not None


@FUZZ
@given(seed=st.integers(0, 2**32 - 1), ts=st.sampled_from(TRANSFER_SYNTAXES),
       kind=st.sampled_from(sorted(MUTATORS)), base=st.integers(0, 3))
def test_mutants_property(seed: int, ts: str, kind: str, base: int, decoder: Decoder) -> None:
    m = mutate(random.Random(seed), BODIES[ts][base], ts, kind)
    assert_sound(examine(m, ts, decoder), f"{ts.name} {kind} {m.detail}")


@pytest.mark.parametrize("ts", TRANSFER_SYNTAXES, ids=[ts.name for ts in TRANSFER_SYNTAXES])
def test_seeded_mutants_of_every_kind(ts: str, decoder: Decoder) -> None:
    """A fixed set: 25 mutants of each kind in each transfer syntax, plus damaged deflate
    streams; every damaged one refused, every valid-structure one accepted."""
    rng = random.Random(9)
    counts = {"damaged": 0, "valid": 0}
    for kind in sorted(MUTATORS):
        for n in range(25):
            m = mutate(rng, BODIES[ts][n % 4], ts, kind)
            out = examine(m, ts, decoder)
            assert_sound(out, f"{kind} {m.detail}")
            if m.label == "valid":
                assert out.reason_code != "unreadable", f"{kind} {m.detail}: refused"
            counts[m.label] = counts.get(m.label, 0) + 1
    for _ in range(20):
        m = mutate(rng, BODIES[ts][0], ts)
        assert_sound(examine(m, ts, decoder), f"{m.kind} {m.detail}")
    assert counts["damaged"] >= 20 and counts["valid"] >= 10  # the labels are exercised
