"""The two ways `telhawk-dlq` reaches a DLQ: the operator API over HTTP, or the DLQ directory itself.

Both give the command layer (commands.py) the same calls and the same answers: the JSON bodies of
SPEC §8 and §11. `ApiMode` sends them to a running service with the operator token; `DirMode` runs
the same use cases in this process on a DLQ folder (`--dlq-dir`), with the settings of a config file
for what needs more than the folder (the storage a replay writes to, retention limits, normalizer
aliases). Errors from either become a `CliError` carrying the exit code (`Exit`), so a script sees
the same code for the same refusal in both modes.

Not here: parsing the command line or printing (commands.py, render.py).
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Callable, Mapping
from enum import IntEnum
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson

from ..config import Settings, load_settings
from ..credentials import EMULATOR_ENV
from ..emulator_env import emulator_root, local_overrides
from ..entries import delete_entry, show_entry
from ..errors import ApiError, ConfigError
from ..normalizer_list import list_normalizers
from ..normalizers import Registry
from ..normalizers.loading import load_registry
from ..replay import replay_dlq
from ..retention import RetentionParts, run_retention
from ..service import Operator, Service
from ..storage import make_backend

DEFAULT_URL = "http://127.0.0.1:8088"
TOKEN_ENV = "TELHAWK_OPERATOR_TOKEN"
DEFAULT_TIMEOUT_S = 60.0


class Exit(IntEnum):
    """Exit codes of `telhawk-dlq` (README, "The DLQ command line")."""

    OK = 0
    # The call ran but not everything asked for happened: an entry failed again on replay, an id is
    # not in the DLQ, a sample did not normalize, a purge was not confirmed.
    INCOMPLETE = 1
    # The command line or the request was not understood (bad option, filter value, unknown id
    # syntax); nothing was done.
    USAGE = 2
    # No operator credential, or the service refused it (401), or its role may not do this (403).
    AUTH = 3
    # The service could not be reached, timed out, or answered 5xx (503: busy, retry later).
    UNAVAILABLE = 4


class CliError(Exception):
    """A failure the command line reports in one line on stderr and exits with `code`."""

    def __init__(self, code: Exit, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def exit_for_status(status: int) -> Exit:
    """The exit code of an operator API error status (SPEC §8, §11): 400/405 usage, 401/403 auth,
    404/409 (no such entry, corrupt entry) incomplete, 5xx unavailable."""
    if status in (401, 403):
        return Exit.AUTH
    if status >= 500:
        return Exit.UNAVAILABLE
    if status in (404, 409):
        return Exit.INCOMPLETE
    return Exit.USAGE


class Mode(Protocol):
    """What every command needs from a DLQ, as the operator API answers it (SPEC §8, §11)."""

    where: str  # for messages: the URL or the folder

    def list(self, params: Mapping[str, str]) -> dict[str, Any]: ...

    def show(self, entry_id: str) -> dict[str, Any]: ...

    def delete(self, entry_id: str) -> dict[str, Any]: ...

    def purge(self, params: Mapping[str, str], dry_run: bool) -> dict[str, Any]: ...

    def replay(self, body: Mapping[str, Any]) -> dict[str, Any]: ...

    def retention(self, dry_run: bool) -> dict[str, Any]: ...

    def stats(self) -> dict[str, Any]: ...

    def normalizers(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class ApiMode:
    """The operator API of a running service at `url`, with `token` as `Authorization: Bearer`.

    The token goes into that header and nowhere else: never into a message, a log or an error.
    `transport` replaces the network (tests). Raises CliError: AUTH when a call needs the token and
    none was given, else as `exit_for_status` says for the service's answer, UNAVAILABLE when it
    cannot be reached within `timeout` seconds.
    """

    def __init__(self, url: str, token: str | None, *, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.where = url.rstrip("/")
        self._token = token or None
        self._client = httpx.Client(base_url=self.where, timeout=timeout, transport=transport)

    def _call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
              body: Mapping[str, Any] | None = None, auth: bool = True) -> Any:
        headers = {}
        if auth:
            if self._token is None:
                raise CliError(Exit.AUTH, f"no operator token: pass --token or set {TOKEN_ENV}")
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            answer = self._client.request(method, path, params=dict(params or {}), json=body, headers=headers)
        except httpx.TimeoutException:
            raise CliError(Exit.UNAVAILABLE, f"{self.where} did not answer {method} {path} in time") from None
        except httpx.TransportError as exc:
            raise CliError(Exit.UNAVAILABLE, f"cannot reach {self.where}: {type(exc).__name__}: {exc}") \
                from None
        try:
            data = answer.json()
        except ValueError:
            data = None
        if answer.status_code >= 400:
            detail = data.get("error") or data.get("text") if isinstance(data, dict) else None
            message = f"{method} {path}: {answer.status_code} {detail or answer.reason_phrase}"
            raise CliError(exit_for_status(answer.status_code),
                           _with_retry_after(message, answer.headers.get("retry-after")))
        if data is None:
            raise CliError(Exit.UNAVAILABLE, f"{method} {path}: the answer is not JSON "
                                             f"(is {self.where} a TelHawk ingest service?)")
        return data

    def close(self) -> None:
        self._client.close()

    def list(self, params: Mapping[str, str]) -> dict[str, Any]:
        return self._call("GET", "/api/v1/dlq", params=params)

    def show(self, entry_id: str) -> dict[str, Any]:
        # The id is one path segment, quoted: `/` in it reaches the service (which answers 400)
        # instead of changing the route.
        return self._call("GET", f"/api/v1/dlq/{_segment(entry_id)}")

    def purge(self, params: Mapping[str, str], dry_run: bool) -> dict[str, Any]:
        query = {**params, **({"dry_run": "true"} if dry_run else {})}
        return self._call("DELETE", "/api/v1/dlq/purge", params=query)

    def replay(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/v1/dlq/replay", body=body)

    def delete(self, entry_id: str) -> dict[str, Any]:
        return self._call("DELETE", f"/api/v1/dlq/{_segment(entry_id)}")

    def retention(self, dry_run: bool) -> dict[str, Any]:
        return self._call("POST", "/api/v1/dlq/retention",
                          params={"dry_run": "true"} if dry_run else None)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/healthz", auth=False)

    def normalizers(self) -> dict[str, Any]:
        return self._call("GET", "/api/v1/normalizers")


def _with_retry_after(message: str, retry_after: str | int | None) -> str:
    """`message` with the answer's `Retry-After` (seconds), as README's exit-code table says."""
    return f"{message} (retry after {retry_after} s)" if retry_after else message


def _segment(text: str) -> str:
    return quote(text, safe="")


def load_cli_settings(config: Path | None, dlq_dir: Path | None = None) -> Settings:
    """The service's settings as the service would read them (`config`, else INGEST_CONFIG_FILE,
    then INGEST_* variables), with `dlq.base_path` set to `dlq_dir` when given. CliError USAGE
    when they do not load (the message is config.py's, naming the key).

    When `dlq_dir` is the local emulator's DLQ (`<checkout>/var/dlq`, emulator_env.emulator_root)
    and no `config` is given, the settings are the emulator's: its local/config.yaml, its store in
    `<checkout>/var/data` and `local` storage, unless INGEST_* variables say otherwise, as for the
    emulator itself. The emulator's public tokens (local/config.yaml) are accepted, as the emulator
    accepts them (credentials.py): the command line authenticates nobody with the settings' tokens.
    """
    env = {**os.environ, EMULATOR_ENV: "1"}
    if dlq_dir is not None:
        root = emulator_root(dlq_dir) if config is None else None
        if root is not None:
            env.update(local_overrides(env, root))
        env["INGEST_DLQ_BASE_PATH"] = str(dlq_dir)
    try:
        return load_settings(config, env)
    except ConfigError as exc:
        raise CliError(Exit.USAGE, str(exc)) from None


def registry_for(settings: Settings) -> Registry:
    """The normalizers the service would use with these settings: the built-ins, the installed
    plugins and the configured aliases (normalizers/loading.py). CliError USAGE when an alias
    names no registered source type."""
    try:
        return load_registry(settings.normalizers)
    except (ConfigError, ValueError) as exc:
        raise CliError(Exit.USAGE, str(exc)) from None


class DirMode:
    """A DLQ folder used directly: the service's own use cases, run in this process.

    Everything an API call does happens the same way (the same checks of parameters, the shared
    counters and the audit log under `<dlq_dir>/.state/`), with the operator recorded as
    `<login name>@cli` and the admin role: whoever may write the folder may change it anyway.
    The storage backend is opened only by the calls that need it (replay, stats); those raise
    CliError USAGE when the embedded store's data directory does not exist (never created here).
    Raises CliError USAGE when `dlq_dir` is not an existing folder: a mistyped path must not
    become a new, empty DLQ.
    """

    def __init__(self, dlq_dir: Path, config: Path | None = None) -> None:
        if not dlq_dir.is_dir():
            raise CliError(Exit.USAGE, f"--dlq-dir: {dlq_dir} is not a folder")
        self.where = str(dlq_dir)
        self.settings = load_cli_settings(config, dlq_dir)
        self.operator = Operator(f"{_login()}@cli", "admin")

    @cached_property
    def service(self) -> Service:
        # No self-healing here: a background replay would be cut off when the command exits.
        settings = self.settings.model_copy(
            update={"replay": self.settings.replay.model_copy(update={"heal_on_recovery": False})})
        return Service(settings, backend=_LazyBackend(settings))  # type: ignore[arg-type]

    def _run(self, call: Callable[[Service, Operator], Any]) -> Any:
        """`call(service, operator)`, its ApiError as the CliError the API's answer would give."""
        svc = self.service
        try:
            return call(svc, self.operator)
        except ApiError as err:
            raise CliError(exit_for_status(err.status), _with_retry_after(err.message, err.retry_after)) \
                from None

    def list(self, params: Mapping[str, str]) -> dict[str, Any]:
        return self._run(lambda svc, who: svc.list_dlq(who, params))

    def show(self, entry_id: str) -> dict[str, Any]:
        return self._run(lambda svc, who: show_entry(svc, who, entry_id, {}))

    def delete(self, entry_id: str) -> dict[str, Any]:
        return self._run(lambda svc, who: delete_entry(svc, who, entry_id, {}))

    def purge(self, params: Mapping[str, str], dry_run: bool) -> dict[str, Any]:
        query = {**params, **({"dry_run": "true"} if dry_run else {})}
        return self._run(lambda svc, who: svc.purge_dlq(who, query))

    def replay(self, body: Mapping[str, Any]) -> dict[str, Any]:
        _refuse_unconfigured_store(self.settings)  # before any entry is claimed
        return self._run(lambda svc, who: replay_dlq(svc, who, {}, orjson.dumps(body)))

    def retention(self, dry_run: bool) -> dict[str, Any]:
        return self._run(lambda svc, who: run_retention(RetentionParts.of(svc), svc.clock(), dry_run,
                                                        who=who.name))

    def stats(self) -> dict[str, Any]:
        return self._run(lambda svc, who: svc.healthz())

    def normalizers(self) -> dict[str, Any]:
        return self._run(lambda svc, who: list_normalizers(svc, who, {}))

    def close(self) -> None:
        """Close the storage backend if a call opened it (its writer thread commits first)."""
        if "service" in self.__dict__:
            self.service.backend.close()


class _LazyBackend:
    """The configured storage backend, opened on first use: listing or purging a folder must not
    need the storage (nor fail when it is not reachable from where the command runs)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._backend: Any = None

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()

    def __getattr__(self, name: str) -> Any:
        if self._backend is None:
            _refuse_unconfigured_store(self._settings)
            try:
                self._backend = make_backend(self._settings)
            except ConfigError as exc:
                raise CliError(Exit.USAGE, str(exc)) from None
        return getattr(self._backend, name)


def _refuse_unconfigured_store(settings: Settings) -> None:
    """CliError USAGE when the embedded (`local`) store's `storage.data_dir` is not an existing
    folder. The service creates it on start; the command line never does: a replay into a store
    nobody configured (the default /var/lib/telhawk/data, say) would take the entries out of the
    DLQ while no service reads what was stored."""
    data_dir = settings.storage.data_dir
    if settings.storage_backend == "local" and not data_dir.is_dir():
        raise CliError(Exit.USAGE, f"storage.data_dir: {data_dir} does not exist; the command line does "
                                   "not create a store: give the data directory of the service that "
                                   "uses this DLQ (storage.data_dir in --config, or "
                                   "INGEST_STORAGE_DATA_DIR)")


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid{os.getuid()}"
