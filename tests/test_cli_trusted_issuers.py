"""``issuer trusted-issuers add|list|remove`` and ``issuer clients create
--federated-credential``, run as a user runs them (``tests.test_cli.issuer``)."""

from __future__ import annotations

import json

from tests.test_cli import issuer


def test_trusted_issuers_add_list_remove_and_a_secretless_client(database_url, tmp_path):
    def cli(*args: str):
        return issuer(*args, database_url=database_url, cwd=tmp_path)

    assert cli("tenants", "create", "acme").returncode == 0
    added = cli("trusted-issuers", "add", "--tenant", "acme", "--issuer",
                "https://oidc.cluster.example", "--alg", "RS256", "--max-token-age", "600",
                "--json")
    assert added.returncode == 0, added.stderr
    trusted = json.loads(added.stdout)
    assert (trusted["issuer"], trusted["allowed_algorithms"], trusted["max_token_age"],
            trusted["jwks_uri"]) == ("https://oidc.cluster.example", ["RS256"], 600, None)
    twice = cli("trusted-issuers", "add", "--tenant", "acme", "--issuer",
                "https://oidc.cluster.example")
    assert twice.returncode == 1 and "trusts that issuer already" in twice.stderr

    created = cli("clients", "create", "--tenant", "acme", "--scope", "orders:read",
                  "--federated-credential", trusted["id"],
                  "system:serviceaccount:billing:invoicer", "--json")
    assert created.returncode == 0, created.stderr
    client = json.loads(created.stdout)
    assert client["client_secret"] is None
    assert client["auth_methods"] == ["federated_jwt"]
    assert client["federated_credentials"] == [{
        "trusted_issuer_id": trusted["id"], "subject": "system:serviceaccount:billing:invoicer",
        "audience": None}]

    listed = cli("trusted-issuers", "list", "--tenant", "acme", "--json")
    assert [entry["id"] for entry in json.loads(listed.stdout)] == [trusted["id"]]
    assert cli("trusted-issuers", "remove", trusted["id"]).returncode == 0
    assert json.loads(cli("trusted-issuers", "list", "--json").stdout) == []
    gone = cli("trusted-issuers", "remove", trusted["id"])
    assert gone.returncode == 1 and "unknown trusted issuer" in gone.stderr


def test_a_federated_credential_naming_an_unknown_issuer_is_refused(database_url, tmp_path):
    issuer("tenants", "create", "acme", database_url=database_url, cwd=tmp_path)
    result = issuer("clients", "create", "--tenant", "acme", "--federated-credential",
                    "00000000-0000-0000-0000-000000000000", "sub",
                    database_url=database_url, cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown trusted issuer" in result.stderr
