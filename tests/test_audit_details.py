"""Audit details never carry a secret-looking key, however often a key was checked."""

from __future__ import annotations

import pytest

from issuer.audit import AuditEvent, audit_row


@pytest.mark.parametrize("key", ["client_secret", "access_token", "secret_hash", "Password",
                                 "assertion", "private_key"])
def test_a_secret_looking_key_is_refused_every_time(key):
    for _ in range(2):
        with pytest.raises(ValueError, match="must not carry"):
            audit_row(AuditEvent.M2M_TOKEN_GENERATED, at=0.0, details={"jti": "j", key: "x"})


def test_allowed_keys_pass_every_time_and_the_details_are_a_copy():
    details = {"jti": "j", "secret_used": "current", "token_type": "Bearer", "key_kind": "rsa"}
    for _ in range(2):
        row = audit_row(AuditEvent.M2M_TOKEN_GENERATED, at=0.0, details=details)
        assert row["details"] == details and row["details"] is not details
