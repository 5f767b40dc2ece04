"""The SRO with its couch offset in a private block of the same data set.

The registration is read by :func:`model.dicom.sro.read` (docs/contract.md sections 1.1 and 1.4),
then the offset from the private block the sender's profile names (by default the block of
docs/contract.md section 1.6, found through its private creator, PS3.5 section 7.8.1). No block:
no offset, so ``no_offset`` unless an override supplies one (section 1.7).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset

from model.dicom import sro
from model.inputs.adapter import RegistrationInput
from model.inputs.profiles import OffsetProfile


@dataclass(frozen=True, slots=True)
class PrivateBlockAdapter:
    """Spatial Registration Storage (PS3.3 A.39) with the offset in a private block."""

    name: str = "sro_private_block"
    sop_class_uids: tuple[str, ...] = (sro.SPATIAL_REGISTRATION_STORAGE,)

    def recognises(self, ds: Dataset) -> bool:
        """Every Spatial Registration Storage data set: the block is optional."""
        return sro.sop_class_uid_of(ds) in self.sop_class_uids

    def read(self, ds: Dataset, profile: OffsetProfile) -> RegistrationInput:
        """The registration, then the offset; raises :class:`model.errors.SROError` on the
        first failed check, the registration's checks first."""
        registration = sro.read(ds, selector=profile.registration_selector,
                                label=profile.labels)
        return RegistrationInput(registration, profile.extract(ds))


PRIVATE_BLOCK = PrivateBlockAdapter()
