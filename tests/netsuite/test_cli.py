"""``issuer netsuite create|key-pair|certificate|rotate|confirm|verify``, run as a user runs
it (subprocesses), against the simulator on a loopback socket."""

from __future__ import annotations

import json

from cryptography import x509

from tests.netsuite.conftest import ACCOUNT
from tests.test_cli import issuer

CONFIRMED = "Certificate rotation complete. Remove the old certificate from NetSuite.\n"


def test_the_whole_walk_key_pair_upload_certificate_id_verify_rotate(
        database_url, tmp_path, simulator, loopback):
    host = loopback.removeprefix("http://")

    def run(*args: str) -> str:
        result = issuer("netsuite", *args, database_url=database_url, cwd=tmp_path,
                        ISSUER_NETSUITE_ALLOWED_HOSTS=host)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert issuer("tenants", "create", "acme", database_url=database_url,
                  cwd=tmp_path).returncode == 0
    integration = simulator.add_integration()
    created = json.loads(run("create", "--tenant", "acme", "--name", "erp", "--account-id",
                             ACCOUNT, "--client-id", integration.client_id, "--scope",
                             "rest_webservices", "--algorithm", "ES256", "--token-url",
                             f"{loopback}/services/rest/auth/oauth2/v1/token", "--json"))
    connector = created["id"]
    assert created["token_url"].startswith(loopback)

    pem = run("key-pair", connector)
    assert x509.load_pem_x509_certificate(pem.encode())
    assert run("certificate", connector) == pem
    # A Certificate ID may start with "-": "--set-id=ID" and "--" keep it an argument.
    run("certificate", connector, f"--set-id={simulator.upload(pem, integration.client_id)}")
    verified = json.loads(run("verify", connector))
    assert verified["success"] is True and verified["expires_in"] == 3600
    [token] = simulator.tokens
    assert verified["token_preview"] == f"Bearer {token[:20]}..."

    out = tmp_path / "new.pem"
    run("rotate", connector, "--out", str(out))
    assert run("confirm", connector, "--", simulator.upload(out.read_text(),
                                                            integration.client_id)) == CONFIRMED
    assert run("certificate", connector) == out.read_text()
    assert json.loads(run("verify", connector))["success"] is True
    assert simulator.granted == 2


def test_errors_are_one_line_with_a_non_zero_exit(database_url, tmp_path):
    def run(*args: str):
        return issuer("netsuite", *args, database_url=database_url, cwd=tmp_path)

    missing = run("key-pair", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1
    assert missing.stderr == ("issuer: error: no NetSuite connector "
                              "00000000-0000-0000-0000-000000000000\n")
    assert issuer("tenants", "create", "acme", database_url=database_url,
                  cwd=tmp_path).returncode == 0
    bad = run("create", "--tenant", "acme", "--name", "x", "--account-id", "1234567.evil.com",
              "--client-id", "c", "--scope", "restlets")
    assert bad.returncode == 1 and "account id" in bad.stderr and "Traceback" not in bad.stderr
    created = run("create", "--tenant", "acme", "--name", "x", "--account-id", "1234567",
                  "--client-id", "c", "--scope", "restlets", "--algorithm", "ES256")
    connector = created.stdout.strip()
    assert run("confirm", connector, "abc").stderr == "issuer: error: No rotation in progress\n"
    unverified = run("verify", connector)
    assert unverified.returncode == 1 and json.loads(unverified.stdout)["success"] is False
