"""The node's one typed, validated settings object, built from layered sources.

Layers, later ones win: the shipped ``config/default.toml`` -> a user file (``--config``) ->
environment variables ``SRO_DECODER_<SECTION>__<KEY>`` (lists comma-separated) -> command-line
flags. Each section is a frozen pydantic model and holds the only copy of its defaults (the
shipped file documents them; a test keeps the two equal). A wrong value or name raises
:class:`SettingsError` naming the setting (``[section] key``), so start-up stops with a message
instead of failing later. Offset profiles (docs/contract.md section 5) map calling AE titles to
:class:`model.inputs.profiles.OffsetProfile`; the decision section gives
:class:`model.decision.DecisionPolicy`.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictFloat,
    StrictInt,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from model.consoles.history import HistoryPolicy
from model.decision import DecisionPolicy
from model.inputs.profiles import (
    SHIPPED_PROFILES,
    OffsetLayout,
    OffsetProfile,
    RotationUnit,
    ValueVR,
    parse_components,
)
from model.offset import Precision, TranslationUnit

ENV_PREFIX = "SRO_DECODER_"
#: AE titles: 1-16 characters of the default repertoire, no backslash or control characters
#: (PS3.5 section 6.2, AE value representation).
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_EMAIL = re.compile(r"[^@\s,;<>]+@[^@\s,;<>]+")


class SettingsError(ValueError):
    """A setting has a wrong value or name; the message names it (``[section] key``)."""


# ---------------------------------------------------------------------------------------------
# Value types. TOML gives typed values, the environment text: text is parsed (integers in any
# base, "yes"/"no" booleans, comma-separated lists); other values must have the field's type
# (no true for 1, no 1.0 for an integer).


def _from_text(parse: Callable[[str], Any]) -> BeforeValidator:
    def convert(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return parse(value.strip())
        except ValueError:
            return value  # the strict type then says what was expected
    return BeforeValidator(convert)


_BOOLS = {"1": True, "true": True, "yes": True, "on": True,
          "0": False, "false": False, "no": False, "off": False}
Int = Annotated[StrictInt, _from_text(lambda text: int(text, 0))]
Float = Annotated[StrictFloat, _from_text(float)]  # finite: allow_inf_nan=False below
Bool = Annotated[StrictBool, _from_text(lambda text: _BOOLS.get(text.lower(), text))]


def _list(value: Any) -> Any:
    if isinstance(value, str):
        value = [item for item in value.split(",") if item.strip()]
    if isinstance(value, list):
        return [item.strip() if isinstance(item, str) else item for item in value]
    return value


def _checked(test: Callable[[str], object], message: str) -> AfterValidator:
    def check(value: str) -> str:
        if not test(value):
            raise ValueError(f"{value!r} {message}")
        return value
    return AfterValidator(check)


AETitle = Annotated[str, AfterValidator(str.strip), _checked(
    _AE_TITLE.match, "is not an AE title (1-16 printable characters, no backslash)")]
Email = Annotated[str, _checked(_EMAIL.fullmatch, "is not an e-mail address")]
AETitles = Annotated[tuple[AETitle, ...], BeforeValidator(_list)]
Emails = Annotated[tuple[Email, ...], BeforeValidator(_list)]
NonEmpty = Annotated[str, _checked(lambda s: bool(s.strip()), "must not be empty")]


class Section(BaseModel):
    """A section of the settings: frozen, finite numbers, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------------------------------------
# The sections: the only copy of each default; config/default.toml documents every key (a test
# keeps the file's keys and values equal to these).


class NodeSettings(Section):
    ae_title: AETitle = "SRO_DECODER"
    host: NonEmpty = "0.0.0.0"
    port: Int = Field(11112, ge=0, le=65535)
    allowed_calling_ae_titles: AETitles = ()
    max_associations: Int = Field(10, ge=1, le=1000)
    max_pdu_bytes: Int = 16382
    max_dataset_bytes: Int = Field(10 * 1024 * 1024, gt=0)
    dimse_timeout_s: Float = Field(30.0, gt=0)
    network_timeout_s: Float = Field(60.0, gt=0)
    acse_timeout_s: Float = Field(30.0, gt=0)
    first_pdu_timeout_s: Float = Field(5.0, gt=0, le=300)
    max_connections: Int = Field(200, ge=1, le=100000)
    max_connections_per_address: Int = Field(32, ge=1, le=100000)
    shutdown_grace_s: Float = Field(20.0, gt=0)
    poll_interval_ms: Float = Field(0.2, ge=0.05, le=10)
    #: this node's name in a database shared by several nodes ('' : host name and data folder)
    name: Annotated[str, _checked(lambda s: s == s.strip() and s.isprintable() and len(s) <= 128,
                                  "has leading or trailing spaces, control characters or more "
                                  "than 128 characters")] = ""

    @field_validator("max_pdu_bytes")
    @classmethod
    def _pdu(cls, value: int) -> int:
        if not (value == 0 or 4096 <= value <= 2**32 - 1):
            raise ValueError(f"{value} is neither 0 nor in 4096..2^32-1")
        return value

    @field_validator("first_pdu_timeout_s")
    @classmethod
    def _first_pdu(cls, value: float, info: ValidationInfo) -> float:
        acse = info.data.get("acse_timeout_s")
        if acse is not None and value > acse:
            raise ValueError(f"{value} is more than [node] acse_timeout_s ({acse})")
        return value


class StorageSettings(Section):
    data_dir: NonEmpty = "data"
    database_url: str = ""
    commit_batch_max: Int = Field(64, ge=1, le=10_000)
    commit_timeout_s: Float = Field(20.0, gt=0)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"

    @field_validator("database_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value:
            from sqlalchemy.engine import make_url
            from sqlalchemy.exc import ArgumentError

            try:
                make_url(value)
            except ArgumentError as exc:
                raise ValueError(str(exc)) from exc
        return value


class ModelSettings(Section):
    name: Annotated[str, _checked(lambda s: s == s.strip(), "has leading or trailing spaces")] = ""
    torch_threads: Int = Field(1, ge=0, le=1024)


_POLICY = DecisionPolicy()  # the decision defaults live in model.decision


class DecisionSettings(Section):
    tolerance_mm: Float = Field(_POLICY.tolerance_mm, gt=0)
    radius_mm: Float = Field(_POLICY.radius_mm, gt=0)
    isocenter_bound_mm: Float = Field(_POLICY.isocenter_bound_mm, gt=0)


_HISTORY = HistoryPolicy()  # the consoles' defaults live in model.consoles


class ConsolesSettings(Section):
    """Consoles over time (docs/contract.md section 6): how many consecutive confident decisions
    establish a learned convention, the prior error rate of an established console, and the
    change detector's threshold (set on held-out synthetic histories, in the model card)."""

    learn_after: Int = Field(_HISTORY.learn_after, ge=1, le=1000)
    error_rate: Float = Field(_HISTORY.error_rate, gt=0, lt=1)
    sprt_threshold: Float = Field(_HISTORY.sprt_threshold, gt=0)

    @property
    def policy(self) -> HistoryPolicy:
        return HistoryPolicy(learn_after=self.learn_after, error_rate=self.error_rate,
                             sprt_threshold=self.sprt_threshold)


class SmtpSettings(Section):
    host: NonEmpty = "localhost"
    port: Int = Field(25, ge=1, le=65535)
    starttls: Bool = False
    user: str = ""
    password: str = Field("", repr=False)
    sender: Email = "sro-decoder@localhost"
    timeout_s: Float = Field(10.0, gt=0)
    ca_file: Annotated[str, _checked(lambda s: not s or Path(s).is_file(), "is not a file")] = ""

    @field_validator("password")
    @classmethod
    def _login(cls, value: str, info: ValidationInfo) -> str:
        if value and not info.data.get("user"):
            raise ValueError("is set but user is empty")
        return value


class AlertSettings(Section):
    recipients: Emails = ()
    include_patient_identity: Bool = False
    retry_initial_s: Float = Field(5.0, gt=0)
    retry_max_s: Float = 600.0
    poll_s: Float = Field(5.0, gt=0)
    #: at most one e-mail per console per window; more alerts of that console in it wait and go
    #: out together as one digest listing every object (docs/contract.md section 6); 0: no
    #: grouping
    digest_window_s: Float = Field(300.0, ge=0)

    @field_validator("retry_max_s")
    @classmethod
    def _retry(cls, value: float, info: ValidationInfo) -> float:
        if value < info.data.get("retry_initial_s", 0):
            raise ValueError("must be at least retry_initial_s")
        return value


_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


class LogSettings(Section):
    level: Annotated[str, _checked(lambda s: s.upper() in _LEVELS, f"is not one of {_LEVELS}")] = (
        "INFO")
    format: Literal["json", "text"] = "json"


class WebSettings(Section):
    """The web console, REST API, STOW-RS and metrics (node/web, docs/contract.md section 5)."""

    enabled: Bool = False
    host: NonEmpty = "127.0.0.1"
    port: Int = Field(8080, ge=0, le=65535)
    tls_certificate: Annotated[str, _checked(lambda s: not s or Path(s).is_file(),
                                             "is not a file")] = ""
    tls_key: Annotated[str, _checked(lambda s: not s or Path(s).is_file(), "is not a file")] = ""
    session_lifetime_s: Float = Field(8 * 3600.0, gt=0)
    login_failure_delay_s: Float = Field(1.0, ge=0, le=60)
    ready_min_free_mb: Int = Field(500, ge=0)
    ready_max_alert_age_s: Float = Field(3600.0, gt=0)
    stow_max_request_bytes: Int = Field(256 * 1024 * 1024, gt=0)

    @field_validator("tls_key")
    @classmethod
    def _tls(cls, value: str, info: ValidationInfo) -> str:
        if bool(value) != bool(info.data.get("tls_certificate")):
            raise ValueError("tls_certificate and tls_key are given together or not at all")
        return value


_File = Annotated[str, _checked(lambda s: not s or Path(s).is_file(), "is not a file")]


class TlsSettings(Section):
    """DICOM TLS (PS3.15 Annex B.9, the BCP 195 secure transport connection profile): TLS 1.2
    at least, BCP 195 cipher suites; ``port`` 0 puts TLS on ``[node] port`` instead of plain
    TCP. The files are loaded at start-up (node/dimse/tls.py), which names the wrong one."""

    enabled: Bool = False
    port: Int = Field(2762, ge=0, le=65535)
    certificate: _File = ""
    key: _File = ""
    ca_file: _File = ""
    require_client_certificate: Bool = False

    @model_validator(mode="after")
    def _files(self) -> TlsSettings:
        if not self.enabled:
            return self
        for name in ("certificate", "key"):
            if not getattr(self, name):
                raise SettingsError(f"setting [tls] {name}: must be given when [tls] enabled")
        if self.require_client_certificate and not self.ca_file:
            raise SettingsError("setting [tls] ca_file: must be given when [tls] "
                                "require_client_certificate (the CAs client certificates "
                                "are checked against)")
        return self


_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _peer_address(value: str) -> str:
    """An address range (``10.1.2.0/24``, ``192.0.2.7``, IPv6 too) or a host name."""
    import ipaddress

    try:
        ipaddress.ip_network(value, strict=False)
        return value
    except ValueError:
        pass
    labels = value.removesuffix(".").split(".")
    if len(value) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"{value!r} is neither an address, an address range nor a host name")
    return value


PeerAddresses = Annotated[tuple[Annotated[str, AfterValidator(_peer_address)], ...],
                          BeforeValidator(_list)]


def _host_port(value: str) -> str:
    host, _, port = value.strip().rpartition(":")
    if not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port")
    return value.strip()


class CommitmentSettings(Section):
    """Storage Commitment Push Model SCP (PS3.4 Annex J; node/dimse/commitment.py)."""

    #: calling AE title -> ``host:port`` where its Storage Commitment SCU listens, for a
    #: report whose association was released before it could be sent (PS3.4 J.3.3)
    requesters: dict[AETitle, Annotated[str, AfterValidator(_host_port)]] = Field(
        default_factory=dict)


class RetentionSettings(Section):
    """Retention (docs/conformance.md section 3, Retention; node/ingest/purge.py): archived
    files and their records are kept ``days`` after they were received and recorded, flagged
    and unacknowledged ones (and those whose alert is still pending) until that changes. Off
    unless ``enabled``: nothing is ever removed by default."""

    enabled: Bool = False
    days: Int = Field(3650, ge=0, le=36500)
    interval_h: Float = Field(24.0, gt=0, le=24 * 366)
    batch: Int = Field(200, ge=1, le=10_000)


_OFFSET = OffsetProfile()  # the offset profile's defaults live in model.inputs.profiles
_ZERO_IS_NONE = ("group", "isocenter_element", "console_element", "registration_selector",
                 "label_creator")
Element = Annotated[Int, Field(ge=0, le=255)]


class ProfileSettings(Section):
    """One offset profile of docs/contract.md section 5 and the calling AE titles it applies to; 0
    (or an
    empty text) stands for the :class:`OffsetProfile`'s ``None`` (``_ZERO_IS_NONE``). The
    shipped profiles (``model.inputs.profiles.SHIPPED_PROFILES``) are the defaults of the
    ``profiles`` table, so a site file's ``[profiles.elekta_xvi]`` only adds to them."""

    calling_ae_titles: AETitles = ()
    private_creator: Annotated[str, Field(max_length=64)] = _OFFSET.private_creator
    group: Int = _OFFSET.group or 0
    block: Int = Field(_OFFSET.block, ge=0x10, le=0xFF)
    translation_element: Element = _OFFSET.translation_element
    rotation_element: Element = _OFFSET.rotation_element
    isocenter_element: Element = _OFFSET.isocenter_element or 0
    console_element: Element = _OFFSET.console_element or 0
    vr: ValueVR = _OFFSET.vr
    layout: OffsetLayout = _OFFSET.layout
    translation_components: str = _OFFSET.translation_components
    rotation_components: str = _OFFSET.rotation_components
    translation_unit: TranslationUnit = _OFFSET.translation_unit
    rotation_unit: RotationUnit = _OFFSET.rotation_unit
    wrap_angles: Bool = _OFFSET.wrap_angles
    rotation_step_deg: Float = Field(_OFFSET.precision.rotation_step_deg, gt=0)
    translation_step_mm: Float = Field(_OFFSET.precision.translation_step_mm, gt=0)
    registration_selector: Annotated[str, Field(max_length=64)] = (
        _OFFSET.registration_selector or "")
    label_group: Int = _OFFSET.label_group
    label_element: Element = _OFFSET.label_element
    label_creator: Annotated[str, Field(max_length=64)] = _OFFSET.label_creator or ""
    companion: Bool = _OFFSET.companion
    pair_window_s: Float = Field(_OFFSET.pair_window_s, gt=0)

    @field_validator("group", "label_group")
    @classmethod
    def _group(cls, value: int) -> int:
        if not (value == 0 or (0x0009 <= value <= 0xFFFF and value % 2 == 1)):
            raise ValueError(f"0x{value:04X} is neither 0 nor an odd (private) group")
        return value

    @field_validator("translation_components", "rotation_components")
    @classmethod
    def _components(cls, value: str) -> str:
        parse_components(value)  # its ValueError says what is wrong
        return value

    @model_validator(mode="after")
    def _fixed_tags(self) -> ProfileSettings:
        if not self.private_creator.strip() and not self.group:
            raise ValueError("an empty private_creator (fixed tags) needs a group")
        return self

    @classmethod
    def of(cls, profile: OffsetProfile) -> ProfileSettings:
        """The settings that give ``profile`` back (a shipped profile's table)."""
        fields = {name: getattr(profile, name) for name in cls.model_fields
                  if name not in ("calling_ae_titles", "rotation_step_deg",
                                  "translation_step_mm")}
        fields.update({key: fields[key] or (0 if key.endswith(("group", "element")) else "")
                       for key in _ZERO_IS_NONE})
        return cls(**fields, rotation_step_deg=profile.precision.rotation_step_deg,
                   translation_step_mm=profile.precision.translation_step_mm)

    def offset_profile(self, name: str) -> OffsetProfile:
        fields = self.model_dump(exclude={"calling_ae_titles", *Precision.__dataclass_fields__})
        fields.update({key: fields[key] or None for key in _ZERO_IS_NONE})
        return OffsetProfile(name=name, **fields,
                             precision=Precision(self.rotation_step_deg, self.translation_step_mm))


def _shipped_profiles() -> dict[str, ProfileSettings]:
    return {name: ProfileSettings.of(profile) for name, profile in SHIPPED_PROFILES.items()}


class Settings(BaseSettings):
    """Everything ``serve`` and ``audit`` need, validated (see the module docstring)."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix=ENV_PREFIX, env_nested_delimiter="__",
        enable_decoding=False)  # lists in the environment are comma-separated, not JSON

    node: NodeSettings = NodeSettings()
    storage: StorageSettings = StorageSettings()
    model: ModelSettings = ModelSettings()
    decision: DecisionSettings = DecisionSettings()
    consoles: ConsolesSettings = ConsolesSettings()
    smtp: SmtpSettings = SmtpSettings()
    alerts: AlertSettings = AlertSettings()
    log: LogSettings = LogSettings()
    web: WebSettings = WebSettings()
    tls: TlsSettings = TlsSettings()
    commitment: CommitmentSettings = CommitmentSettings()
    retention: RetentionSettings = RetentionSettings()
    #: calling AE title -> the address ranges and host names it may connect from (the
    #: peer allow-list, node/dimse/peers.py); titles not listed are not address-checked
    peers: dict[AETitle, PeerAddresses] = Field(default_factory=dict)
    #: offset profiles by name; ``default`` applies to every calling AE title no other lists
    profiles: dict[str, ProfileSettings] = Field(default_factory=_shipped_profiles)
    _sources: tuple[str, ...] = PrivateAttr(default=())

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The flags (init kwargs), then the layers :func:`load_settings` prepared."""
        return init_settings, *_LAYERS.get()

    @model_validator(mode="after")
    def _profiles(self) -> Settings:
        if "default" not in self.profiles:
            raise SettingsError("setting [profiles.default]: the default profile is missing")
        seen: dict[str, str] = {}
        for name, profile in self.profiles.items():
            for title in profile.calling_ae_titles:
                if title in seen:
                    raise SettingsError(
                        f"setting [profiles.{name}] calling_ae_titles: {title!r} is already "
                        f"listed by [profiles.{seen[title]}]")
                seen[title] = name
        return self

    @property
    def sources(self) -> tuple[str, ...]:
        """The layers these settings were built from, lowest first."""
        return self._sources

    @property
    def data_dir(self) -> Path:
        return Path(self.storage.data_dir).expanduser().resolve()

    @property
    def node_name(self) -> str:
        """This node's name in the audit database (``[node] name``, else host name and data
        folder): which archive each recorded object is in, who claimed an alert."""
        if self.node.name:
            return self.node.name
        return f"{socket.gethostname()}:{self.data_dir}"[-128:]

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
        return DecisionPolicy(**self.decision.model_dump())

    def profile_for(self, calling_ae_title: str | None) -> OffsetProfile:
        """The offset profile for a calling AE title (the ``default`` one when none lists it)."""
        title = (calling_ae_title or "").strip()
        name = next((name for name, p in self.profiles.items()
                     if title and title in p.calling_ae_titles), "default")
        return self.profiles[name].offset_profile(name)


# ---------------------------------------------------------------------------------------------
# Loading the layers


#: the environment and the files, highest first, while :func:`load_settings` builds a Settings
_LAYERS: ContextVar[tuple[PydanticBaseSettingsSource, ...]] = ContextVar("_LAYERS", default=())


class _Environment(EnvSettingsSource):
    """``SRO_DECODER_<SECTION>__<KEY>`` from ``env`` (names case-insensitive); a variable naming
    an unknown section is refused, not ignored, ``SRO_DECODER_PROFILES__<NAME>__<KEY>``
    matches a profile of the files whatever the case of its name, and the AE title of
    ``SRO_DECODER_PEERS__<AE_TITLE>`` is upper-cased."""

    def __init__(self, env: Mapping[str, str], profile_names: set[str]) -> None:
        self._env = env
        self._profile_names = {name.lower(): name for name in profile_names}
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {name.lower(): value for name, value in self._env.items()}  # case-insensitive

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        prefix = ENV_PREFIX.lower()
        for name, value in self.env_vars.items():
            section, nested, key = name.removeprefix(prefix).partition("__")
            if name.startswith(prefix) and nested and section not in Settings.model_fields:
                data.setdefault(section, {})[key] = value  # refused by extra="forbid"
        if isinstance(data.get("profiles"), dict):
            data["profiles"] = {self._profile_names.get(name, name): values
                                for name, values in data["profiles"].items()}
        if isinstance(data.get("peers"), dict):  # names are case-insensitive: AE titles upper
            data["peers"] = {name.upper(): values for name, values in data["peers"].items()}
        return data


def _where(loc: tuple[int | str, ...]) -> str:
    section, *keys = (str(part) for part in loc if isinstance(part, str))
    if section == "profiles" and keys:
        section = f"profiles.{keys.pop(0)}"
    return f"[{section}] {keys[0]}" if keys else f"[{section}]"


def _message(error: ErrorDetails) -> str:
    cause = error.get("ctx", {}).get("error")
    if isinstance(cause, SettingsError):
        return str(cause)  # it names its setting itself
    if error["type"] == "extra_forbidden":
        text = "unknown section" if len(error["loc"]) == 1 else "unknown setting"
    else:
        text = str(cause) if error["type"] == "value_error" else error["msg"]
    return f"setting {_where(error['loc'])}: {text}"


def _toml(path: Path, label: str) -> TomlConfigSettingsSource:
    if not path.is_file():
        raise SettingsError(f"{label}: no such file")
    try:
        return TomlConfigSettingsSource(Settings, toml_file=path)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{label}: not valid TOML: {exc}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{label}: cannot read: {exc}") from exc


def load_settings(
    config_file: str | Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build and validate the settings from the four layers (module docstring).

    ``env`` defaults to ``os.environ``. ``overrides`` are the command-line flags, as
    ``{"node": {"port": 104}}``; ``None`` values in it are ignored (a flag not given).
    """
    shipped = Path(str(resources.files("config").joinpath("default.toml")))
    files = {"config/default.toml (shipped)": _toml(shipped, "config/default.toml")}
    if config_file is not None:
        files[str(Path(config_file))] = _toml(Path(config_file), f"--config {config_file}")
    tables = [f.toml_data.get("profiles") for f in files.values()]
    profile_names = {name for table in tables if isinstance(table, dict) for name in table}
    environment = _Environment(os.environ if env is None else env, profile_names)
    flags: dict[str, Any] = {section: given for section, values in (overrides or {}).items()
                             if (given := {k: v for k, v in values.items() if v is not None})}
    layers = _LAYERS.set((environment, *reversed(files.values())))
    try:
        settings = Settings(**flags)
    except ValidationError as exc:
        raise SettingsError("\n".join(_message(e) for e in exc.errors())) from exc
    finally:
        _LAYERS.reset(layers)
    used = [*files, "environment" if environment() else "", "command line" if flags else ""]
    settings._sources = tuple(filter(None, used))
    return settings
