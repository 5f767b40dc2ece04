"""Settings: the four layers in order, and a wrong setting named at start-up."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from model.decision import DecisionPolicy
from model.offset import TranslationUnit
from node.settings import Settings, SettingsError, load_settings
from tests.node.conftest import cli


def test_shipped_defaults() -> None:
    s = load_settings(env={})
    assert s.node.ae_title == "SRO_DECODER"
    assert s.node.port == 11112
    assert s.model.name == ""  # the shipped model (model.decoders.registry.DEFAULT_MODEL)
    assert s.policy == DecisionPolicy(1.0, 100.0)
    assert s.database_url == f"sqlite:///{s.data_dir / 'audit.db'}"
    assert s.profile_for("ANYONE").name == "default"
    assert s.profile_for(None).translation_unit is TranslationUnit.MM


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text("""
[node]
port = 104
ae_title = "FILE_AE"
[smtp]
host = "mail.file"
[decision]
tolerance_mm = 2.0
[profiles.xvi]
calling_ae_titles = ["XVI1", "XVI2"]
translation_unit = "cm"
rotation_step_deg = 0.1
translation_step_mm = 1.0
""")
    env = {"SRO_DECODER_SMTP__HOST": "mail.env", "SRO_DECODER_SMTP__PORT": "2525",
           "SRO_DECODER_ALERTS__RECIPIENTS": "a@x.org, b@y.org",
           "SRO_DECODER_SMTP__STARTTLS": "true", "SRO_DECODER_NODE__PORT": "105",
           "SRO_DECODER_PROFILES__XVI__WRAP_ANGLES": "false", "OTHER": "ignored"}
    s = load_settings(config, env=env, overrides={"node": {"port": 106, "host": None}})
    assert s.node.port == 106  # flag over environment over file
    assert s.node.ae_title == "FILE_AE"
    assert s.node.host == "0.0.0.0"  # a flag not given changes nothing
    assert s.smtp.host == "mail.env" and s.smtp.port == 2525 and s.smtp.starttls is True
    assert s.alerts.recipients == ("a@x.org", "b@y.org")
    assert s.policy.tolerance_mm == 2.0
    xvi = s.profile_for("XVI2")
    assert xvi.name == "xvi" and xvi.translation_unit is TranslationUnit.CM
    assert xvi.precision.translation_step_mm == 1.0 and xvi.wrap_angles is False
    assert s.profile_for("OTHER").name == "default"
    assert s.sources == ("config/default.toml (shipped)", str(config), "environment",
                         "command line")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SRO_DECODER_SMTP__PORT": "twenty-five"}, "[smtp] port"),
        ({"SRO_DECODER_SMTP__PORT": "70000"}, "[smtp] port"),
        ({"SRO_DECODER_NODE__AE_TITLE": "A_TITLE_FAR_TOO_LONG"}, "[node] ae_title"),
        ({"SRO_DECODER_NODE__ALLOWED_CALLING_AE_TITLES": "OK,BAD\\AE"},
         "[node] allowed_calling_ae_titles"),
        ({"SRO_DECODER_ALERTS__RECIPIENTS": "not-an-address"}, "[alerts] recipients"),
        ({"SRO_DECODER_DECISION__TOLERANCE_MM": "-1"}, "[decision] tolerance_mm"),
        ({"SRO_DECODER_DECISION__RADIUS_MM": "nan"}, "[decision] radius_mm"),
        ({"SRO_DECODER_NODE__MAX_PDU_BYTES": "100"}, "[node] max_pdu_bytes"),
        ({"SRO_DECODER_NODE__POLL_INTERVAL_MS": "0"}, "[node] poll_interval_ms"),
        ({"SRO_DECODER_SMTP__STARTTLS": "maybe"}, "[smtp] starttls"),
        ({"SRO_DECODER_SMTP__HOTS": "x"}, "[smtp] hots"),
        ({"SRO_DECODER_SMPT__HOST": "x"}, "[smpt]"),
        ({"SRO_DECODER_PROFILES__DEFAULT__TRANSLATION_UNIT": "inch"},
         "[profiles.default] translation_unit"),
        ({"SRO_DECODER_PROFILES__DEFAULT__GROUP": "0x0010"}, "[profiles.default] group"),
        ({"SRO_DECODER_STORAGE__DATABASE_URL": "not a url"}, "[storage] database_url"),
        ({"SRO_DECODER_LOG__FORMAT": "xml"}, "[log] format"),
        ({"SRO_DECODER_STORAGE__SQLITE_SYNCHRONOUS": "OFF"}, "[storage] sqlite_synchronous"),
        ({"SRO_DECODER_MODEL__TORCH_THREADS": "-1"}, "[model] torch_threads"),
    ],
)
def test_a_wrong_setting_is_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env=env)
    assert named in str(info.value)


def test_first_pdu_timeout_default_and_layers(tmp_path: Path) -> None:
    assert load_settings(env={}).node.first_pdu_timeout_s == 5.0
    config = tmp_path / "site.toml"
    config.write_text("[node]\nfirst_pdu_timeout_s = 2.5\n")
    assert load_settings(config, env={}).node.first_pdu_timeout_s == 2.5
    env = {"SRO_DECODER_NODE__FIRST_PDU_TIMEOUT_S": "1.5"}
    assert load_settings(config, env=env).node.first_pdu_timeout_s == 1.5


@pytest.mark.parametrize(
    ("value", "message"),
    [("0", "greater than 0"), ("-3", "greater than 0"), ("nan", "finite number"),
     ("inf", "finite number"), ("31", "more than [node] acse_timeout_s")],
)
def test_a_wrong_first_pdu_timeout_is_named(value: str, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(env={"SRO_DECODER_NODE__FIRST_PDU_TIMEOUT_S": value})
    assert "[node] first_pdu_timeout_s" in str(info.value)
    assert message in str(info.value)


def test_profiles_may_not_share_an_ae_title(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[profiles.a]\ncalling_ae_titles = ["X"]\n'
                      '[profiles.b]\ncalling_ae_titles = ["X"]\n')
    with pytest.raises(SettingsError, match=r"\[profiles.b\] calling_ae_titles"):
        load_settings(config, env={})


def test_bad_config_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="no such file"):
        load_settings(tmp_path / "absent.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\nport = 1")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(broken, env={})


def test_serve_stops_at_start_up_on_a_wrong_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SRO_DECODER_SMTP__PORT", "abc")
    rc, _ = cli("serve", "--data-dir", str(tmp_path / "d"))
    assert rc == 2
    assert "[smtp] port" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # nothing started


def test_the_shipped_file_holds_the_models_defaults_and_documents_every_key() -> None:
    text = (Path(__file__).parents[2] / "config" / "default.toml").read_text(encoding="utf-8")
    defaults = Settings.model_construct().model_dump(mode="json")
    assert tomllib.loads(text) == defaults  # the same tables, keys and values: they can't drift
    tables = {f"profiles.{name}": p for name, p in defaults.pop("profiles").items()} | defaults
    documented, table = set(), ""
    for line in text.splitlines():
        if header := re.match(r"\[([\w.]+)\]", line):
            table = header[1]
        elif key := re.match(r"(\w+)\s*=.*\s#\s*\S", line):  # a key and its comment
            documented.add(f"[{table}] {key[1]}")
    assert documented == {f"[{t}] {k}" for t, keys in tables.items() for k in keys}


@pytest.mark.parametrize("value", ["0", "-1", "301", "inf"])
def test_first_pdu_timeout_is_checked(value: str) -> None:
    with pytest.raises(SettingsError, match=r"\[node\] first_pdu_timeout_s"):
        load_settings(env={"SRO_DECODER_NODE__FIRST_PDU_TIMEOUT_S": value})
    assert load_settings(env={}).node.first_pdu_timeout_s == 5.0


def test_environment_text_is_parsed(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[profiles.XVI]\ncalling_ae_titles = ["XVI1"]\n')
    s = load_settings(config, env={"SRO_DECODER_PROFILES__XVI__GROUP": "0x0019",
                                   "SRO_DECODER_SMTP__STARTTLS": " yes ",
                                   "SRO_DECODER_NODE__ALLOWED_CALLING_AE_TITLES": "A, B,,",
                                   "SRO_DECODER_NODE__DIMSE_TIMEOUT_S": "2.5"})
    # profile names match whatever their case; the shipped profiles are always there
    assert set(s.profiles) == {"default", "elekta_xvi", "voxtox_ds", "XVI"}
    assert s.profile_for("XVI1").group == 0x19
    assert s.smtp.starttls is True and s.node.dimse_timeout_s == 2.5
    assert s.node.allowed_calling_ae_titles == ("A", "B")


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ("[node]\nprot = 1\n", r"setting \[node\] prot: unknown setting"),
        ("[nodes]\nport = 1\n", r"setting \[nodes\]: unknown section"),
        ("[node]\nport = true\n", r"setting \[node\] port"),  # no bool for an integer
        ("[node]\nport = 1.0\n", r"setting \[node\] port"),
        ("[smtp]\nstarttls = 1\n", r"setting \[smtp\] starttls"),
        ("[profiles.x]\nmystery = 1\n", r"setting \[profiles.x\] mystery: unknown setting"),
        ("[alerts]\nretry_initial_s = 9\nretry_max_s = 8\n", r"\[alerts\] retry_max_s"),
        ('[smtp]\npassword = "p"\n', r"\[smtp\] password"),
    ],
)
def test_a_wrong_file_setting_is_named(tmp_path: Path, toml: str, named: str) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    with pytest.raises(SettingsError, match=named):
        load_settings(config, env={})


def test_a_site_names_the_xvi_stations_and_gets_the_whole_shipped_profile(tmp_path: Path) -> None:
    from model.inputs.profiles import SHIPPED_PROFILES

    config = tmp_path / "site.toml"
    config.write_text('[profiles.elekta_xvi]\ncalling_ae_titles = ["XVI_LINAC1"]\n')
    s = load_settings(config, env={})
    xvi = s.profile_for("XVI_LINAC1")
    assert xvi == SHIPPED_PROFILES["elekta_xvi"]
    assert xvi.registration_selector == "Correction" and xvi.companion
    assert s.profile_for("OTHER") == SHIPPED_PROFILES["default"]
    assert load_settings(env={}).profile_for("ANY").name == "default"


@pytest.mark.parametrize(("text", "where"), [
    ('translation_components = "+x,+x,+z"', "translation_components"),
    ('vr = "OB"', "vr"),
    ('private_creator = ""', "[profiles.p]"),
    ('pair_window_s = 0', "pair_window_s"),
])
def test_new_profile_fields_are_checked(tmp_path: Path, text: str, where: str) -> None:
    config = tmp_path / "site.toml"
    config.write_text(f"[profiles.p]\n{text}\n")
    with pytest.raises(SettingsError, match=re.escape(where)):
        load_settings(config, env={})
