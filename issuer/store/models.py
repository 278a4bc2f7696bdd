"""SQLAlchemy 2 models. Alembic migrations are the only way the schema changes.

The core's tables. A connector defines its own (``connectors/*/tables.py``) on the same
:class:`Base`, hence the same MetaData: one schema, one migration history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC-aware ones")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}

    if TYPE_CHECKING:
        # Every model here maps one Table; DeclarativeBase declares the wider FromClause.
        __table__: ClassVar[Table]


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    #: The name as compared (``issuer.tenant_names.key``): look-alike names share it.
    name_key: Mapped[str] = mapped_column(String(400), index=True, unique=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    #: The bootstrap tenant: its ``admin`` clients are platform admins.
    platform: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    #: The kill switch: tokens of the tenant issued before it are inactive (set when
    #: its status changes; see ``issuer.registration``).
    tokens_valid_after: Mapped[datetime | None]


class Client(Base):
    __tablename__ = "clients"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # the client_id
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"),
                                           index=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str | None] = mapped_column(String(128))
    previous_secret_hash: Mapped[str | None] = mapped_column(String(128))
    previous_secret_expires_at: Mapped[datetime | None]
    allowed_scopes: Mapped[list[str]]
    default_scopes: Mapped[list[str] | None] = mapped_column(JSON)
    allowed_audiences: Mapped[list[str]]
    default_audience: Mapped[str | None] = mapped_column(String(2000))
    grant_types: Mapped[list[str]]
    auth_methods: Mapped[list[str]]
    token_ttl: Mapped[int | None]
    rate_limit: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # private_key_jwt (RFC 7523 §2.2): the client's public keys, inline or by URL.
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    jwks_uri: Mapped[str | None] = mapped_column(String(2000))
    # client_secret_jwt needs the secret itself as the HMAC key: kept encrypted
    # (issuer.crypto) beside the digest, only for clients allowed that method.
    secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    previous_secret_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: The kill switch: the client's tokens issued before it are inactive.
    tokens_valid_after: Mapped[datetime | None]
    #: RFC 9449 §5.2: the client's token requests must carry a DPoP proof.
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(Boolean, default=False,
                                                           server_default=false())
    #: federated_jwt: ``[{trusted_issuer_id, subject, audience}]`` (issuer.federation).
    federated_credentials: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class TrustedIssuer(Base):
    """An external token issuer a tenant trusts for its clients' federated credentials
    (a Kubernetes cluster, a CI system, a SPIFFE trust domain)."""

    __tablename__ = "trusted_issuers"
    __table_args__ = (UniqueConstraint("tenant_id", "issuer",
                                       name="uq_trusted_issuers_tenant_id_issuer"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="RESTRICT"),
                                           index=True)
    #: The external tokens' ``iss``, compared exactly.
    issuer: Mapped[str] = mapped_column(String(2000))
    #: None: discovered from ``{issuer}/.well-known/openid-configuration``.
    jwks_uri: Mapped[str | None] = mapped_column(String(2000))
    allowed_algorithms: Mapped[list[str]]
    max_token_age: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="active")
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ChangeStamp(Base):
    """One row whose ``version`` every client or tenant change bumps in its own
    transaction: on SQLite, how other processes learn that their cached clients
    are stale (``issuer.store.changes``)."""

    __tablename__ = "change_stamp"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class UsedAssertionJti(Base):
    """RFC 7523 §3: a client assertion's ``jti``, refused again until it expires."""

    __tablename__ = "used_assertion_jtis"
    __table_args__ = (Index("ix_used_assertion_jtis_expires_at", "expires_at"),)

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime]


class IssuedToken(Base):
    """Metadata of every issued access token -- never the token itself."""

    __tablename__ = "issued_tokens"
    __table_args__ = (
        Index("ix_issued_tokens_client_issued", "client_id", "issued_at"),
        Index("ix_issued_tokens_tenant_issued", "tenant_id", "issued_at"),
        Index("ix_issued_tokens_expires_at", "expires_at"),
    )

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[str] = mapped_column(String(36))
    scope: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[list[str]]
    kid: Mapped[str] = mapped_column(String(128))
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuditEventRow(Base):
    """Append-only audit log. Never a secret, a token or a hash in it."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_tenant_id_id", "tenant_id", "id"),
        Index("ix_audit_events_event_id", "event", "id"),
        Index("ix_audit_events_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    event: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(8))
    actor: Mapped[str | None] = mapped_column(String(64))
    tenant_id: Mapped[str | None] = mapped_column(String(36))
    client_id: Mapped[str | None] = mapped_column(String(64))
    source: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]]


class SigningKeyRow(Base):
    """A token-signing key; the private JWK is AES-256-GCM encrypted (issuer.crypto)."""

    __tablename__ = "signing_keys"
    __table_args__ = (
        # Exactly one active key per algorithm, enforced by the database.
        Index("uq_signing_keys_active_alg", "alg", unique=True,
              sqlite_where=text("state = 'active'"), postgresql_where=text("state = 'active'")),
    )

    kid: Mapped[str] = mapped_column(String(128), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]]
    private_jwk_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]
