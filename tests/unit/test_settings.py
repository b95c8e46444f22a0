"""services/common/settings.py: production defaults, and a bad value stops a program with
one line naming the variable and exit code 78."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.common.settings import EX_CONFIG, ConfigError, load_settings, settings_or_exit
from tests.unit.conftest import BOT_ID, ROOT, TOKEN


def test_defaults_are_production():
    settings = load_settings()

    assert settings.env == "production"
    assert settings.reload is False
    assert settings.debug is False
    assert settings.access_log is False
    assert settings.log_level == "INFO"
    assert settings.telegram_bot_token is None
    assert settings.mongodb_uri.startswith("mongodb://127.0.0.1:27017")
    assert settings.telegram_api_base_url == "https://api.telegram.org/bot"


@pytest.mark.parametrize("variable", ["BOTSTACK_RELOAD", "BOTSTACK_DEBUG"])
def test_production_refuses_development_option_naming_it(monkeypatch, variable):
    monkeypatch.setenv("BOTSTACK_ENV", "production")
    monkeypatch.setenv(variable, "true")

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable}: ")


def test_development_allows_reload_and_debug(monkeypatch):
    monkeypatch.setenv("BOTSTACK_ENV", "development")
    monkeypatch.setenv("BOTSTACK_RELOAD", "true")
    monkeypatch.setenv("BOTSTACK_DEBUG", "true")

    settings = load_settings()

    assert (settings.env, settings.reload, settings.debug) == ("development", True, True)


@pytest.mark.parametrize(
    "variable, value",
    [
        ("MONGODB_URI", "nonsense"),
        ("MONGODB_URI", "mongodb://127.0.0.1:notaport/"),
        ("TELEGRAM_BOT_TOKEN", "not-a-token"),
        ("TELEGRAM_BOT_TOKEN", "123456:ABCdefGhIJKlmno PQRstuVWxyz0123456789"),  # a space inside
        ("BOTSTACK_API_MAX_BODY_BYTES", "12"),
        ("BOTSTACK_API_PORT", "abc"),
        ("BOTSTACK_ENV", "prod"),
        ("BOTSTACK_MEMORY_CEILING_MB", "mongodb=300"),
        ("BOTSTACK_MEMORY_CEILING_MB", "bot=300MB"),
    ],
)
def test_bad_value_raises_config_error_naming_its_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert caught.value.variable == variable
    assert caught.value.message  # says what is wrong, not just where


def test_a_memory_ceiling_is_one_for_each_program_or_one_per_program(monkeypatch):
    monkeypatch.setenv("BOTSTACK_MEMORY_CEILING_MB", "250, bot=400")

    assert load_settings().memory_ceilings == {"api": 250, "web": 250, "bot": 400}


def test_a_bad_memory_ceiling_stops_only_the_sidecar_and_says_what_to_write(monkeypatch):
    monkeypatch.setenv("BOTSTACK_MEMORY_CEILING_MB", "bot=lots")

    assert load_settings("bot").memory_ceilings == {}
    with pytest.raises(ConfigError) as caught:
        load_settings("healthcheck")
    assert str(caught.value) == ("BOTSTACK_MEMORY_CEILING_MB: 'bot=lots': give whole megabytes from 64, for all "
                                 "programs (300) or per program (bot=300,api=200)")


@pytest.mark.parametrize("variable, value", [("BOTSTACK_REQUEST_TIMEOUT", "soon"), ("BOTSTACK_GRACEFUL_TIMEOUT", "0"),
                                             ("BOTSTACK_ACCESS_LOG", "maybe")])
def test_a_bad_http_setting_stops_only_the_api_and_the_dashboard(monkeypatch, variable, value):
    """Settings of the two HTTP servers (serve.py) only: the bot, the sidecar and the CLI run on
    and report it (it stopped them all, the bot's replies included)."""
    monkeypatch.setenv(variable, value)

    for program in ("api", "web"):
        with pytest.raises(ConfigError) as caught:
            load_settings(program)
        assert caught.value.variable == variable
    for program in ("bot", "healthcheck", "botstack"):
        problems = load_settings(program).config_problems
        assert problems["api"].startswith(f"{variable}: ") and problems["web"] == problems["api"], problems


def test_valid_token_is_accepted_and_only_its_public_id_is_exposed(monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)

    settings = load_settings()

    assert settings.telegram_bot_token.get_secret_value() == TOKEN
    assert settings.bot_id == str(BOT_ID)
    assert TOKEN not in repr(settings)


@pytest.mark.parametrize("pasted", [TOKEN + "\n", f" {TOKEN} ", TOKEN + "\r\n"])
def test_a_token_pasted_with_a_line_break_or_spaces_around_it_is_the_token(monkeypatch, pasted):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", pasted)

    assert load_settings().telegram_bot_token.get_secret_value() == TOKEN
    monkeypatch.setenv("BOTSTACK_ADMIN_TOKEN", pasted)  # long enough to be an admin token too
    assert load_settings().admin_token.get_secret_value() == TOKEN


def test_settings_or_exit_exits_78_with_one_stderr_line_naming_the_variable(monkeypatch, capsys):
    monkeypatch.setenv("BOTSTACK_API_PORT", "abc")

    with pytest.raises(SystemExit) as caught:
        settings_or_exit("api")

    assert caught.value.code == EX_CONFIG == 78
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "BOTSTACK_API_PORT" in lines[0]
    assert lines[0].startswith("api: ")
    assert "Traceback" not in err


def _run_module(module: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )


def test_api_program_refuses_reload_in_production_with_exit_78(subprocess_env):
    result = _run_module("services.api", subprocess_env(BOTSTACK_RELOAD="true"))

    assert result.returncode == 78, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "BOTSTACK_RELOAD" in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # stopped before doing anything, uvicorn included


def test_bot_program_without_token_exits_78_naming_telegram_bot_token(subprocess_env):
    result = _run_module("services.bot", subprocess_env())

    assert result.returncode == 78, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "TELEGRAM_BOT_TOKEN" in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("uri, local", [
    ("mongodb://127.0.0.1:27017", True),
    ("mongodb://localhost/?directConnection=true", True),
    ("mongodb://user:p%40ss@[::1]:27017/botstack", True),
    ("mongodb://127.0.0.1:27018", False),
    ("mongodb://db:27017", False),
    ("mongodb://127.0.0.1:27017,127.0.0.1:27018/?replicaSet=rs0", False),  # PyMongo's parser decides
    ("mongodb://%2Ftmp%2Fmongodb-27017.sock", False),
    ("mongodb+srv://cluster0.example.net", False),
])
def test_the_container_runs_its_own_mongod_only_for_a_uri_that_points_at_it(uri, local):
    from types import SimpleNamespace

    from services.common.local_mongod import runs_local_mongod

    assert runs_local_mongod(SimpleNamespace(mongodb_local=None, mongodb_uri=uri)) is local


def test_with_no_database_setting_the_entry_point_decides_as_the_settings_would(monkeypatch):
    from services.common.local_mongod import runs_local_mongod
    from services.start import DATABASE_SETTINGS, wants_local_mongod
    from services.start import EX_CONFIG as START_EX_CONFIG

    for name in DATABASE_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert wants_local_mongod() is runs_local_mongod(load_settings("start")) is True
    assert START_EX_CONFIG == EX_CONFIG
    monkeypatch.setenv("MONGODB_URI", "mongodb://db.example.net:27017")
    assert wants_local_mongod() is False


def _settings_seen(env: dict[str, str]) -> list[str]:
    script = ("from services.common.settings import load_settings\n"
              "from services.start import wants_local_mongod\n"
              "s = load_settings('bot')\n"
              "print(s.telegram_bot_token.get_secret_value(), s.mongodb_uri, s.web_password.get_secret_value(),"
              " wants_local_mongod())\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_a_setting_can_be_a_secret_file_named_after_its_variable_and_the_environment_wins(tmp_path, subprocess_env):
    """Docker's and Swarm's secrets: /run/secrets/<target>, here with the line break `echo` leaves,
    in either case; a MongoDB URI given so tells the entry point not to start its own mongod."""
    (tmp_path / "TELEGRAM_BOT_TOKEN").write_text(f"{TOKEN}\n")
    (tmp_path / "mongodb_uri").write_text("mongodb://app:s3cret@db.example.net:27017/\n")
    (tmp_path / "BOTSTACK_WEB_PASSWORD").write_text("a-password-from-a-file")

    seen = _settings_seen(subprocess_env(BOTSTACK_SECRETS_DIR=str(tmp_path)))
    assert seen == [TOKEN, "mongodb://app:s3cret@db.example.net:27017/", "a-password-from-a-file", "False"]
    env = subprocess_env(BOTSTACK_SECRETS_DIR=str(tmp_path), BOTSTACK_WEB_PASSWORD="a-password-from-the-env")
    seen = _settings_seen(env)
    assert seen[2] == "a-password-from-the-env"


def test_a_bad_secret_file_stops_only_its_program_with_one_line_that_does_not_repeat_it(tmp_path, subprocess_env):
    (tmp_path / "TELEGRAM_BOT_TOKEN").write_text("not-a-token-but-a-secret-all-the-same\n")
    result = _run_module("services.bot", subprocess_env(BOTSTACK_SECRETS_DIR=str(tmp_path)))

    assert result.returncode == 78, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "TELEGRAM_BOT_TOKEN: is not a bot token" in result.stderr, result.stderr  # read, not missing
    assert "not-a-token" not in result.stderr


def test_a_secret_file_it_cannot_read_stops_with_one_line_naming_the_variable(tmp_path, subprocess_env):
    """A file that is not text (a binary key put there by mistake); one its user may not read (a
    Compose secret from a host file of mode 0600) ends the same way, but the tests run as root."""
    (tmp_path / "TELEGRAM_BOT_TOKEN").write_bytes(b"\xff\xfe\x00binary")
    result = _run_module("services.bot", subprocess_env(BOTSTACK_SECRETS_DIR=str(tmp_path)))

    assert result.returncode == 78, result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"TELEGRAM_BOT_TOKEN: cannot read its file in {tmp_path}" in result.stderr, result.stderr


def test_a_secret_file_its_user_may_not_read_is_named_with_the_fix():
    from pydantic_settings import SettingsError

    from services.common.settings import _unreadable

    try:  # as pydantic-settings raises it
        try:
            raise PermissionError(13, "Permission denied", "/run/secrets/MONGODB_URI")
        except PermissionError as denied:
            raise SettingsError('error getting value for field "mongodb_uri" from source "SecretsSettingsSource"') \
                from denied
    except SettingsError as exc:
        error = _unreadable(exc)
    assert str(error) == (f"MONGODB_URI: cannot read /run/secrets/MONGODB_URI (Permission denied); let uid "
                          f"{os.getuid()} read it (Docker and Swarm give secrets mode 0444)")
