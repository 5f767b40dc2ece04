"""The node's one typed, validated settings object, built from layered sources.

Layers, later ones win: the shipped ``config/default.toml`` -> a user file (``--config``) ->
environment variables ``SRO_DECODER_<SECTION>__<KEY>`` -> command-line flags. Every value is
checked once here; a wrong one raises :class:`SettingsError` naming the setting, so start-up stops
with a message instead of failing later. Offset profiles (SPEC section 5) map calling AE titles to
:class:`model.offset.OffsetProfile`; the decision section gives
:class:`model.decision.DecisionPolicy`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from model.decision import DecisionPolicy
from model.offset import OffsetProfile, Precision, TranslationUnit

ENV_PREFIX = "SRO_DECODER_"
#: AE titles: 1-16 characters of the default repertoire, no backslash or control characters
#: (PS3.5 section 6.2, AE value representation).
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+$")


class SettingsError(ValueError):
    """A setting has a wrong value or name; the message names it (``[section] key``)."""


def _check(ok: bool, where: str, message: str) -> None:
    if not ok:
        raise SettingsError(f"setting {where}: {message}")


def _ae_title(value: str, where: str) -> str:
    title = value.strip()
    _check(bool(_AE_TITLE.match(title)), where,
           f"{value!r} is not an AE title (1-16 printable characters, no backslash)")
    return title


@dataclass(frozen=True, slots=True)
class NodeSettings:
    ae_title: str = "SRO_DECODER"
    host: str = "0.0.0.0"
    port: int = 11112
    allowed_calling_ae_titles: tuple[str, ...] = ()
    max_associations: int = 10
    max_pdu_bytes: int = 16382
    max_dataset_bytes: int = 10 * 1024 * 1024
    dimse_timeout_s: float = 30.0
    network_timeout_s: float = 60.0
    acse_timeout_s: float = 30.0
    first_pdu_timeout_s: float = 5.0
    shutdown_grace_s: float = 20.0
    poll_interval_ms: float = 0.2

    def validate(self) -> None:
        _ae_title(self.ae_title, "[node] ae_title")
        for t in self.allowed_calling_ae_titles:
            _ae_title(t, "[node] allowed_calling_ae_titles")
        _check(bool(self.host.strip()), "[node] host", "must not be empty")
        _check(0 <= self.port <= 65535, "[node] port", f"{self.port} is not in 0..65535")
        _check(1 <= self.max_associations <= 1000, "[node] max_associations",
               f"{self.max_associations} is not in 1..1000")
        _check(self.max_pdu_bytes == 0 or 4096 <= self.max_pdu_bytes <= 2**32 - 1,
               "[node] max_pdu_bytes", f"{self.max_pdu_bytes} is neither 0 nor in 4096..2^32-1")
        _check(self.max_dataset_bytes > 0, "[node] max_dataset_bytes", "must be positive")
        for name in ("dimse_timeout_s", "network_timeout_s", "acse_timeout_s",
                     "first_pdu_timeout_s", "shutdown_grace_s"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0, f"[node] {name}", "must be positive")
        _check(self.first_pdu_timeout_s <= self.acse_timeout_s, "[node] first_pdu_timeout_s",
               f"{self.first_pdu_timeout_s} is more than [node] acse_timeout_s "
               f"({self.acse_timeout_s})")
        _check(math.isfinite(self.poll_interval_ms) and 0.05 <= self.poll_interval_ms <= 10,
               "[node] poll_interval_ms", f"{self.poll_interval_ms} is not in 0.05..10")


@dataclass(frozen=True, slots=True)
class StorageSettings:
    data_dir: str = "data"
    database_url: str = ""
    commit_batch_max: int = 64
    commit_timeout_s: float = 20.0
    sqlite_synchronous: str = "FULL"

    def validate(self) -> None:
        _check(bool(self.data_dir.strip()), "[storage] data_dir", "must not be empty")
        _check(1 <= self.commit_batch_max <= 10_000, "[storage] commit_batch_max",
               f"{self.commit_batch_max} is not in 1..10000")
        _check(self.commit_timeout_s > 0, "[storage] commit_timeout_s", "must be positive")
        _check(self.sqlite_synchronous in ("FULL", "NORMAL"), "[storage] sqlite_synchronous",
               f"{self.sqlite_synchronous!r} is not 'FULL' or 'NORMAL'")
        if self.database_url:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(self.database_url)
            except ArgumentError as exc:
                raise SettingsError(f"setting [storage] database_url: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ModelSettings:
    name: str = ""  # empty: model.registry.DEFAULT_MODEL, the shipped model
    # torch intra-op threads of the serving process (0: torch's default, one per core); the
    # node decodes one or a few objects at a time, where extra threads only cost hand-offs
    torch_threads: int = 1

    def validate(self) -> None:
        _check(self.name == self.name.strip(), "[model] name",
               f"{self.name!r} has leading or trailing spaces")
        _check(0 <= self.torch_threads <= 1024, "[model] torch_threads",
               f"{self.torch_threads} is not in 0..1024")


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    tolerance_mm: float = 1.0
    radius_mm: float = 100.0

    def validate(self) -> None:
        for name in ("tolerance_mm", "radius_mm"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0, f"[decision] {name}",
                   f"{value!r} is not a positive number")


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str = "localhost"
    port: int = 25
    starttls: bool = False
    user: str = ""
    password: str = dataclasses.field(default="", repr=False)
    sender: str = "sro-decoder@localhost"
    timeout_s: float = 10.0
    ca_file: str = ""  # CA bundle to verify the server's certificate (empty: system store)

    def validate(self) -> None:
        _check(bool(self.host.strip()), "[smtp] host", "must not be empty")
        _check(1 <= self.port <= 65535, "[smtp] port", f"{self.port} is not in 1..65535")
        _check(bool(_EMAIL.match(self.sender)), "[smtp] sender",
               f"{self.sender!r} is not an e-mail address")
        _check(self.timeout_s > 0, "[smtp] timeout_s", "must be positive")
        _check(not self.password or bool(self.user), "[smtp] password", "is set but user is empty")
        _check(not self.ca_file or Path(self.ca_file).is_file(), "[smtp] ca_file",
               f"{self.ca_file!r} is not a file")


@dataclass(frozen=True, slots=True)
class AlertSettings:
    recipients: tuple[str, ...] = ()
    include_patient_identity: bool = False
    retry_initial_s: float = 5.0
    retry_max_s: float = 600.0
    poll_s: float = 5.0

    def validate(self) -> None:
        for r in self.recipients:
            _check(bool(_EMAIL.match(r)), "[alerts] recipients", f"{r!r} is not an e-mail address")
        _check(self.retry_initial_s > 0, "[alerts] retry_initial_s", "must be positive")
        _check(self.retry_max_s >= self.retry_initial_s, "[alerts] retry_max_s",
               "must be at least retry_initial_s")
        _check(self.poll_s > 0, "[alerts] poll_s", "must be positive")


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = "INFO"
    format: str = "json"

    def validate(self) -> None:
        _check(self.level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "[log] level",
               f"{self.level!r} is not one of DEBUG, INFO, WARNING, ERROR")
        _check(self.format in ("json", "text"), "[log] format",
               f"{self.format!r} is not 'json' or 'text'")


@dataclass(frozen=True, slots=True)
class ProfileSettings:
    """One offset profile of SPEC section 5 and the calling AE titles it applies to."""

    name: str = "default"
    calling_ae_titles: tuple[str, ...] = ()
    private_creator: str = "SRO DECODER RING"
    group: int = 0
    translation_element: int = 0x01
    rotation_element: int = 0x02
    isocenter_element: int = 0x03
    console_element: int = 0x04
    translation_unit: str = "mm"
    wrap_angles: bool = True
    rotation_step_deg: float = 0.1
    translation_step_mm: float = 0.1

    def validate(self) -> None:
        where = f"[profiles.{self.name}]"
        for t in self.calling_ae_titles:
            _ae_title(t, f"{where} calling_ae_titles")
        _check(bool(self.private_creator.strip()) and len(self.private_creator) <= 64,
               f"{where} private_creator", "must be 1-64 characters")
        _check(self.group == 0 or (0x0009 <= self.group <= 0xFFFF and self.group % 2 == 1),
               f"{where} group", f"0x{self.group:04X} is neither 0 nor an odd (private) group")
        for name in ("translation_element", "rotation_element"):
            value = getattr(self, name)
            _check(0x00 <= value <= 0xFF, f"{where} {name}", f"{value} is not in 0..255")
        for name in ("isocenter_element", "console_element"):
            value = getattr(self, name)
            _check(0x00 <= value <= 0xFF, f"{where} {name}", f"{value} is not in 0..255 (0: none)")
        _check(self.translation_unit in ("mm", "cm"), f"{where} translation_unit",
               f"{self.translation_unit!r} is not 'mm' or 'cm'")
        for name in ("rotation_step_deg", "translation_step_mm"):
            value = getattr(self, name)
            _check(math.isfinite(value) and value > 0, f"{where} {name}", "must be positive")

    def offset_profile(self) -> OffsetProfile:
        return OffsetProfile(
            name=self.name,
            private_creator=self.private_creator,
            group=self.group or None,
            translation_element=self.translation_element,
            rotation_element=self.rotation_element,
            isocenter_element=self.isocenter_element or None,
            console_element=self.console_element or None,
            translation_unit=TranslationUnit(self.translation_unit),
            wrap_angles=self.wrap_angles,
            precision=Precision(self.rotation_step_deg, self.translation_step_mm),
        )


_SECTIONS: dict[str, type] = {
    "node": NodeSettings,
    "storage": StorageSettings,
    "model": ModelSettings,
    "decision": DecisionSettings,
    "smtp": SmtpSettings,
    "alerts": AlertSettings,
    "log": LogSettings,
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything ``serve`` and ``audit`` need, validated (see the module docstring)."""

    node: NodeSettings = field(default_factory=NodeSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    decision: DecisionSettings = field(default_factory=DecisionSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    log: LogSettings = field(default_factory=LogSettings)
    profiles: tuple[ProfileSettings, ...] = (ProfileSettings(),)
    sources: tuple[str, ...] = ()

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir).expanduser().resolve()

    @property
    def archive_dir(self) -> Path:
        return self.data_dir / "archive"

    @property
    def database_url(self) -> str:
        if self.storage.database_url:
            return self.storage.database_url
        return f"sqlite:///{self.data_dir / 'audit.db'}"

    @property
    def policy(self) -> DecisionPolicy:
        return DecisionPolicy(tolerance_mm=self.decision.tolerance_mm,
                              radius_mm=self.decision.radius_mm)

    def profile_for(self, calling_ae_title: str | None) -> OffsetProfile:
        """The offset profile for a calling AE title (the ``default`` one when none lists it)."""
        title = (calling_ae_title or "").strip()
        default = None
        for p in self.profiles:
            if title and title in p.calling_ae_titles:
                return p.offset_profile()
            if p.name == "default":
                default = p
        return (default or ProfileSettings()).offset_profile()

    def validate(self) -> Settings:
        for name in _SECTIONS:
            getattr(self, name).validate()
        names = [p.name for p in self.profiles]
        if "default" not in names:
            raise SettingsError("setting [profiles.default]: the default profile is missing")
        seen: dict[str, str] = {}
        for p in self.profiles:
            p.validate()
            for t in p.calling_ae_titles:
                if t in seen:
                    raise SettingsError(
                        f"setting [profiles.{p.name}] calling_ae_titles: {t!r} is already "
                        f"listed by [profiles.{seen[t]}]"
                    )
                seen[t] = p.name
        return self


# ---------------------------------------------------------------------------------------------
# Loading and merging the layers


def _shipped_defaults() -> dict[str, Any]:
    text = resources.files("config").joinpath("default.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _merge(base: dict[str, Any], layer: Mapping[str, Any], where: str) -> None:
    for key, value in layer.items():
        if isinstance(value, Mapping):
            target = base.setdefault(key, {})
            if not isinstance(target, dict):
                raise SettingsError(f"setting {where}{key}: expected a value, got a table")
            _merge(target, value, f"{where}{key}.")
        else:
            base[key] = value


def _env_layer(env: Mapping[str, str]) -> dict[str, Any]:
    """``SRO_DECODER_SMTP__HOST=x`` -> ``{"smtp": {"host": "x"}}``; profiles as
    ``SRO_DECODER_PROFILES__<NAME>__<KEY>``."""
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if parts[0] == "profiles" and len(parts) == 3:
            profiles = out.setdefault("profiles", {})
            # profile names keep their case in TOML; match case-insensitively later
            profiles.setdefault(parts[1], {})[parts[2]] = value
        elif len(parts) == 2:
            out.setdefault(parts[0], {})[parts[1]] = value
        else:
            raise SettingsError(f"environment variable {name}: expected "
                                f"{ENV_PREFIX}<SECTION>__<KEY>")
    return out


def _convert(value: Any, kind: Any, where: str) -> Any:
    """Convert a TOML or environment value to the field's type, or raise naming the setting."""
    from_text = isinstance(value, str)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if from_text and value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if from_text and value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"setting {where}: {value!r} is not true or false")
    if kind is int:
        if isinstance(value, bool):
            raise SettingsError(f"setting {where}: {value!r} is not an integer")
        if isinstance(value, int):
            return value
        if from_text:
            try:
                return int(value.strip(), 0)
            except ValueError:
                pass
        raise SettingsError(f"setting {where}: {value!r} is not an integer")
    if kind is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            out = float(value)
        elif from_text:
            try:
                out = float(value.strip())
            except ValueError as exc:
                raise SettingsError(f"setting {where}: {value!r} is not a number") from exc
        else:
            raise SettingsError(f"setting {where}: {value!r} is not a number")
        if not math.isfinite(out):
            raise SettingsError(f"setting {where}: {value!r} is not a finite number")
        return out
    if kind is str:
        if isinstance(value, str):
            return value
        raise SettingsError(f"setting {where}: {value!r} is not a string")
    if kind == tuple[str, ...]:
        if from_text:
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(v.strip() for v in value)
        raise SettingsError(f"setting {where}: {value!r} is not a list of strings")
    raise TypeError(f"no converter for {kind!r}")  # pragma: no cover - a programming error


def _build(cls: type, raw: Mapping[str, Any], where: str, **extra: Any) -> Any:
    import typing

    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = dict(extra)
    for key, value in raw.items():
        if key not in names or key in extra:
            raise SettingsError(f"setting {where} {key}: unknown setting")
        kwargs[key] = _convert(value, hints[key], f"{where} {key}")
    return cls(**kwargs)


def load_settings(
    config_file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build and validate the settings from the four layers (module docstring).

    ``overrides`` are the command-line flags, as ``{"node": {"port": 104}}``; ``None`` values in
    it are ignored (a flag not given).
    """
    merged = _shipped_defaults()
    sources = ["config/default.toml (shipped)"]
    if config_file is not None:
        path = Path(config_file)
        try:
            layer = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise SettingsError(f"--config {path}: no such file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"--config {path}: cannot read: {exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"--config {path}: not valid TOML: {exc}") from exc
        _merge(merged, layer, "")
        sources.append(str(path))
    env_layer = _env_layer(os.environ if env is None else env)
    if env_layer:
        # profiles from the environment match existing profile names case-insensitively
        env_profiles = env_layer.pop("profiles", {})
        known = {name.lower(): name for name in merged.get("profiles", {})}
        for lower, values in env_profiles.items():
            merged.setdefault("profiles", {}).setdefault(known.get(lower, lower), {}).update(values)
        _merge(merged, env_layer, "")
        sources.append("environment")
    if overrides:
        flags = {s: {k: v for k, v in vals.items() if v is not None}
                 for s, vals in overrides.items()}
        _merge(merged, {s: v for s, v in flags.items() if v}, "")
        sources.append("command line")

    sections: dict[str, Any] = {}
    for key, table in merged.items():
        if key == "profiles":
            continue
        if key not in _SECTIONS:
            raise SettingsError(f"setting [{key}]: unknown section")
        if not isinstance(table, Mapping):
            raise SettingsError(f"setting [{key}]: expected a table")
        sections[key] = _build(_SECTIONS[key], table, f"[{key}]")
    profiles_raw = merged.get("profiles", {})
    if not isinstance(profiles_raw, Mapping):
        raise SettingsError("setting [profiles]: expected tables [profiles.<name>]")
    profiles = []
    for name, table in profiles_raw.items():
        if not isinstance(table, Mapping):
            raise SettingsError(f"setting [profiles.{name}]: expected a table")
        profiles.append(_build(ProfileSettings, table, f"[profiles.{name}]", name=str(name)))
    settings = Settings(**sections, profiles=tuple(profiles), sources=tuple(sources))
    return settings.validate()
