"""Credentials in the settings: what is refused, what is warned about, what is never printed, and
secrets read from AWS Secrets Manager through the Parameters and Secrets Lambda extension.

Rules (README "Credentials"):

- HEC tokens are at least MIN_HEC_TOKEN_LENGTH characters (operator tokens: 16, config.py).
- The local emulator's tokens (local/config.yaml) are public: they are refused unless the
  emulator started the process, which it marks by setting EMULATOR_ENV=1.
- Errors name a token by its `name`, never print it; `core.url` is shown without credentials.
- Insecure storage settings are accepted with a warning at start-up: credentials in `core.url`
  (moved to `core.username`/`core.password`), credentials over plain `http://`, and
  `verify_tls: false`.

Not here: reading the settings (config.py), checking a request's credential (auth.py, service.py).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from urllib.parse import quote, unquote, unquote_plus, urlsplit, urlunsplit

import httpx
import orjson

from .errors import ConfigError

EMULATOR_ENV = "TELHAWK_LOCAL_EMULATOR"
MIN_HEC_TOKEN_LENGTH = 16
# local/config.yaml's tokens: printed in the README and by `make run`, so anyone knows them.
PUBLIC_TOKENS = frozenset({
    "00000000-0000-4000-8000-000000000001",
    "00000000-0000-4000-8000-000000000002",
    "local-operator-token-change-me",
})

# Settings that can come from Secrets Manager: the variable naming the secret -> the variable
# whose value it replaces (same format). `<secret id>#<key>` takes one key of a JSON secret.
SECRET_VARIABLES = {
    "INGEST_HEC_TOKENS_SECRET": "INGEST_HEC_TOKENS",
    "INGEST_OPERATOR_TOKENS_SECRET": "INGEST_OPERATOR_TOKENS",
    "INGEST_CORE_USERNAME_SECRET": "INGEST_CORE_USERNAME",
    "INGEST_CORE_PASSWORD_SECRET": "INGEST_CORE_PASSWORD",
}
EXTENSION_PORT_ENV = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"
EXTENSION_DEFAULT_PORT = 2773
EXTENSION_TRIES = 5
EXTENSION_RETRY_S = 0.2


def token_problems(hec: list[tuple[str, str]], operator: list[tuple[str, str]], emulator: bool) -> list[str]:
    """Why configured tokens are refused, each naming the token by `name`: (name, token) pairs."""
    problems = []
    for name, token in hec:
        if len(token) < MIN_HEC_TOKEN_LENGTH:
            problems.append(f"hec.tokens: the token named {name!r} is {len(token)} characters long; "
                            f"at least {MIN_HEC_TOKEN_LENGTH} are required")
    if not emulator:
        for section, pairs in (("hec", hec), ("operator", operator)):
            for name, token in pairs:
                if token in PUBLIC_TOKENS:
                    problems.append(
                        f"{section}.tokens: the token named {name!r} is one of the local emulator's "
                        "public tokens (local/config.yaml); outside the emulator use a secret one")
    return problems


def redact_url(url: str) -> str:
    """`url` without its user and password (`https://***@host/...` when it had them)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


# A query parameter (`name=value`), up to the next `&`, `;`, quote or white space. Its name counts
# as a token's when, percent-decoded, it ends in "token" (`token`, as HEC's query-string
# authentication sends it, `access_token`, `%74oken`, any case).
_QUERY_PARAM = re.compile(r"([?&;])([^?&;=\s\"]*+)=([^&;\s\"]*+)")


def _redacted(match: re.Match[str]) -> str:
    if unquote_plus(match[2]).lower().endswith("token"):
        return f"{match[1]}{match[2]}=***"
    return match[0]


def redact_query_tokens(text: str) -> str:
    """`text` (a URL, a request line, a log line) with the value of every `...token=` query
    parameter replaced by `***`: `/services/collector/event?token=***&channel=...`; names are
    compared percent-decoded, as the server reads them."""
    return _QUERY_PARAM.sub(_redacted, text)


def split_credentials(url: str) -> tuple[str, str | None, str | None]:
    """(url without credentials, user, password) of an `http(s)://user:password@host` URL."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=host)), unquote(user), unquote(password) if sep else None


def storage_warnings(url: str | None, has_credentials: bool, url_had_credentials: bool,
                     verify_tls: bool) -> list[str]:
    """Start-up warnings about the storage connection (never quoting a credential)."""
    warnings = []
    if url_had_credentials:
        warnings.append("core.url carries a user and password: they are used as core.username and "
                        "core.password; set those (or INGEST_CORE_PASSWORD_SECRET) instead, since URLs "
                        "end up in logs")
    if url and url.startswith("http://") and has_credentials:
        warnings.append(f"core.url {redact_url(url)} is plain http: the storage credentials cross the "
                        "network unencrypted; use https://")
    if not verify_tls:
        warnings.append("core.verify_tls is false: the storage server's certificate is not checked, "
                        "so anyone on the path can pose as it and read the events and credentials")
    return warnings


def resolve_secrets(env: Mapping[str, str], transport: httpx.BaseTransport | None = None) -> dict[str, str]:
    """The variables that `*_SECRET` variables in `env` stand for, read from the extension:
    e.g. {"INGEST_HEC_TOKENS": "<secret value>"} for INGEST_HEC_TOKENS_SECRET. Raises ConfigError
    naming the variable and the secret id (never a value) when one cannot be read."""
    resolved = {}
    for variable, target in SECRET_VARIABLES.items():
        if env.get(variable):
            resolved[target] = fetch_secret(variable, env[variable], env, transport)
    return resolved


def fetch_secret(variable: str, secret: str, env: Mapping[str, str],
                 transport: httpx.BaseTransport | None = None) -> str:
    """One secret's string through the AWS Parameters and Secrets Lambda extension:
    `GET http://localhost:<port>/secretsmanager/get?secretId=<id>` with the
    `X-Aws-Parameters-Secrets-Token` header set to AWS_SESSION_TOKEN (AWS documentation, "Use
    AWS Secrets Manager secrets in AWS Lambda functions"). `secret` may end in `#<key>` to take
    one key of a JSON secret. The extension may not answer during the first moments of an
    instance: a refused connection is tried again EXTENSION_TRIES times."""
    secret_id, _, key = secret.partition("#")
    port = env.get(EXTENSION_PORT_ENV) or EXTENSION_DEFAULT_PORT
    where = f"{variable}: secret {secret_id!r} from the Parameters and Secrets extension on localhost:{port}"
    url = f"http://localhost:{port}/secretsmanager/get?secretId={quote(secret_id, safe='')}"
    headers = {"X-Aws-Parameters-Secrets-Token": env.get("AWS_SESSION_TOKEN", "")}
    with httpx.Client(transport=transport, timeout=5.0, trust_env=False) as client:
        for attempt in range(EXTENSION_TRIES):
            try:
                response = client.get(url, headers=headers)
                break
            except httpx.TransportError as exc:
                if attempt == EXTENSION_TRIES - 1:
                    raise ConfigError(f"{where}: not reachable ({type(exc).__name__})") from None
                time.sleep(EXTENSION_RETRY_S)
    if response.status_code != 200:
        raise ConfigError(f"{where}: answered {response.status_code}")
    try:
        value = orjson.loads(response.content)["SecretString"]
        if key:
            value = orjson.loads(value)[key]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        holding = f" holding JSON with {key!r}" if key else ""
        raise ConfigError(f"{where}: expected a SecretString{holding}") from None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: the secret is empty or not a string")
    return value
