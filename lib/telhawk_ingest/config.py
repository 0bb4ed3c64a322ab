"""Settings: a YAML file, then environment overrides, then defaults, validated once (SPEC §9).

Here: the settings model and `load_settings`. Every key the seed names works as it says, and
every scalar key `section.key` can also be set as `INGEST_SECTION_KEY`. A bad value fails at
start-up with a ConfigError naming the key and what was expected. Not here: reading settings
anywhere else; the rest of the package is handed a Settings object.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import credentials
from .errors import ConfigError

log = logging.getLogger(__name__)

CONFIG_FILE_ENV = "INGEST_CONFIG_FILE"

# Splunk's rule for index names (Splunk Enterprise, Managing Indexers: "Create custom indexes"):
# lower-case ASCII letters, digits, `_` and `-`, not starting with `_` or `-` (Splunk's own
# internal indexes start with `_`), at most 80 characters. Every index name the service takes, from
# a client or from the settings, follows it; nothing is ever rewritten into it.
INDEX_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,79}")
INDEX_RULE = ("lower-case letters, digits, '_' and '-', not starting with '_' or '-', "
              "at most 80 characters")


def is_index_name(name: object) -> bool:
    """Whether `name` is a string that follows INDEX_NAME (Splunk's index naming rule)."""
    return type(name) is str and INDEX_NAME.fullmatch(name) is not None


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenRateLimit(_Section):
    """A token's events per second, per process (ratelimit.py); `burst`: events it may send at
    once after a quiet spell (default: one second's worth)."""

    events_per_second: float = Field(gt=0)
    burst: int | None = Field(default=None, gt=0)


class HecToken(_Section):
    name: str = Field(min_length=1)
    token: str = Field(min_length=1)
    default_index: str | None = None
    default_sourcetype: str | None = None
    default_source: str | None = None
    allowed_indexes: list[str] | None = None
    allow_query_string: bool = False
    # Splunk's indexer acknowledgement (useACK): a data channel on every request, an ackId in each
    # success answer, and /services/collector/ack (SPEC §3; ack.py).
    ack: bool = False
    # Beyond it, requests are answered 503 code 9 with Retry-After, nothing of them kept (ratelimit.py).
    rate_limit: TokenRateLimit | None = None

    @model_validator(mode="after")
    def _index_scope(self) -> HecToken:
        """Index names follow INDEX_NAME, and a token limited to `allowed_indexes` has its
        `default_index` among them, so an event that names no index stays in scope (SPEC §3).
        Errors name the token by its name, never by the token itself."""
        who = f"token {self.name!r}"
        if self.default_index is not None and not is_index_name(self.default_index):
            raise ValueError(f"{who}: default_index {self.default_index[:100]!r} is not an index name "
                             f"({INDEX_RULE})")
        if self.allowed_indexes is None:
            return self
        for index in self.allowed_indexes:
            if not is_index_name(index):
                raise ValueError(f"{who}: allowed_indexes entry {index[:100]!r} is not an index name "
                                 f"({INDEX_RULE})")
        if self.default_index is None or self.default_index not in self.allowed_indexes:
            raise ValueError(f"{who}: has allowed_indexes, so default_index must be set to one of them "
                             f"(events that name no index go there); got {self.default_index!r}")
        return self


class AuthScope(_Section):
    """Where a remotely validated token may write when the auth service's answer names no
    `allowed_indexes` (auth.py): its default index, and the indexes it may name."""

    default_index: str = Field(default="main", min_length=1)
    allowed_indexes: list[str] = Field(default_factory=lambda: ["main"], min_length=1)

    @model_validator(mode="after")
    def _default_inside(self) -> AuthScope:
        if self.default_index not in self.allowed_indexes:
            raise ValueError(f"default_index {self.default_index!r} must be one of allowed_indexes")
        return self


class HecSettings(_Section):
    tokens: list[HecToken] = Field(default_factory=list)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    # Per request, counted while the body is parsed (SPEC §9): past it the request is refused with
    # 413 before more envelopes are built.
    max_events_per_request: int = Field(default=100_000, gt=0)
    # A gzip body may inflate to at most this many times its compressed size (and never past
    # max_body_bytes); checked while decompressing (SPEC §9).
    max_decompression_ratio: int = Field(default=100, gt=0)
    # Optional remote token validation: POST {auth_url}/api/v1/auth/validate-hec (auth.py).
    # http:// only when this is true, for local testing; a warning says so at start-up.
    auth_allow_insecure_http: bool = False
    auth_url: str | None = None
    auth_timeout_seconds: float = Field(default=2.0, gt=0)
    auth_cache_seconds: float = Field(default=30.0, ge=0)
    # A request body must arrive whole within this many seconds of the headers, else 408.
    body_read_timeout_seconds: float = Field(default=10.0, gt=0)
    # Per process: remote calls in flight at once (more are answered 503 code 9 at once, never
    # queued), and a token bucket of calls per second with bursts up to auth_burst.
    auth_max_in_flight: int = Field(default=4, gt=0)
    auth_calls_per_second: float = Field(default=10.0, gt=0)
    auth_burst: int = Field(default=20, gt=0)
    # Whether a `?token=` unknown here is sent to the auth service at all.
    auth_query_string: bool = False
    auth_default_scope: AuthScope = Field(default_factory=AuthScope)
    # Load shedding, per process: ingest requests in the application at once; one more is answered
    # 503 code 9 with Retry-After at once, before its body is read (http.py, shedding.py).
    max_in_flight: int = Field(default=256, gt=0)

    @field_validator("auth_url")
    @classmethod
    def _https(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or value.startswith("https://"):
            return value
        if value.startswith("http://") and info.data.get("auth_allow_insecure_http"):
            return value
        raise ValueError("expected an https:// URL (http:// only with hec.auth_allow_insecure_http: true, "
                         "for local testing)")


class OperatorToken(_Section):
    """An operator credential (SPEC §8, §9). `role`: `read` lists, shows and reads statistics,
    metrics and normalizers; `admin` may also replay, delete, purge and run retention."""

    name: str = Field(min_length=1)
    token: str = Field(min_length=16)
    role: Literal["read", "admin"] = "admin"


class OperatorSettings(_Section):
    tokens: list[OperatorToken] = Field(default_factory=list)
    metrics_require_auth: bool = False


class DlqSettings(_Section):
    enabled: bool = True
    base_path: Path = Path("/var/lib/telhawk/dlq")
    # A request whose dead letters would take the DLQ past a limit is refused whole with 503
    # (SPEC §2, §9); 0 means no limit for the two pending limits.
    max_pending_files: int = Field(default=1_000_000, ge=0)
    max_pending_bytes: int = Field(default=20 * 1024**3, ge=0)
    min_free_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    # Entries older than this, counted from their first failure (the record's `timestamp`), are
    # deleted by retention (retention.py); None keeps them until they are replayed or purged.
    max_age: timedelta | None = None
    # When an entry would pass max_pending_files or max_pending_bytes: `refuse` answers 503 code 9
    # (SPEC §2); `drop_oldest` deletes the oldest entries to make room, each counted and audited.
    full_policy: Literal["refuse", "drop_oldest"] = "refuse"

    @field_validator("max_age", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> Any:
        """`30d`, `12h`, `90m`, `45s`, `2w`, plain seconds, or ISO 8601 (`P7D`); must be positive."""
        return parse_duration(value)

    @field_validator("max_age")
    @classmethod
    def _positive_age(cls, value: timedelta | None) -> timedelta | None:
        if value is not None and value.total_seconds() <= 0:
            raise ValueError("expected a positive duration such as 30d, 12h or 3600 (seconds)")
        return value


_DURATION = re.compile(r"\s*+(-?+\d++(?:\.\d++)?+)\s*+([smhdw]?+)\s*+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(value: Any) -> Any:
    """A duration setting as seconds (`<number><s|m|h|d|w>` or a number); anything else is left
    for pydantic's timedelta (ISO 8601 `P7D`, `HH:MM:SS`). ValueError when it is not positive."""
    if isinstance(value, str) and (match := _DURATION.fullmatch(value)):
        value = float(match[1]) * _UNIT_SECONDS[match[2] or "s"]
    if isinstance(value, int | float) and not isinstance(value, bool) and value <= 0:
        raise ValueError("expected a positive duration such as 30d, 12h or 3600 (seconds)")
    return value


class RetryBudgetSettings(_Section):
    """Retries at most `ratio` of first tries plus `min_per_second` over `window_seconds`
    (budget.py), per process; off unless enabled."""

    enabled: bool = False
    ratio: float = Field(default=0.2, ge=0, le=1)
    min_per_second: float = Field(default=10.0, ge=0)
    window_seconds: int = Field(default=10, ge=1, le=3600)


class CoreSettings(_Section):
    """The storage connection and its retry schedule (the seed's `core` section)."""

    url: str | None = None
    timeout_seconds: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_delay_ms: int = Field(default=100, ge=0)
    retry_multiplier: float = Field(default=2.0, ge=1)
    retry_max_delay_ms: int = Field(default=30_000, ge=0)
    jitter: bool = False
    # A Retry-After from storage lengthens a wait up to this many seconds.
    max_retry_after_seconds: float = Field(default=5.0, ge=0)
    # The whole storage phase of one request (every try and wait): when it is spent, the events
    # not stored yet go to the DLQ as storage_failed (retry.py); a try is cut short to fit it.
    request_deadline_seconds: float = Field(default=15.0, gt=0)
    retry_budget: RetryBudgetSettings = Field(default_factory=RetryBudgetSettings)
    username: str | None = None
    password: str | None = None
    verify_tls: bool = True

    # Whether `url` came with a user and password in it (moved out; a start-up warning).
    _url_had_credentials: bool = PrivateAttr(default=False)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _credentials_out_of_url(self) -> CoreSettings:
        """`https://user:pw@host` becomes `https://host` with `username`/`password` (unless those
        are set), so that the URL can be printed and logged (credentials.py)."""
        if self.url:
            url, user, password = credentials.split_credentials(self.url)
            if url != self.url:
                self.url, self._url_had_credentials = url, True
                if self.username is None and self.password is None:
                    self.username, self.password = user or None, password
        return self

    def warnings(self) -> list[str]:
        """Insecure settings, for a warning at start-up (credentials.storage_warnings)."""
        return credentials.storage_warnings(self.url, bool(self.username or self.password),
                                            self._url_had_credentials, self.verify_tls)


class DayWindow(_Section):
    """How far an event's own time may lie from its arrival and still pick its storage day (SPEC §3).

    Outside `[arrival - back_days, arrival + ahead_days]` the arrival's day is used instead.
    Arrival is the time in the envelope id, so a replay lands on the day of the first try; but an
    envelope posted back to HEC brings its own id, so that time counts only within
    `[this request's arrival - replay_back_days, + ahead_days]`, else the request's arrival does:
    ids made up by a client cannot pick days of their own either. Whole days, at most ten years.
    """

    back_days: int = Field(default=7, ge=0, le=3650)
    ahead_days: int = Field(default=1, ge=0, le=3650)
    replay_back_days: int = Field(default=30, ge=0, le=3650)


class BreakerSettings(_Section):
    """The circuit breaker on the storage hop (breaker.py), per process."""

    enabled: bool = True
    # Consecutive failed tries (the whole request failed: transport error, 429/5xx) that open it.
    failures: int = Field(default=5, ge=1)
    # Seconds it stays open before one probe try decides.
    cooldown_seconds: float = Field(default=15.0, gt=0)


class LogSettings(_Section):
    """Logs on stderr (logs.py): JSON lines by default, or plain text for a person at a terminal."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


class StorageSettings(_Section):
    # auto: opensearch when core.url is set, else local.
    backend: Literal["auto", "local", "opensearch"] = "auto"
    data_dir: Path = Path("/var/lib/telhawk/data")
    index_prefix: str = "telhawk-"
    bulk_max_events: int = Field(default=500, gt=0)
    day_window: DayWindow = Field(default_factory=DayWindow)
    # `local` only: rows whose storage day is more than this many days before today are deleted.
    retention_days: int | None = Field(default=None, gt=0)
    breaker: BreakerSettings = Field(default_factory=BreakerSettings)


class ReplaySettings(_Section):
    """Replaying DLQ entries (replay.py, healing.py; SPEC §11). One replay call stops after
    `max_entries_per_call` entries or `time_budget_seconds` (checked between batches of at most
    `storage.bulk_max_events`; the defaults fit a 30 s function timeout) and answers a cursor.
    A claim older than `claim_timeout_seconds` was left by a replay that was killed and is
    released (claims.py; keep it above the longest storage try and the clock skew between hosts).
    `heal_on_recovery`: replay `storage_failed` entries in the background when storage recovers,
    at most `heal_rate_limit` events per second."""

    max_entries_per_call: int = Field(default=10_000, gt=0)
    time_budget_seconds: float = Field(default=20.0, gt=0)
    claim_timeout_seconds: float = Field(default=300.0, gt=0)
    heal_on_recovery: bool = True
    heal_rate_limit: float = Field(default=200.0, gt=0)


class TriggerScope(_Section):
    """The HEC token scope of one subscription, queue or stream (SPEC §3, §12): the name written as
    `token_name` and the index scope, exactly as a HEC token's. The publisher cannot pick it: it
    comes from here, by the name of the subscription the message arrived on."""

    token_name: str = Field(min_length=1)
    default_index: str | None = None
    allowed_indexes: list[str] | None = None
    default_sourcetype: str | None = None
    default_source: str | None = None

    @model_validator(mode="after")
    def _index_scope(self) -> TriggerScope:
        self.token()  # HecToken's own index checks
        return self

    def token(self) -> HecToken:
        """The scope as the HEC parser takes it (a token that authenticates nothing)."""
        return HecToken(name=self.token_name, token=f"trigger:{self.token_name}",
                        default_index=self.default_index, allowed_indexes=self.allowed_indexes,
                        default_sourcetype=self.default_sourcetype, default_source=self.default_source)


class TriggerSettings(_Section):
    """Event-driven invocation (SPEC §12; triggers.py, schedules.py)."""

    # Subscription, queue or stream name (the last part of its path or ARN) -> its token scope.
    subscriptions: dict[str, TriggerScope] = Field(default_factory=dict)
    # The scheduled replay's filter (SPEC §11 filter keys); unset: the replay schedule does nothing.
    replay_filter: dict[str, str] | None = None
    # Events per second the scheduled replay may store (None: the replay's own default).
    replay_rate_limit: float | None = Field(default=None, gt=0)


class NormalizerSettings(_Section):
    """What ingest normalizes with beyond the built-ins (normalizers/loading.py, README
    "Normalizers: built-ins, plugins, aliases and match order")."""

    # source type -> the registered source type whose normalizer it uses, e.g.
    # {cisco_asa: "cisco:asa"}; checked against the registry when the service starts.
    aliases: dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict)
    # Whether the `telhawk_ingest.normalizers` entry points of installed packages are loaded.
    load_plugins: bool = True


class Settings(_Section):
    hec: HecSettings = Field(default_factory=HecSettings)
    operator: OperatorSettings = Field(default_factory=OperatorSettings)
    dlq: DlqSettings = Field(default_factory=DlqSettings)
    core: CoreSettings = Field(default_factory=CoreSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    normalizers: NormalizerSettings = Field(default_factory=NormalizerSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    triggers: TriggerSettings = Field(default_factory=TriggerSettings)

    @model_validator(mode="after")
    def _no_weak_or_public_tokens(self, info: ValidationInfo) -> Settings:
        """Tokens too short, and the emulator's public tokens outside it, are refused (credentials.py).
        The context's `emulator` says whether the local emulator started this process."""
        emulator = bool((info.context or {}).get("emulator"))
        problems = credentials.token_problems([(t.name, t.token) for t in self.hec.tokens],
                                              [(t.name, t.token) for t in self.operator.tokens], emulator)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def storage_backend(self) -> str:
        if self.storage.backend == "auto":
            return "opensearch" if self.core.url else "local"
        return self.storage.backend

    @property
    def state_path(self) -> Path:
        """Shared counters and the audit log live beside the DLQ files, on the same volume."""
        return self.dlq.base_path / ".state"


# Environment names the seed documents, beyond the generic INGEST_SECTION_KEY form. Where two
# names set the same key, the first one present wins.
ENV_ALIASES: dict[str, tuple[str, ...]] = {
    "dlq.enabled": ("INGEST_DLQ_ENABLED", "CORE_DLQ_ENABLED"),
    "dlq.base_path": ("INGEST_DLQ_BASE_PATH", "CORE_DLQ_BASE_PATH"),
    "core.url": ("INGEST_OPENSEARCH_URL", "INGEST_CORE_URL", "CORE_URL"),
    "core.timeout_seconds": ("INGEST_CORE_TIMEOUT_SECONDS",),
}


def _scalar_keys() -> list[str]:
    keys = []
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            if field.annotation is not None and "list" not in str(field.annotation):
                keys.append(f"{section}.{name}")
    return keys


def _mapping_keys() -> set[str]:
    """Keys whose value is a small mapping: from the environment they are given as YAML flow text,
    e.g. `INGEST_STORAGE_DAY_WINDOW='{back_days: 7, ahead_days: 1}'`,
    `INGEST_NORMALIZERS_ALIASES='{cisco_asa: "cisco:asa"}'` or
    `INGEST_TRIGGERS_SUBSCRIPTIONS='{logs: {token_name: pubsub, default_index: main}}'`."""
    keys = set()
    for section, info in Settings.model_fields.items():
        model = info.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, field in model.model_fields.items():
            annotation = field.annotation
            # A mapping, or an optional one (`dict[str, str] | None`).
            origins = {get_origin(annotation), *(get_origin(arg) for arg in get_args(annotation))}
            if (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or dict in origins:
                keys.add(f"{section}.{name}")
    return keys


def _env_overrides(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """key -> (environment variable, value) for every override present."""
    found: dict[str, tuple[str, str]] = {}
    for key in _scalar_keys():
        names = ENV_ALIASES.get(key, ()) or ()
        generic = "INGEST_" + key.replace(".", "_").upper()
        for name in (*names, generic):
            if name in env:
                found[key] = (name, env[name])
                break
    # Tokens from the environment, for container set-ups: "name:token[,name:token]".
    for key, name in (("hec.tokens", "INGEST_HEC_TOKENS"), ("operator.tokens", "INGEST_OPERATOR_TOKENS")):
        if name in env:
            found[key] = (name, env[name])
    return found


OPERATOR_ROLES = ("read", "admin")


# A YAML list: flow style `[{...}, ...]`, or block style, lines starting with `- `.
_YAML_LIST = re.compile(r"\s*+(?:\[|-(?:\s|$))")


def _parse_tokens(var: str, text: str, with_role: bool = False) -> list[dict[str, Any]]:
    """`name:token[,name:token]`, or a YAML/JSON list of token mappings, flow style (`[{name: ...,
    token: ..., allowed_indexes: [...]}]`) or block style (lines `- {name: ..., token: ...}`), e.g.
    from a secret, for tokens with more than a name. With `with_role` (operator tokens) an entry
    may be `name:token:role`, role `read` or `admin`; such a token cannot contain ':' (the list form
    takes any token). A pair whose token holds white space (a YAML mapping or a list misread as
    pairs) is refused. Errors never quote a token."""
    if _YAML_LIST.match(text):
        try:
            listed = yaml.safe_load(text)
        except yaml.YAMLError:
            listed = None
        if not isinstance(listed, list) or not all(isinstance(t, dict) for t in listed):
            raise ConfigError(f"{var}: expected a list of token mappings such as '[{{name: a, token: ...}}]' "
                              "or lines '- {name: a, token: ...}'")
        return listed
    tokens = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, token = part.partition(":")
        if not sep or not name or not token:
            raise ConfigError(f"{var}: expected name:token[,name:token], got an entry without ':'")
        if any(c.isspace() for c in token):
            raise ConfigError(f"{var}: expected name:token[,name:token] or a YAML list of token mappings "
                              f"('[{{name: a, token: ...}}]' or lines '- {{name: a, token: ...}}'), got an "
                              "entry whose token holds white space")
        entry = {"name": name, "token": token}
        if with_role and ":" in token:
            entry["token"], _, role = token.rpartition(":")
            if role not in OPERATOR_ROLES or not entry["token"] or ":" in entry["token"]:
                raise ConfigError(f"{var}: entry {name!r}: expected name:token or name:token:role with role "
                                  "read or admin (a token with ':' in it needs the list form)")
            entry["role"] = role
        tokens.append(entry)
    return tokens


def _parse_mapping(var: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise ConfigError(f"{var}: expected a YAML mapping such as '{{key: value}}'") from None


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Read the YAML file (argument, else INGEST_CONFIG_FILE), apply environment overrides (and
    secrets named by `*_SECRET` variables, credentials.resolve_secrets), validate. Insecure
    storage settings are logged as warnings. Public or short tokens are refused unless
    TELHAWK_LOCAL_EMULATOR=1 (credentials.py)."""
    env = os.environ if env is None else env
    env = {**env, **credentials.resolve_secrets(env)}
    path = path or env.get(CONFIG_FILE_ENV)
    data: dict[str, Any] = {}
    if path:
        try:
            loaded = yaml.safe_load(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{CONFIG_FILE_ENV}: cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of sections at the top level")
        data = loaded or {}
    sources: dict[str, str] = {}
    mappings = _mapping_keys()
    for key, (var, value) in _env_overrides(env).items():
        section, name = key.split(".")
        parsed: Any = value
        if key.endswith(".tokens"):
            parsed = _parse_tokens(var, value, with_role=key == "operator.tokens")
        elif key in mappings:
            parsed = _parse_mapping(var, value)
        if not isinstance(data.get(section), dict):
            data[section] = {}
        data[section][name] = parsed
        sources[key] = var
    try:
        settings = Settings.model_validate(
            data, context={"emulator": env.get(credentials.EMULATOR_ENV) == "1"})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, sources)) from None
    for warning in settings.core.warnings():
        log.warning("insecure storage setting: %s", warning)
    return settings


def _describe(exc: ValidationError, sources: dict[str, str]) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        origin = sources.get(".".join(str(p) for p in err["loc"][:2]))
        where = f"{key} (from {origin})" if origin else key
        given = err.get("input")
        secret = key.endswith(("token", "password", "username"))
        if key == "core.url" and isinstance(given, str):
            given = credentials.redact_url(given)
        shown = "" if isinstance(given, dict | list) or secret else f", got {given!r}"
        if not err["loc"]:  # a rule across keys (e.g. Settings._no_weak_or_public_tokens): as written
            lines.append(str(err["ctx"]["error"]) if "error" in err.get("ctx", {}) else err["msg"])
            continue
        msg = err["msg"]  # only its first letter lowered: the rest may quote a token's name
        lines.append(f"{where}: {msg[:1].lower()}{msg[1:]}{shown}")
    return "invalid configuration: " + "; ".join(lines)
