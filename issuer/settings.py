"""Settings: the one place the environment is read.

``Settings.from_env()`` reads ``os.environ`` (and a ``.env`` file when present),
checks every value and raises :class:`SettingsError` with a one-line message that
names the variable. Nothing else in the code base reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from starlette.config import Config

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./issuer.db"
SIGNING_ALGS = ("RS256", "ES256", "EdDSA")
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")
_Getter = Callable[[str], "str | None"]
_RATE = re.compile(r"^\s*\d+\s*/\s*(second|minute|hour|day)\s*$")


class SettingsError(Exception):
    """A setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    issuer_url: str = "http://127.0.0.1:8000"
    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    redis_key_prefix: str = "issuer:"
    # Secret fields never print: repr=False.
    encryption_master_key: bytes | None = field(default=None, repr=False)
    encryption_master_key_previous: bytes | None = field(default=None, repr=False)
    env: str = "development"
    token_ttl: int = 3600
    signing_alg: str = "RS256"
    rsa_key_size: int = 2048
    default_audience: str | None = None
    rate_limiting: bool = True
    rate_limit: str = "1200/minute"
    failed_auth_rate_limit: str = "20/minute"
    admin_rate_limit: str = "600/minute"
    rate_limit_fail: str = "open"
    trusted_proxies: tuple[str, ...] = ()
    #: Networks a tenant's jwks_uri or SFTP host may resolve into besides public
    #: addresses (issuer.outbound); empty = public addresses only.
    outbound_allowed_networks: tuple[str, ...] = ()
    audit_retention_days: int = 365
    key_rotation_days: int = 90
    netsuite_allowed_hosts: tuple[str, ...] = ()
    client_cache_ttl: float = 5.0
    #: Seconds a request may wait for the store in total (and each database call, the
    #: wait for a pooled connection, a connect); past it the answer is 503.
    store_timeout: float = 5.0
    #: Writes the group writer holds per process; when full, a write is refused at once.
    store_max_pending_writes: int = 4096
    #: Registers the MOCK ERP connector (tests and demos; refused in production).
    erp_mock_connector: bool = False
    #: The only directory tree the DROPZONE_JSON_V1 connector's filesystem mode may
    #: write to; None = filesystem mode refused (an org never writes elsewhere on the host).
    erp_dropzone_root: Path | None = None
    #: ``issuer serve``'s connection limits (issuer.serving), per worker process:
    #: seconds a connection has to send a complete request head, from connecting
    #: or from its previous response (so also how long a keep-alive connection
    #: may sit idle); seconds the body then has to arrive in full (else 408);
    #: connections held open at once (more wait in the kernel's accept queue).
    http_header_timeout: float = 30.0
    http_body_timeout: float = 30.0
    http_max_connections: int = 1000
    #: The platform's name: NetSuite certificates' subject CN is "<name> - Tenant <account>".
    platform_name: str = "m2m-issuer"
    #: Subject O and C of NetSuite certificates (O defaults to the platform name; no C).
    netsuite_cert_organization: str | None = None
    netsuite_cert_country: str | None = None
    #: RFC 9449 DPoP at the token endpoint: seconds a proof's ``iat`` may lie in the
    #: past, and ahead of this server's clock; whether proofs must carry a server
    #: nonce (§8), and how many seconds one nonce slot lasts (the current and the
    #: previous slot's nonces are accepted).
    dpop_proof_max_age: int = 60
    dpop_proof_leeway: int = 5
    dpop_nonce: bool = False
    dpop_nonce_lifetime: int = 300

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def audience(self) -> str:
        """The audience a token carries when its client names none: never empty."""
        return self.default_audience or self.issuer_url

    @property
    def uses_default_sqlite(self) -> bool:
        return self.database_url == DEFAULT_DATABASE_URL

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        source = os.environ if environ is None else environ
        path = Path(env_file) if env_file is not None else None
        config = Config(path if path is not None and path.is_file() else None, environ=source)

        def get(name: str) -> str | None:
            value = config.get(name, default=None)
            return value.strip() if isinstance(value, str) and value.strip() else None

        issuer_url = (get("ISSUER_URL") or cls.issuer_url).rstrip("/")
        env = get("ISSUER_ENV") or cls.env
        settings = cls(
            issuer_url=_url("ISSUER_URL", issuer_url, production=env == "production"),
            database_url=get("ISSUER_DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=_redis_url(get("ISSUER_REDIS_URL")),
            redis_key_prefix=get("ISSUER_REDIS_KEY_PREFIX") or cls.redis_key_prefix,
            encryption_master_key=_master_key("ENCRYPTION_MASTER_KEY", get),
            encryption_master_key_previous=_master_key("ENCRYPTION_MASTER_KEY_PREVIOUS", get),
            env=_choice("ISSUER_ENV", env, ("development", "test", "production")),
            token_ttl=_int("ISSUER_TOKEN_TTL", get, cls.token_ttl, low=60, high=86400),
            signing_alg=_choice("ISSUER_SIGNING_ALG", get("ISSUER_SIGNING_ALG") or "RS256",
                                SIGNING_ALGS),
            rsa_key_size=int(_choice("ISSUER_RSA_KEY_SIZE", get("ISSUER_RSA_KEY_SIZE") or "2048",
                                     ("2048", "3072", "4096"))),
            default_audience=get("ISSUER_DEFAULT_AUDIENCE"),
            rate_limiting=_choice("ISSUER_RATE_LIMITING", get("ISSUER_RATE_LIMITING") or "on",
                                  ("on", "off")) == "on",
            rate_limit=_rate("ISSUER_RATE_LIMIT", get("ISSUER_RATE_LIMIT") or cls.rate_limit),
            failed_auth_rate_limit=_rate(
                "ISSUER_FAILED_AUTH_RATE_LIMIT",
                get("ISSUER_FAILED_AUTH_RATE_LIMIT") or cls.failed_auth_rate_limit),
            admin_rate_limit=_rate("ISSUER_ADMIN_RATE_LIMIT",
                                   get("ISSUER_ADMIN_RATE_LIMIT") or cls.admin_rate_limit),
            rate_limit_fail=_choice("ISSUER_RATE_LIMIT_FAIL",
                                    get("ISSUER_RATE_LIMIT_FAIL") or "open", ("open", "closed")),
            trusted_proxies=_networks("ISSUER_TRUSTED_PROXIES",
                                      _list(get("ISSUER_TRUSTED_PROXIES"))),
            outbound_allowed_networks=_networks(
                "ISSUER_OUTBOUND_ALLOWED_NETWORKS", _list(get("ISSUER_OUTBOUND_ALLOWED_NETWORKS"))),
            audit_retention_days=_int("ISSUER_AUDIT_RETENTION_DAYS", get,
                                      cls.audit_retention_days, low=1, high=36500),
            key_rotation_days=_int("ISSUER_KEY_ROTATION_DAYS", get, cls.key_rotation_days,
                                   low=1, high=3650),
            netsuite_allowed_hosts=_list(get("ISSUER_NETSUITE_ALLOWED_HOSTS")),
            store_timeout=_seconds("ISSUER_STORE_TIMEOUT", get, cls.store_timeout,
                                   low=0.1, high=300.0),
            store_max_pending_writes=_int("ISSUER_STORE_MAX_PENDING_WRITES", get,
                                          cls.store_max_pending_writes, low=16, high=1_000_000),
            erp_mock_connector=_bool("ISSUER_ERP_MOCK_CONNECTOR",
                                     get("ISSUER_ERP_MOCK_CONNECTOR")),
            erp_dropzone_root=_directory("ISSUER_ERP_DROPZONE_ROOT",
                                         get("ISSUER_ERP_DROPZONE_ROOT")),
            http_header_timeout=_seconds("ISSUER_HTTP_HEADER_TIMEOUT", get,
                                         cls.http_header_timeout, low=0.1, high=60.0),
            http_body_timeout=_seconds("ISSUER_HTTP_BODY_TIMEOUT", get, cls.http_body_timeout,
                                       low=0.1, high=600.0),
            http_max_connections=_int("ISSUER_HTTP_MAX_CONNECTIONS", get,
                                      cls.http_max_connections, low=1, high=100_000),
            platform_name=_text("ISSUER_PLATFORM_NAME", get("ISSUER_PLATFORM_NAME")
                                or cls.platform_name),
            netsuite_cert_organization=_optional_text("ISSUER_NETSUITE_CERT_ORGANIZATION",
                                                      get("ISSUER_NETSUITE_CERT_ORGANIZATION")),
            netsuite_cert_country=_country("ISSUER_NETSUITE_CERT_COUNTRY",
                                           get("ISSUER_NETSUITE_CERT_COUNTRY")),
            dpop_proof_max_age=_int("ISSUER_DPOP_PROOF_MAX_AGE", get, cls.dpop_proof_max_age,
                                    low=5, high=600),
            dpop_proof_leeway=_int("ISSUER_DPOP_PROOF_LEEWAY", get, cls.dpop_proof_leeway,
                                   low=0, high=60),
            dpop_nonce=_bool("ISSUER_DPOP_NONCE", get("ISSUER_DPOP_NONCE")),
            dpop_nonce_lifetime=_int("ISSUER_DPOP_NONCE_LIFETIME", get,
                                     cls.dpop_nonce_lifetime, low=10, high=3600),
        )
        if settings.production and settings.encryption_master_key is None:
            raise SettingsError("ENCRYPTION_MASTER_KEY is required when ISSUER_ENV=production")
        if settings.production and settings.erp_mock_connector:
            raise SettingsError("ISSUER_ERP_MOCK_CONNECTOR must not be enabled when "
                                "ISSUER_ENV=production")
        return settings


def _master_key(name: str, get: _Getter) -> bytes | None:
    value = get(name)
    if value is None:
        return None
    if not _HEX_KEY.match(value):
        raise SettingsError(f"{name} must be 64 hexadecimal characters (32 bytes)")
    return bytes.fromhex(value)


def _url(name: str, value: str, *, production: bool) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name} must be an absolute http(s) URL, got {value!r}")
    if parts.query or parts.fragment:
        # RFC 8414 §2: the issuer identifier has no query or fragment components.
        raise SettingsError(f"{name} must not have a query or fragment")
    if production and parts.scheme != "https":
        raise SettingsError(f"{name} must use https when ISSUER_ENV=production")
    return value


def _int(name: str, get: _Getter, default: int, *, low: int, high: int) -> int:
    raw = get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _seconds(name: str, get: _Getter, default: float, *, low: float, high: float) -> float:
    raw = get(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not low <= value <= high:  # also refuses nan
        raise SettingsError(f"{name} must be between {low:g} and {high:g} seconds, got {raw}")
    return value


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SettingsError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _rate(name: str, value: str) -> str:
    if not _RATE.match(value):
        raise SettingsError(f"{name} must look like '1200/minute', got {value!r}")
    return value.replace(" ", "")


def _redis_url(value: str | None) -> str | None:
    if value is not None and urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise SettingsError(f"ISSUER_REDIS_URL must be a redis://, rediss:// or unix:// URL, "
                            f"got {urlsplit(value).scheme + '://...'!r}")
    return value


def _networks(name: str, values: tuple[str, ...]) -> tuple[str, ...]:
    """Addresses or CIDR networks (``10.0.0.0/8``)."""
    for value in values:
        try:
            ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise SettingsError(f"{name} must list IP addresses or CIDR networks, "
                                f"got {value!r}") from None
    return values


def _bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.lower()
    if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise SettingsError(f"{name} must be true or false, got {value!r}")
    return lowered in ("true", "1", "yes")


def _directory(name: str, value: str | None) -> Path | None:
    if value is None:
        return None
    path = Path(value)
    if not path.is_absolute() or not path.is_dir():
        raise SettingsError(f"{name} must be the absolute path of an existing directory, "
                            f"got {value!r}")
    return path.resolve()


def _list(value: str | None) -> tuple[str, ...]:
    if not value:
        return ()
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _text(name: str, value: str) -> str:
    """A short line of text for a certificate subject (X.520: at most 64 characters)."""
    if len(value) > 64 or not value.isprintable():
        raise SettingsError(f"{name} must be at most 64 printable characters")
    return value


def _optional_text(name: str, value: str | None) -> str | None:
    return None if value is None else _text(name, value)


def _country(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not re.match(r"^[A-Z]{2}$", value):
        raise SettingsError(f"{name} must be a two-letter ISO 3166 country code, got {value!r}")
    return value
