"""What every decoder (analytic, energy model, baseline) provides, and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from model.batch import InputBatch
from model.conventions import FloatArray


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """The model named in every record (docs/contract.md section 4): name, version, weights'
    SHA-256."""

    name: str
    version: str
    sha256: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {"name": self.name, "version": self.version, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class DecoderOutput:
    """A decoder's answer for a batch: the posterior, the input energies and OOD flags."""

    log_posterior: FloatArray  # (N, H), H = N_HYPOTHESES (96): log softmax(−E(x, ·))
    energy: FloatArray  # (N,): −logsumexp(−E(x, ·)); lower means more plausible
    out_of_distribution: npt.NDArray[np.bool_]  # (N,)
    #: the offset each hypothesis reads from the matrix, ``(t (N, H, 3) mm, r (N, H, 3)°)``,
    #: when the decoder computed it anyway (:func:`model.geometry.implied_offsets`)
    implied_offsets: tuple[FloatArray, FloatArray] | None = None


class Decoder(Protocol):
    """A model that turns a batch of inputs into a posterior over the 96 conventions."""

    info: ModelInfo

    def decode(self, batch: InputBatch) -> DecoderOutput: ...
