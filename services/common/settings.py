"""The one settings object every botstack program reads, once, at start.

A bad value must stop a program before it does anything, with one line that names the
environment variable, and exit code 78 (EX_CONFIG) so supervisord and operators can tell a
configuration error from a crash.
"""

from __future__ import annotations

import os
import re
import sys
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from services.common.secretfiles import secrets_dir

EX_CONFIG = 78

TOKEN_PATTERN = re.compile(r"\d{3,}:[A-Za-z0-9_-]{30,}")  # fullmatch: `$` would let a final newline in
PLACEHOLDER = "replace-with-the-token"  # .env.example's TELEGRAM_BOT_TOKEN


class ConfigError(Exception):
    """A setting is wrong; `variable` is the environment variable to fix."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable
        self.message = message


def trimmed(secret: SecretStr | None) -> SecretStr | None:
    """A secret pasted with a space or line break around it (a .env line, a platform's variable
    editor) is that secret: no token contains whitespace."""
    if secret is None or secret.get_secret_value() == secret.get_secret_value().strip():
        return secret
    return SecretStr(secret.get_secret_value().strip())


class Settings(BaseSettings):
    """Everything configurable, with production defaults. See the README's table."""

    # A setting may also be a file named after its variable, a Docker secret (secretfiles.py).
    model_config = SettingsConfigDict(
        env_prefix="BOTSTACK_", case_sensitive=False, extra="ignore", frozen=True, secrets_dir=secrets_dir()
    )
    # Bad values of settings other programs own: {program: "VARIABLE: what is wrong"} (load_settings).
    _problems: dict = PrivateAttr(default_factory=dict)

    env: Literal["production", "development"] = "production"
    reload: bool = False
    debug: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    access_log: bool = False

    # Railway tells a service which port to serve on in PORT.
    api_port: int = Field(8000, ge=1, le=65535, validation_alias=AliasChoices("BOTSTACK_API_PORT", "PORT"))
    web_port: int = Field(8080, ge=1, le=65535)
    graceful_timeout: int = Field(10, ge=1, le=120, description="seconds uvicorn waits for requests on stop")
    api_max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30, description="larger request bodies get 413")
    request_timeout: float = Field(30.0, ge=1, le=3600, description="seconds to send a whole request, else 408")
    ready_timeout_ms: int = Field(1000, ge=50, le=30000)
    supervisor_socket: str = "/run/botstack/supervisor.sock"
    run_dir: str = "/run/botstack"

    mongodb_uri: str = Field("mongodb://127.0.0.1:27017/?directConnection=true", validation_alias="MONGODB_URI")
    mongodb_db: str = Field("botstack", validation_alias="MONGODB_DB", pattern=r"^[A-Za-z0-9_-]{1,63}$")
    mongodb_timeout_ms: int = Field(2000, ge=100, le=60000)
    mongodb_local: bool | None = Field(None, description="run the container's own mongod; unset: decided by MONGODB_URI")

    # The health sidecar's healing policy (healthcheck/policy.py).
    heal_backoff_base_s: float = Field(10.0, gt=0, le=3600)
    heal_backoff_max_s: float = Field(300.0, gt=0, le=86400)
    heal_quiet_reset_s: float = Field(600.0, gt=0)
    heal_hang_term_grace_s: float = Field(2.0, ge=0, le=60)
    heal_escalation: Literal["retry", "exit"] = "retry"
    heal_max_failures: int = Field(5, ge=1)
    heal_failure_window_s: float = Field(900.0, gt=0)
    heal_cycle_max_restarts: int = Field(3, ge=1)
    heal_cycle_window_s: float = Field(3600.0, gt=0)
    alert_chat_ids_csv: str = Field("", validation_alias="BOTSTACK_ALERT_CHAT_IDS", pattern=r"^[-0-9,\s]*$")
    alert_group_s: float = Field(300.0, ge=1, le=86400)
    alert_urls: SecretStr | None = Field(None, validation_alias="BOTSTACK_ALERT_URLS",
                                         description="apprise URLs: alert channels that do not need the bot's token")
    memory_ceiling_csv: str = Field("", validation_alias="BOTSTACK_MEMORY_CEILING_MB",
                                    description="restart a program gracefully above this resident memory")

    admin_token: SecretStr | None = None

    # The dashboard (services/web): who may use it.
    web_password: SecretStr | None = None
    web_read_only: bool = False
    web_session_hours: float = Field(12.0, gt=0, le=24 * 30)
    web_secure_cookie: bool = False

    # botstack backup / doctor
    backup_dir: str = "/data/backups"
    backup_keep: int = Field(7, ge=1, le=1000)
    doctor_min_free_mb: int = Field(256, ge=0)

    telegram_bot_token: SecretStr | None = Field(None, validation_alias="TELEGRAM_BOT_TOKEN")
    telegram_webhook_url: str | None = Field(None, validation_alias="TELEGRAM_WEBHOOK_URL")
    telegram_webhook_secret: SecretStr | None = Field(None, validation_alias="TELEGRAM_WEBHOOK_SECRET")
    railway_public_domain: str | None = Field(None, validation_alias="RAILWAY_PUBLIC_DOMAIN")
    railway_git_commit_sha: str | None = Field(None, validation_alias="RAILWAY_GIT_COMMIT_SHA")
    bot_webhook_port: int = Field(8443, ge=1, le=65535)
    lease_ttl_s: float = Field(15.0, ge=3, le=600)
    poll_timeout_s: int = Field(10, ge=0, le=50)
    job_interval_s: float = Field(60.0, ge=1, le=86400)
    # Your code (see "Make it yours" in the README): modules that each program asks for its hook.
    extensions_csv: str = Field("", validation_alias="BOTSTACK_EXTENSIONS",
                                pattern=r"^[A-Za-z0-9_.,\s]*$")

    # The durable inbox (services/bot/inbox.py).
    inbox_concurrency: int = Field(64, ge=1, le=1024, description="updates handled at once (different chats)")
    inbox_max_attempts: int = Field(5, ge=1, le=100)
    inbox_retry_base_s: float = Field(2.0, gt=0, le=3600)
    inbox_claim_ttl_s: float = Field(30.0, ge=3, le=3600)
    inbox_retention_h: float = Field(168.0, gt=0, le=24 * 365)

    # Flood-safe sending (services/bot/flood.py); Telegram's published limits by default.
    rate_overall_per_s: float = Field(30.0, ge=0, le=1000)
    rate_group_per_min: float = Field(20.0, ge=0, le=10000)
    rate_chat_per_s: float = Field(1.0, ge=0, le=1000)
    rate_max_retries: int = Field(5, ge=0, le=100)

    telegram_api_base_url: str = Field(
        "https://api.telegram.org/bot", validation_alias="TELEGRAM_API_BASE_URL"
    )

    version: str = "0.0.0+dev"
    git_sha: str = "unknown"
    build_time: str = "unknown"

    @field_validator("mongodb_uri")
    @classmethod
    def _mongodb_uri(cls, value: str) -> str:
        if not value.startswith(("mongodb://", "mongodb+srv://")):
            raise ValueError("must be a MongoDB connection string starting with mongodb:// or mongodb+srv://")
        if value.startswith("mongodb://"):
            from pymongo.uri_parser import parse_uri  # no network for mongodb:// URIs

            try:
                parse_uri(value)
            except Exception as exc:  # pymongo raises several types for bad URIs
                raise ValueError(f"is not a valid MongoDB URI ({exc})") from None
        return value

    @field_validator("telegram_bot_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        value = trimmed(value)  # the Bot API would refuse it with a space or line break in its URLs
        if value is not None and not TOKEN_PATTERN.fullmatch(value.get_secret_value()):
            raise ValueError("is not a bot token of the form <digits>:<secret> as BotFather gives it")
        if value is not None and PLACEHOLDER in value.get_secret_value():
            raise ValueError("is still the placeholder from .env.example: put the token @BotFather gave you")
        return value

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        value = trimmed(value)  # an Authorization header cannot carry it with a space around it
        if value is not None and len(value.get_secret_value()) < 24:
            raise ValueError("must be at least 24 characters (e.g. `openssl rand -hex 24`)")
        return value

    @field_validator("web_password")
    @classmethod
    def _web_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "replace-with" in value.get_secret_value():
            raise ValueError("is still the placeholder from .env.example: choose a password")
        if value is not None and len(value.get_secret_value()) < 12:
            raise ValueError("must be at least 12 characters")
        if value is not None and value.get_secret_value() != value.get_secret_value().strip():
            # Not trimmed as the tokens are: a password may hold spaces, and what is typed at the
            # login form would then differ from what is set. Refused, so nobody is locked out.
            raise ValueError("starts or ends with a space or line break (pasted with the password?): remove it, "
                             "or the password typed at the login never matches")
        return value

    @field_validator("telegram_webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (Telegram delivers webhooks over HTTPS only)")
        return value

    @field_validator("telegram_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("memory_ceiling_csv")
    @classmethod
    def _memory_ceiling(cls, value: str) -> str:
        parse_memory_ceilings(value)
        return value

    @field_validator("telegram_api_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL such as https://api.telegram.org/bot")
        return value

    @model_validator(mode="after")
    def _production_refuses_dev_options(self) -> "Settings":
        if self.env == "production":
            for name in ("reload", "debug"):
                if getattr(self, name):
                    raise ConfigError(
                        env_name(name),
                        "is refused in production (BOTSTACK_ENV=production); "
                        "set BOTSTACK_ENV=development to use it",
                    )
        return self

    @property
    def webhook_url(self) -> str | None:
        """Where Telegram should push updates; None means polling mode."""
        if self.telegram_webhook_url:
            return self.telegram_webhook_url
        if self.railway_public_domain:
            return f"https://{self.railway_public_domain}/telegram/webhook"
        return None

    @property
    def config_problems(self) -> dict[str, str]:
        """Configuration errors of the programs that own them, seen from this one: what the
        verdict, /ready and `botstack status` report while that program refuses to start."""
        problems = dict(self._problems)
        if self.telegram_bot_token is None and "bot" not in problems:
            problems["bot"] = f"{env_name('telegram_bot_token')}: is required by the bot program (not set)"
        if self.web_password is None and self.admin_token is None and not self.web_read_only \
                and self.env == "production" and "web" not in problems:
            problems["web"] = (f"{env_name('web_password')}: is required by the web program in production (or set "
                               f"{env_name('web_read_only')}=true for a dashboard anyone reaching it may read)")
        return problems

    @property
    def alert_chat_ids(self) -> list[int]:
        """Telegram chats that get the sidecar's alerts (BOTSTACK_ALERT_CHAT_IDS, comma-separated)."""
        return [int(c) for c in self.alert_chat_ids_csv.replace(" ", "").split(",") if c.strip("-")]

    @property
    def memory_ceilings(self) -> dict[str, int]:
        """Resident memory (MiB) above which the sidecar restarts a program gracefully
        (BOTSTACK_MEMORY_CEILING_MB: `300` for each of api, web and bot, or `bot=300,api=200`)."""
        return parse_memory_ceilings(self.memory_ceiling_csv)

    @property
    def extensions(self) -> list[str]:
        """Your modules (BOTSTACK_EXTENSIONS, comma-separated): services/common/extensions.py."""
        return [name.strip() for name in self.extensions_csv.split(",") if name.strip()]

    @property
    def build_sha(self) -> str:
        if self.git_sha == "unknown" and self.railway_git_commit_sha:
            return self.railway_git_commit_sha
        return self.git_sha

    @property
    def bot_id(self) -> str | None:
        """The public numeric part of the token, safe to log."""
        if self.telegram_bot_token is None:
            return None
        return self.telegram_bot_token.get_secret_value().split(":", 1)[0]


CEILING_PROGRAMS = ("api", "web", "bot")  # mongod's memory is its cache: sized by its own settings
CEILING_MIB = (64, 1 << 20)


def parse_memory_ceilings(value: str) -> dict[str, int]:
    """`300` (each of api, web, bot) or `bot=300, api=200` -> {program: MiB}; ValueError says what to fix."""
    ceilings: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        name, _, mib = item.rpartition("=")
        names = [name.strip()] if name else list(CEILING_PROGRAMS)
        if any(n not in CEILING_PROGRAMS for n in names):
            raise ValueError(f"{name.strip()!r} is not a program a ceiling applies to ({', '.join(CEILING_PROGRAMS)}; "
                             "mongod's memory is its cache, sized by its own settings)")
        if not mib.strip().isdigit() or not CEILING_MIB[0] <= int(mib) <= CEILING_MIB[1]:
            raise ValueError(f"{item!r}: give whole megabytes from {CEILING_MIB[0]}, for all programs (300) "
                             "or per program (bot=300,api=200)")
        ceilings.update(dict.fromkeys(names, int(mib)))
    return ceilings


# Settings only some programs use. A bad value stops those (exit 78) and no other: the rest run
# with the default and report the error. Everything else is shared and stops all.
_BOT = ("telegram_bot_token", "telegram_webhook_url", "telegram_webhook_secret", "lease_ttl_s", "poll_timeout_s",
        "job_interval_s", "inbox_concurrency", "inbox_max_attempts", "inbox_retry_base_s",
        "inbox_claim_ttl_s", "inbox_retention_h", "rate_overall_per_s", "rate_group_per_min", "rate_chat_per_s",
        "rate_max_retries")
_HEALTHCHECK = ("heal_backoff_base_s", "heal_backoff_max_s", "heal_quiet_reset_s", "heal_hang_term_grace_s",
                "heal_escalation", "heal_max_failures", "heal_failure_window_s", "heal_cycle_max_restarts",
                "heal_cycle_window_s", "alert_chat_ids_csv", "alert_group_s", "alert_urls", "memory_ceiling_csv")
_HTTP = ("graceful_timeout", "request_timeout", "access_log")  # the two uvicorn servers' (serve.py)
OWNERS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(_BOT, ("bot",)), **dict.fromkeys(_HEALTHCHECK, ("healthcheck",)),
    **dict.fromkeys(_HTTP, ("api", "web")),
    **dict.fromkeys(("api_port", "api_max_body_bytes", "ready_timeout_ms"), ("api",)),
    **dict.fromkeys(("web_port", "web_password", "web_read_only", "web_session_hours", "web_secure_cookie"), ("web",)),
    **dict.fromkeys(("backup_dir", "backup_keep", "doctor_min_free_mb"), ("botstack",)),
}


def stops(field: str, program: str | None) -> bool:
    """Whether a bad value of `field` stops `program` (None: `botstack doctor`, which checks them
    all): the settings OWNERS names stop only their programs; the others (MONGODB_URI...) every one."""
    return program is None or program in OWNERS.get(field, (program,))


def env_name(field: str) -> str:
    """The environment variable that sets `field`."""
    info = Settings.model_fields.get(field)
    if info is not None and isinstance(info.validation_alias, str):
        return info.validation_alias
    if info is not None and isinstance(info.validation_alias, AliasChoices):
        return str(info.validation_alias.choices[0])
    return f"BOTSTACK_{field.upper()}"


def _field_of(loc: str) -> str | None:
    """The field pydantic means: it reports aliased fields by their alias."""
    if loc in Settings.model_fields:
        return loc
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias] if alias else []
        if any(str(c).lower() == loc.lower() for c in choices):
            return name
    return None


def _variable(field: str | None, loc: str) -> str:
    """The variable the user actually set (PORT, when BOTSTACK_API_PORT came from PORT)."""
    if field is None:
        return loc.upper()
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        present = {k.upper() for k in os.environ}
        return next((str(c) for c in alias.choices if str(c).upper() in present), str(alias.choices[0]))
    return env_name(field)


def _errors(exc: ValidationError) -> list[tuple[str | None, ConfigError]]:
    found = []
    for err in exc.errors():
        loc = str((err.get("loc") or ("?",))[0])
        field = _field_of(loc)
        cause = (err.get("ctx") or {}).get("error")
        message = str(cause) if cause is not None else err.get("msg", "invalid")
        found.append((field, ConfigError(_variable(field, loc), message.removeprefix("Value error, "))))
    return found


def _unreadable(exc: SettingsError) -> ConfigError:
    """A setting's file (secretfiles.py) that this user may not read, named with what to do."""
    field = re.search(r'field "([^"]+)"', str(exc))
    cause = exc.__cause__
    where = getattr(cause, "filename", None) or f"its file in {secrets_dir()}"
    if isinstance(cause, PermissionError):
        fix = f"let uid {os.getuid()} read it (Docker and Swarm give secrets mode 0444)"
    else:
        fix = "it must hold the value as UTF-8 text"
    why = getattr(cause, "strerror", None) or type(cause).__name__
    return ConfigError(env_name(field[1]) if field else "a setting's file", f"cannot read {where} ({why}); {fix}")


def _init_key(field: str) -> str:
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return alias if isinstance(alias, str) else field


def load_settings(program: str | None = None) -> Settings:
    """Read settings from the environment; raises ConfigError naming the variable.

    For `program`, a bad value of a setting another program owns (OWNERS) does not raise: that
    setting takes its default here and the error is kept in `config_problems`."""
    overrides: dict = {}
    problems: dict[str, str] = {}
    while True:
        try:
            settings = Settings(**overrides)
            settings._problems = problems
            return settings
        except ConfigError:
            raise
        except SettingsError as exc:  # a secret file it cannot read: every program reads them all
            raise _unreadable(exc) from None
        except ValidationError as exc:
            errors = _errors(exc)
            mine = [e for f, e in errors if stops(f, program)]
            if mine:
                raise mine[0] from None
            for field, error in errors:
                overrides[_init_key(field)] = Settings.model_fields[field].default
                for owner in OWNERS[field]:
                    problems.setdefault(owner, str(error))


@lru_cache(maxsize=1)
def settings_or_exit(program: str) -> Settings:
    """The settings for a program's entry point; a bad value ends it with one line and 78."""
    try:
        return load_settings(program)
    except ConfigError as exc:
        _fail(program, str(exc))


def require(settings: Settings, field: str, program: str) -> None:
    """End `program` with 78 when a setting it needs is absent."""
    if getattr(settings, field) is None:
        _fail(program, f"{env_name(field)}: is required by the {program} program")


def refuse(program: str, message: str) -> None:
    """A program that cannot run as configured: one line, exit 78."""
    _fail(program, message)


def _fail(program: str, message: str) -> None:
    # One write, so the line stays whole in output that several programs share.
    sys.stderr.write(f"{program}: configuration error: {message}\n")
    sys.stderr.flush()
    raise SystemExit(EX_CONFIG)
