"""A console's identity (docs/contract.md section 6).

A console is the calling AE title together with the SRO's Station Name (0008,1010),
Manufacturer (0008,0070) and Manufacturer's Model Name (0008,1090) (PS3.3 C.7.5.1, General
Equipment), the names that are present. A profile may map several AE titles to one console
(``alias``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: each part is kept to this many characters (LO is 64, an AE title 16: PS3.5 section 6.2)
PART_MAX = 64


def _part(value: str | None) -> str | None:
    if value is None:
        return None
    text = "".join(ch if ch.isprintable() else " " for ch in str(value)).strip()
    return text[:PART_MAX] or None


@dataclass(frozen=True, slots=True)
class ConsoleIdentity:
    """Who a decision's console is: the calling AE title (or the profile's console name for
    several AE titles) and the General Equipment names the SRO carries."""

    calling_ae_title: str | None
    station_name: str | None = None
    manufacturer: str | None = None
    manufacturer_model_name: str | None = None

    @classmethod
    def of(cls, calling_ae_title: str | None, station_name: str | None = None,
           manufacturer: str | None = None, manufacturer_model_name: str | None = None,
           *, alias: str | None = None) -> ConsoleIdentity:
        """The identity with each part made printable and bounded; ``alias`` (a profile's
        console name) stands for the AE title when the profile maps several to one console."""
        return cls(_part(alias or calling_ae_title), _part(station_name), _part(manufacturer),
                   _part(manufacturer_model_name))

    @property
    def key(self) -> str:
        """A stable text key: the four parts joined by ``|`` (absent parts empty)."""
        return "|".join(p or "" for p in (self.calling_ae_title, self.station_name,
                                           self.manufacturer, self.manufacturer_model_name))

    @property
    def label(self) -> str:
        """What a person reads: the station name (else the AE title), with the AE title."""
        main = self.station_name or self.calling_ae_title or "(unnamed console)"
        if self.station_name and self.calling_ae_title:
            main += f" ({self.calling_ae_title})"
        return main

    @property
    def known(self) -> bool:
        """Whether anything identifies it at all (an object with no AE title and no equipment
        names belongs to no console)."""
        return any((self.calling_ae_title, self.station_name, self.manufacturer,
                    self.manufacturer_model_name))

    def as_dict(self) -> dict[str, Any]:
        return {"calling_ae_title": self.calling_ae_title, "station_name": self.station_name,
                "manufacturer": self.manufacturer,
                "manufacturer_model_name": self.manufacturer_model_name}
