"""The configuration: typed, frozen models of every key of syncd.yaml.

``Config.from_yaml(path)`` is the one way in. It reports every problem of a file at
once, each as ``FILE:LINE:COL: key.path: what is wrong``, by validating the data with
pydantic, mapping each error's location back to the YAML node it came from, and
running the cross-field rules of ``config_rules`` over the same data. Secrets are
``SecretStr`` so they never print; ``Config.show()`` gives the effective config with
secrets masked. Relative paths are taken from the working directory, as the example
config (store under ./var) expects. Nothing here touches the environment.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    model_validator,
)

from syncd.config import rules as config_rules
from syncd.config import yamlmarks
from syncd.config.values import (
    AddressOrDomain,
    Command,
    Duration,
    Email,
    Folders,
    HostPort,
    Listen,
    Name,
    Network,
    Port,
    SyncFrom,
)
from syncd.crm import lifecycle
from syncd.errors import ConfigError, ConfigProblem


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Secrets(Model):
    """Where a password comes from: exactly one of three ways (checked in config_rules)."""

    password: SecretStr | None = None
    password_file: Path | None = None
    password_command: Command | None = None


class StoreConfig(Model):
    path: Path = Path("./var/syncd.sqlite3")
    attachments_dir: Path = Path("./var/attachments")
    max_attachment_mb: Annotated[float, Field(gt=0)] = 50
    max_engagements_per_record: Annotated[int, Field(ge=1)] = 10000


class TeamMember(Model):
    name: Annotated[str, Field(min_length=1)]
    email: Email
    aliases: list[Email] = []
    smtp_password_file: Path | None = None


class ImapConfig(Secrets):
    host: Annotated[str, Field(min_length=1)]
    port: Port | None = None
    security: Literal["tls", "starttls", "none"] = "tls"
    username: Annotated[str, Field(min_length=1)]
    oauth2_token_command: Command | None = None
    timeout: Duration = 60.0

    @model_validator(mode="after")
    def _default_port(self) -> ImapConfig:
        if self.port is None:
            object.__setattr__(self, "port", 993 if self.security == "tls" else 143)
        return self


class SyncConfig(Model):
    from_: SyncFrom = Field("3m", alias="from")
    people: Literal["all", "contacts"] = "all"
    folders: Folders = ["INBOX"]
    create_contacts: bool = False
    poll_interval: Duration = 300.0
    idle: bool = True


class Inbox(Model):
    name: Name
    kind: Literal["personal", "team"]
    owner: Email | None = None
    address: Email | None = None
    imap: ImapConfig
    sync: SyncConfig = SyncConfig()

    @model_validator(mode="before")
    @classmethod
    def _address_defaults_to_owner(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("kind") == "personal" and not data.get("address"):
            return {**data, "address": data.get("owner")}
        return data


RECORD_TYPES = ("contacts", "companies", "deals", "tickets")


def _record_types(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"expected a list of record types, some of {', '.join(RECORD_TYPES)}")
    for item in value:
        if item not in RECORD_TYPES:
            raise ValueError(f"{item!r} is not one of {', '.join(RECORD_TYPES)}")
    # A logged email is on its contacts' timelines: without them it is on none it could
    # be found from, and the rules would have nobody to log it for.
    if "contacts" not in value:
        raise ValueError("must include contacts (a logged email is always on its contacts)")
    return [t for t in RECORD_TYPES if t in value]


RecordTypes = Annotated[list[str], BeforeValidator(_record_types)]


class Associate(Model):
    # Which records a logged email is associated with by default; a BCC tag (log+deal-42@)
    # picks its own. Files written before this key stay valid: all four.
    records: RecordTypes = list(RECORD_TYPES)
    max_deals: Annotated[int, Field(ge=0)] = 5
    max_tickets: Annotated[int, Field(ge=0)] = 5


class LoggingConfig(Model):
    never_log: list[AddressOrDomain] = []
    associate: Associate = Associate()


class RelayConfig(Secrets):
    host: Annotated[str, Field(min_length=1)]
    port: Port = 587
    security: Literal["tls", "starttls", "none"] = "starttls"
    username: str | None = None


class TlsConfig(Model):
    cert: Path
    key: Path


class BccConfig(Model):
    listen: Listen = HostPort("127.0.0.1", 2525)
    addresses: Annotated[list[Email], Field(min_length=1)]
    verify_sender: Literal["auth", "spf", "dkim", "none"] = "spf"
    extra_bcc: list[Email] = []
    create_contacts: bool = True  # false: BCC (and submitted) mail logs to existing contacts only
    relay: RelayConfig | None = None
    tls: TlsConfig | None = None
    require_tls: bool = False
    max_message_mb: Annotated[int, Field(ge=1, le=1024)] = 60


class DealPipeline(Model):
    open: Annotated[list[str], Field(min_length=1)]
    won: str
    lost: str


class TicketPipeline(Model):
    open: Annotated[list[str], Field(min_length=1)]
    closed: str


# The defaults are the CRM's (crm/lifecycle.py); the config only spells them as models.
DEFAULT_DEALS = DealPipeline(
    open=list(lifecycle.DEFAULT_DEALS.open),
    won=lifecycle.DEFAULT_DEALS.won,
    lost=lifecycle.DEFAULT_DEALS.lost,
)
DEFAULT_TICKETS = TicketPipeline(
    open=list(lifecycle.DEFAULT_TICKETS.open), closed=lifecycle.DEFAULT_TICKETS.closed
)


class Pipelines(Model):
    deals: DealPipeline = DEFAULT_DEALS
    tickets: TicketPipeline = DEFAULT_TICKETS


class MetricsConfig(Model):
    listen: Listen | None = None


class PrivacyConfig(Model):
    require_legal_basis: bool = False


class SubmissionConfig(Model):
    listen: Listen = HostPort("127.0.0.1", 587)
    tls: TlsConfig | None = None
    require_tls: bool = True
    max_message_mb: Annotated[int, Field(ge=1, le=1024)] = 60


class TrackingConfig(Model):
    enabled: bool = False
    listen: Listen = HostPort("127.0.0.1", 8025)
    public_url: Annotated[str, Field(pattern=r"^https?://[^\s/]+")] | None = None
    secret_file: Path | None = None
    blocked_ips: list[Network] = []
    trusted_proxies: list[Network] = []
    pixel: Literal["bottom", "top"] = "bottom"
    notify_command: str | None = None
    keep_full_ips: bool = False
    prefetch_seconds: Annotated[float, Field(ge=0)] = 10
    scanner_burst: Annotated[int, Field(ge=2)] = 3
    scanner_burst_seconds: Annotated[float, Field(ge=0)] = 2.0
    scanner_seconds: Annotated[float, Field(ge=0)] = 10
    self_days: Annotated[int, Field(ge=0)] = 7
    queue_size: Annotated[int, Field(ge=1)] = 10000
    rate_per_minute: Annotated[int, Field(ge=1)] = 600


class Config(Model):
    """The whole of syncd.yaml. Build it with ``from_yaml`` or ``from_mapping``."""

    store: StoreConfig = StoreConfig()
    team: Annotated[list[TeamMember], Field(min_length=1)]
    inboxes: list[Inbox] = []
    logging: LoggingConfig = LoggingConfig()
    bcc: BccConfig | None = None
    relay: RelayConfig | None = None
    submission: SubmissionConfig | None = None
    pipelines: Pipelines = Pipelines()
    metrics: MetricsConfig = MetricsConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    tracking: TrackingConfig = TrackingConfig()

    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def smarthost(self) -> RelayConfig | None:
        """The team's smarthost: ``relay``, else the older ``bcc.relay``."""
        if self.relay is not None:
            return self.relay
        return self.bcc.relay if self.bcc is not None else None

    @property
    def warnings(self) -> tuple[str, ...]:
        """Things that are allowed but unwise (e.g. an inline password in a readable file)."""
        return tuple(self._warnings)

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Config:
        """Read and validate the config at ``path``; ConfigError lists every problem."""
        name = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError([ConfigProblem(name, 0, 0, "", f"cannot read: {reason}")]) from None
        try:
            located = yamlmarks.load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = getattr(exc, "problem", None) or str(exc)
            raise ConfigError([ConfigProblem(name, line, col, "", f"YAML: {problem}")]) from None
        config = cls._validate(located, name)
        if config.bcc is not None and config.bcc.relay is not None:
            line, _col = located.where(("bcc", "relay"), key=True)
            config._warnings.append(
                f"{name}:{line}: bcc.relay still works but is deprecated; move it to the top-level "
                "relay: key, which serves extra_bcc and submission alike"
            )
        secret = config.tracking.secret_file
        if config.tracking.enabled and secret is not None and _readable_by_others(secret):
            config._warnings.append(
                f"{name}: tracking.secret_file {secret} is readable by group or others; "
                "chmod 600 it: whoever reads it can forge tracking links"
            )
        if _has_inline_secret(located.data) and _readable_by_others(Path(path)):
            config._warnings.append(
                f"{name}: holds an inline password and is readable by group or others; "
                "chmod 600 it or use password_file"
            )
        return config

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "<config>") -> Config:
        """Validate already-loaded data (tests, defaults); positions are reported as 1:1."""
        return cls._validate(yamlmarks.Located(data=data), source)

    @classmethod
    def _validate(cls, located: yamlmarks.Located, name: str) -> Config:
        data = located.data
        problems: list[ConfigProblem] = []
        for path, (line, col) in located.duplicates:
            problems.append(ConfigProblem(name, line, col, dotted(path), "duplicate key"))
        if not isinstance(data, dict):
            line, col = located.where(())
            what = "empty" if data is None else f"a {type(data).__name__}"
            problems.append(
                ConfigProblem(name, line, col, "", f"expected a mapping, the file is {what}")
            )
            raise ConfigError(problems)
        config = None
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(exc, located, name))
        for path, message in config_rules.check(data):
            line, col = located.where(path)
            problems.append(ConfigProblem(name, line, col, dotted(path), message))
        if problems or config is None:
            problems.sort(key=lambda p: (p.line, p.col))
            raise ConfigError(problems)
        return config

    def show(self) -> str:
        """The effective configuration as YAML, secrets masked: inline passwords, and the
        arguments of password and token commands (they may carry a token)."""
        data = self.model_dump(mode="json", by_alias=True)
        return yaml.safe_dump(_mask_commands(data), sort_keys=False, allow_unicode=True)


def _mask_commands(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            k: [v[0], *["**********"] * (len(v) - 1)]
            if k in ("password_command", "oauth2_token_command") and isinstance(v, list) and v
            else _mask_commands(v)
            for k, v in data.items()
        }
    if isinstance(data, list):
        return [_mask_commands(v) for v in data]
    return data


def dotted(path: tuple[str | int, ...]) -> str:
    """('inboxes', 0, 'sync', 'from') -> 'inboxes[0].sync.from'."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _pydantic_problems(
    exc: ValidationError, located: yamlmarks.Located, name: str
) -> list[ConfigProblem]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        path = _data_path(located.data, error["loc"])
        kind = error["type"]
        if kind == "extra_forbidden":
            line, col = located.where(path, key=True)
            message = "unknown key (is it misspelt?)"
        elif kind == "missing":
            line, col = located.where(path[:-1])
            message = "required key is missing"
        else:
            line, col = located.where(path)
            message = _message(error)
        problems.append(ConfigProblem(name, line, col, dotted(path), message))
    return _dedupe(problems)


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Keep the parts of a pydantic location that index the data; drop union/type tags."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and isinstance(part, str):
            path.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int):
            path.append(part)
            node = node[part] if part < len(node) else None
    return tuple(path)


def _message(error: Any) -> str:
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if error["type"] == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        message = f"must be one of {expected.replace(' or ', ', ')}"
    elif error["type"] == "string_pattern_mismatch":
        message = "has characters that are not allowed here"
    return message


def _dedupe(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    """A value failing every arm of a union gives one error per arm; keep the first per path."""
    seen: set[str] = set()
    kept = []
    for problem in problems:
        if problem.path not in seen:
            seen.add(problem.path)
            kept.append(problem)
    return kept


def _has_inline_secret(data: Any) -> bool:
    if isinstance(data, dict):
        if data.get("password"):
            return True
        return any(_has_inline_secret(v) for v in data.values())
    if isinstance(data, list):
        return any(_has_inline_secret(v) for v in data)
    return False


def _readable_by_others(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO))
    except OSError:
        return False
