"""Weak and public credentials are refused, insecure storage settings warned about, credentials
never printed, and secrets read from the Parameters and Secrets extension (credentials.py)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from local import emulator
from telhawk_ingest.config import load_settings
from telhawk_ingest.credentials import EMULATOR_ENV, PUBLIC_TOKENS
from telhawk_ingest.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SECRET_TOKEN = "f3b0c442-98fc-4c14-9afb-a4c8996fb924"
PASSWORD = "s3cr3t-Passw0rd"


def test_the_emulators_public_tokens_are_refused_outside_it_naming_each_by_name():
    with pytest.raises(ConfigError) as caught:
        load_settings(emulator.DEFAULT_CONFIG, env={})

    message = str(caught.value)
    for name in ("local-dev", "local-ack", "local-admin"):
        assert f"named {name!r} is one of the local emulator's public tokens" in message
    assert not any(token in message for token in PUBLIC_TOKENS)


def test_the_emulators_public_tokens_work_where_the_emulator_marked_the_process():
    settings = load_settings(emulator.DEFAULT_CONFIG, env={EMULATOR_ENV: "1"})
    assert {t.token for t in settings.hec.tokens} <= PUBLIC_TOKENS


def test_a_public_token_given_through_the_environment_is_refused_too():
    with pytest.raises(ConfigError, match="'ops' is one of the local emulator's public tokens"):
        load_settings(env={"INGEST_OPERATOR_TOKENS": "ops:local-operator-token-change-me"})


def test_every_token_in_the_local_config_is_known_as_public():
    config = yaml.safe_load(emulator.DEFAULT_CONFIG.read_text())
    tokens = {t["token"] for section in ("hec", "operator") for t in config[section]["tokens"]}
    assert tokens == PUBLIC_TOKENS


@pytest.mark.parametrize("token", ["x", "0123456789abcde"])
def test_a_hec_token_under_16_characters_is_refused_without_printing_it(token):
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"INGEST_HEC_TOKENS": f"firewalls:{token}"})

    assert f"'firewalls' is {len(token)} characters long; at least 16" in str(caught.value)
    assert f"{token}," not in str(caught.value) and f"'{token}'" not in str(caught.value)


def test_a_16_character_hec_token_is_accepted():
    assert load_settings(env={"INGEST_HEC_TOKENS": "fw:0123456789abcdef"}).hec.tokens[0].name == "fw"


def test_credentials_in_the_storage_url_move_out_of_it_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        settings = load_settings(env={"INGEST_OPENSEARCH_URL": f"https://admin:{PASSWORD}@search.internal:9200"})

    assert settings.core.url == "https://search.internal:9200"
    assert (settings.core.username, settings.core.password) == ("admin", PASSWORD)
    assert "core.url carries a user and password" in caplog.text
    assert PASSWORD not in caplog.text


@pytest.mark.parametrize(("env", "warning"), [
    ({"INGEST_OPENSEARCH_URL": "http://search:9200", "INGEST_CORE_USERNAME": "u",
      "INGEST_CORE_PASSWORD": PASSWORD}, "is plain http: the storage credentials cross the network"),
    ({"INGEST_OPENSEARCH_URL": "https://search:9200", "INGEST_CORE_VERIFY_TLS": "false"},
     "core.verify_tls is false"),
])
def test_insecure_storage_settings_warn_at_start_up(caplog, env, warning):
    with caplog.at_level(logging.WARNING):
        load_settings(env=env)
    assert warning in caplog.text and PASSWORD not in caplog.text


def test_secure_storage_settings_do_not_warn(caplog):
    with caplog.at_level(logging.WARNING):
        load_settings(env={"INGEST_OPENSEARCH_URL": "https://search:9200", "INGEST_CORE_USERNAME": "u",
                           "INGEST_CORE_PASSWORD": PASSWORD})
    assert "insecure" not in caplog.text


def test_a_bad_storage_url_is_reported_without_its_credentials():
    with pytest.raises(ConfigError) as caught:
        load_settings(env={"INGEST_OPENSEARCH_URL": f"ftp://admin:{PASSWORD}@search"})
    assert "core.url" in str(caught.value) and PASSWORD not in str(caught.value)


def test_the_banner_prints_public_tokens_but_never_a_real_one_or_a_url_password(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"hec": {"tokens": [{"name": "prod", "token": SECRET_TOKEN}]},
                                      "operator": {"tokens": [{"name": "soc", "token": "o" * 32}]}}))
    settings = load_settings(config, env={"INGEST_OPENSEARCH_URL": f"https://admin:{PASSWORD}@search:9200"})
    template = ROOT / "template.yaml"

    text = emulator.banner("http://127.0.0.1:8088", template, emulator.read_functions(template), settings,
                           str(config))

    assert SECRET_TOKEN not in text and "o" * 32 not in text and PASSWORD not in text
    assert "(yours: not shown)  (prod)" in text and '"Authorization: Splunk $HEC_TOKEN"' in text
    assert "storage:  opensearch at https://search:9200" in text


# -- secrets from the Parameters and Secrets Lambda extension ----------------------------------------


class Extension:
    """A stub of the extension's localhost API: secrets by id, the requests it saw."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets
        self.requests: list[tuple[str, str | None]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                secret_id = parse_qs(url.query).get("secretId", [""])[0]
                stub.requests.append((secret_id, self.headers.get("X-Aws-Parameters-Secrets-Token")))
                if url.path != "/secretsmanager/get" or secret_id not in stub.secrets:
                    self.send_response(400)
                    self.end_headers()
                    return
                body = json.dumps({"Name": secret_id, "SecretString": stub.secrets[secret_id]}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def extension() -> Iterator[Extension]:
    stub = Extension({
        "arn:hec": f"firewalls:{SECRET_TOKEN}",
        "arn:ops": "soc:" + "o" * 32,
        "arn:ops-roles": "soc:" + "o" * 32 + ",dash:" + "d" * 32 + ":read",
        "arn:storage": json.dumps({"username": "ingest", "password": PASSWORD}),
        "arn:scoped": json.dumps([{"name": "net", "token": SECRET_TOKEN, "allowed_indexes": ["network"],
                                   "default_index": "network"}]),
    })
    yield stub
    stub.server.shutdown()


def lambda_env(extension: Extension, **variables: str) -> dict[str, str]:
    return {"PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(extension.port), "AWS_SESSION_TOKEN": "session-1",
            **variables}


def test_tokens_and_storage_credentials_come_from_the_extension(extension):
    settings = load_settings(env=lambda_env(
        extension, INGEST_HEC_TOKENS_SECRET="arn:hec", INGEST_OPERATOR_TOKENS_SECRET="arn:ops",
        INGEST_CORE_USERNAME_SECRET="arn:storage#username",
        INGEST_CORE_PASSWORD_SECRET="arn:storage#password"))

    assert [(t.name, t.token) for t in settings.hec.tokens] == [("firewalls", SECRET_TOKEN)]
    assert settings.operator.tokens[0].name == "soc"
    assert (settings.core.username, settings.core.password) == ("ingest", PASSWORD)
    assert {header for _, header in extension.requests} == {"session-1"}


def test_a_secret_may_hold_fully_configured_tokens(extension):
    settings = load_settings(env=lambda_env(extension, INGEST_HEC_TOKENS_SECRET="arn:scoped"))
    assert settings.hec.tokens[0].allowed_indexes == ["network"]


def test_an_unreadable_secret_stops_start_up_naming_the_variable_and_secret_never_a_value(extension):
    with pytest.raises(ConfigError) as caught:
        load_settings(env=lambda_env(extension, INGEST_HEC_TOKENS_SECRET="arn:missing"))
    assert "INGEST_HEC_TOKENS_SECRET: secret 'arn:missing'" in str(caught.value)
    assert "answered 400" in str(caught.value)


# -- operator token roles from the environment (and the secret, which holds the same text) ------------

def test_operator_tokens_take_a_role_as_a_third_part_admin_by_default():
    settings = load_settings(env={"INGEST_OPERATOR_TOKENS":
                                  "alice:a1b2c3d4e5f6a7b8c9d0,bob:b1b2c3d4e5f6a7b8c9d0:read,"
                                  "carol:c1b2c3d4e5f6a7b8c9d0:admin"})
    assert [(t.name, t.token, t.role) for t in settings.operator.tokens] == [
        ("alice", "a1b2c3d4e5f6a7b8c9d0", "admin"), ("bob", "b1b2c3d4e5f6a7b8c9d0", "read"),
        ("carol", "c1b2c3d4e5f6a7b8c9d0", "admin")]


@pytest.mark.parametrize("entry", ["bob:b1b2c3d4e5f6a7b8c9d0:owner", "bob:b1b2c3d4:e5f6a7b8c9d0",
                                   "bob:b1b2c3d4e5f6a7b8c9d0:read:admin", "bob::read"])
def test_an_operator_entry_whose_third_part_is_not_a_role_is_refused_without_quoting_the_token(entry):
    with pytest.raises(ConfigError) as err:
        load_settings(env={"INGEST_OPERATOR_TOKENS": entry})
    assert "INGEST_OPERATOR_TOKENS: entry 'bob'" in str(err.value) and "read or admin" in str(err.value)
    assert "b1b2c3d4" not in str(err.value) and "e5f6" not in str(err.value)


def test_the_list_form_takes_a_role_and_a_token_with_a_colon():
    settings = load_settings(env={"INGEST_OPERATOR_TOKENS":
                                  '[{name: bob, token: "b1b2c3d4:e5f6a7b8c9d0", role: read}]'})
    assert [(t.token, t.role) for t in settings.operator.tokens] == [("b1b2c3d4:e5f6a7b8c9d0", "read")]


def test_hec_tokens_keep_everything_after_the_first_colon_as_the_token():
    settings = load_settings(env={"INGEST_HEC_TOKENS": "app:11111111-2222-4333-8444-555555555555:x"})
    assert settings.hec.tokens[0].token == "11111111-2222-4333-8444-555555555555:x"


def test_a_secret_of_operator_tokens_may_give_their_roles(extension):
    settings = load_settings(env=lambda_env(extension, INGEST_OPERATOR_TOKENS_SECRET="arn:ops-roles"))
    assert [(t.name, t.token, t.role) for t in settings.operator.tokens] == [
        ("soc", "o" * 32, "admin"), ("dash", "d" * 32, "read")]


BLOCK_LIST = ("- {name: qs, token: 0123456789abcdef-qs, allow_query_string: true}\n"
              "- {name: fw, token: 0123456789abcdef-fw}\n")


@pytest.mark.parametrize("text", [BLOCK_LIST, "\n" + BLOCK_LIST,
                                  "- name: qs\n  token: 0123456789abcdef-qs\n  allow_query_string: true\n"
                                  "- name: fw\n  token: 0123456789abcdef-fw\n"])
def test_hec_tokens_as_a_block_style_yaml_list_are_read_as_a_list(text):
    tokens = load_settings(env={"INGEST_HEC_TOKENS": text}).hec.tokens

    assert [(t.name, t.token) for t in tokens] == [("qs", "0123456789abcdef-qs"),
                                                   ("fw", "0123456789abcdef-fw")]
    assert tokens[0].allow_query_string is True


def test_operator_tokens_as_a_block_style_yaml_list_keep_their_roles():
    settings = load_settings(env={"INGEST_OPERATOR_TOKENS": "- {name: bob, token: b1b2c3d4e5f6a7b8c9d0, "
                                                            "role: read}\n"})
    assert [(t.name, t.role) for t in settings.operator.tokens] == [("bob", "read")]


@pytest.mark.parametrize(("var", "text"), [
    ("INGEST_HEC_TOKENS", "- {name: qs, token: s3cr3t-0123456789abcdef\n"),  # a block list, broken YAML
    ("INGEST_HEC_TOKENS", "- s3cr3t-0123456789abcdef\n"),  # a list, but not of mappings
    ("INGEST_HEC_TOKENS", "name: qs\ntoken: s3cr3t-0123456789abcdef\n"),  # one mapping, not a list
    ("INGEST_OPERATOR_TOKENS", "ops: s3cr3t-0123456789abcdef"),  # a space after the colon
])
def test_a_token_list_that_is_neither_form_is_refused_naming_the_variable_not_the_token(var, text):
    with pytest.raises(ConfigError) as err:
        load_settings(env={var: text})

    assert str(err.value).startswith(f"{var}: expected") and "list of token mappings" in str(err.value)
    assert "s3cr3t" not in str(err.value)


@pytest.mark.parametrize(("text", "shown"), [
    ('"POST /services/collector/event?token=qs-secret-0123 HTTP/1.1" 200',
     '"POST /services/collector/event?token=*** HTTP/1.1" 200'),
    ("/x?channel=1&TOKEN=qs-secret-0123;access_token=qs-secret-0123&n=2",
     "/x?channel=1&TOKEN=***;access_token=***&n=2"),
    ("/x?tokens=2&token_name=qs", "/x?tokens=2&token_name=qs"),  # other parameters stay
    # Names are read percent-decoded by the server, so they are compared that way.
    ('"POST /services/collector/event?%74oken=qs-secret-0123 HTTP/1.1" 200',
     '"POST /services/collector/event?%74oken=*** HTTP/1.1" 200'),
    ("/x?access%5FTOKEN=qs-secret-0123&to%6Ben=qs-secret-0123", "/x?access%5FTOKEN=***&to%6Ben=***"),
])
def test_query_string_token_values_are_redacted(text, shown):
    from telhawk_ingest.credentials import redact_query_tokens

    assert redact_query_tokens(text) == shown
