"""Settings from the environment: defaults, and one clear line per mistake."""

from __future__ import annotations

import pytest

from issuer.settings import DEFAULT_DATABASE_URL, Settings, SettingsError


def test_defaults_need_no_environment():
    settings = Settings.from_env({}, env_file=None)
    assert settings.issuer_url == "http://127.0.0.1:8000"
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.token_ttl == 3600
    assert settings.signing_alg == "RS256"
    assert settings.rate_limit == "1200/minute"
    assert settings.audience == settings.issuer_url


def test_store_bounds_default_to_five_seconds_and_can_be_changed():
    defaults = Settings.from_env({}, env_file=None)
    assert (defaults.store_timeout, defaults.store_max_pending_writes) == (5.0, 4096)
    changed = Settings.from_env({"ISSUER_STORE_TIMEOUT": "2.5",
                                 "ISSUER_STORE_MAX_PENDING_WRITES": "500"}, env_file=None)
    assert (changed.store_timeout, changed.store_max_pending_writes) == (2.5, 500)


def test_secrets_never_print():
    settings = Settings.from_env({"ENCRYPTION_MASTER_KEY": "ab" * 32}, env_file=None)
    assert "abab" not in repr(settings)
    assert settings.encryption_master_key == bytes.fromhex("ab" * 32)


@pytest.mark.parametrize(("environ", "message"), [
    ({"ENCRYPTION_MASTER_KEY": "zz"}, "ENCRYPTION_MASTER_KEY must be 64 hexadecimal characters"),
    ({"ENCRYPTION_MASTER_KEY_PREVIOUS": "12"}, "ENCRYPTION_MASTER_KEY_PREVIOUS must be 64"),
    ({"ISSUER_URL": "issuer.example.com"}, "ISSUER_URL must be an absolute http(s) URL"),
    ({"ISSUER_URL": "https://a.example.com/?x=1"}, "ISSUER_URL must not have a query"),
    ({"ISSUER_TOKEN_TTL": "soon"}, "ISSUER_TOKEN_TTL must be an integer"),
    ({"ISSUER_TOKEN_TTL": "5"}, "ISSUER_TOKEN_TTL must be between 60 and 86400"),
    ({"ISSUER_SIGNING_ALG": "HS256"}, "ISSUER_SIGNING_ALG must be one of RS256, ES256, EdDSA"),
    ({"ISSUER_RATE_LIMIT": "lots"}, "ISSUER_RATE_LIMIT must look like '1200/minute'"),
    ({"ISSUER_RATE_LIMIT_FAIL": "maybe"}, "ISSUER_RATE_LIMIT_FAIL must be one of open, closed"),
    ({"ISSUER_HTTP_HEADER_TIMEOUT": "soon"}, "ISSUER_HTTP_HEADER_TIMEOUT must be a number of "
                                             "seconds"),
    ({"ISSUER_HTTP_HEADER_TIMEOUT": "0"}, "ISSUER_HTTP_HEADER_TIMEOUT must be between 0.1 and 60"),
    ({"ISSUER_HTTP_BODY_TIMEOUT": "nan"}, "ISSUER_HTTP_BODY_TIMEOUT must be between 0.1 and 600"),
    ({"ISSUER_HTTP_MAX_CONNECTIONS": "0"}, "ISSUER_HTTP_MAX_CONNECTIONS must be between 1 and"),
    ({"ISSUER_STORE_TIMEOUT": "soon"}, "ISSUER_STORE_TIMEOUT must be a number of seconds"),
    ({"ISSUER_STORE_TIMEOUT": "0"}, "ISSUER_STORE_TIMEOUT must be between 0.1 and 300 seconds"),
    ({"ISSUER_STORE_TIMEOUT": "nan"}, "ISSUER_STORE_TIMEOUT must be between 0.1 and 300"),
    ({"ISSUER_STORE_MAX_PENDING_WRITES": "8"},
     "ISSUER_STORE_MAX_PENDING_WRITES must be between 16 and 1000000"),
    ({"ISSUER_ENV": "production", "ISSUER_URL": "https://id.example.com"},
     "ENCRYPTION_MASTER_KEY is required when ISSUER_ENV=production"),
    ({"ISSUER_ENV": "production", "ENCRYPTION_MASTER_KEY": "00" * 32},
     "ISSUER_URL must use https when ISSUER_ENV=production"),
])
def test_a_bad_value_names_its_variable(environ, message):
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(environ, env_file=None)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_connection_limits_default_to_30_seconds_and_are_settable():
    assert (Settings().http_header_timeout, Settings().http_body_timeout) == (30.0, 30.0)
    settings = Settings.from_env({"ISSUER_HTTP_HEADER_TIMEOUT": "0.5",
                                  "ISSUER_HTTP_BODY_TIMEOUT": "2",
                                  "ISSUER_HTTP_MAX_CONNECTIONS": "64"}, env_file=None)
    assert (settings.http_header_timeout, settings.http_body_timeout,
            settings.http_max_connections) == (0.5, 2.0, 64)


def test_dotenv_file_is_read_and_the_environment_wins(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("ISSUER_TOKEN_TTL=600\nISSUER_SIGNING_ALG=ES256\n")
    settings = Settings.from_env({"ISSUER_SIGNING_ALG": "EdDSA"}, env_file=env_file)
    assert settings.token_ttl == 600
    assert settings.signing_alg == "EdDSA"


def test_netsuite_certificate_subject_settings():
    settings = Settings.from_env({"ISSUER_PLATFORM_NAME": "Acme iPaaS",
                                  "ISSUER_NETSUITE_CERT_ORGANIZATION": "Acme Inc",
                                  "ISSUER_NETSUITE_CERT_COUNTRY": "DE",
                                  "ISSUER_NETSUITE_ALLOWED_HOSTS": "127.0.0.1:8080, localhost"},
                                 env_file=None)
    assert (settings.platform_name, settings.netsuite_cert_organization,
            settings.netsuite_cert_country) == ("Acme iPaaS", "Acme Inc", "DE")
    assert settings.netsuite_allowed_hosts == ("127.0.0.1:8080", "localhost")
    defaults = Settings.from_env({}, env_file=None)
    assert (defaults.platform_name, defaults.netsuite_cert_country) == ("m2m-issuer", None)
    for environ, message in [({"ISSUER_NETSUITE_CERT_COUNTRY": "Germany"},
                              "ISSUER_NETSUITE_CERT_COUNTRY must be a two-letter"),
                             ({"ISSUER_PLATFORM_NAME": "x" * 65},
                              "ISSUER_PLATFORM_NAME must be at most 64")]:
        with pytest.raises(SettingsError, match=message):
            Settings.from_env(environ, env_file=None)
