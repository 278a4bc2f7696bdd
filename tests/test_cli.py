"""The ``issuer`` command line, run as a user runs it: ``issuer.cli.main`` with the
command's arguments, environment, working directory and output streams, in this
process (which spares each command an interpreter's start-up), and once as the
installed console script in a process of its own."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import jwt as pyjwt
import pytest

from issuer.cli import main
from issuer.store.db import create_engine
from issuer.store.migrate import current_revision, head_revision
from tests.conftest import PG_URL, TEST_MASTER_KEY, ServeProcess, run, store_independent

#: A command in this process owns its environment, directory and streams until it ends.
_ONE_COMMAND = threading.Lock()


def _environment(database_url: str, **env: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items()
                   if not k.startswith(("ISSUER_", "ENCRYPTION_"))}
    environment.update({"ISSUER_DATABASE_URL": database_url,
                        "ENCRYPTION_MASTER_KEY": TEST_MASTER_KEY.hex(), **env})
    return environment


def issuer(*args: str, database_url: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """``issuer ARGS`` against ``database_url`` with the test master key (``env`` adds or
    overrides variables), in this process (see :func:`run_in_process`)."""
    return run_in_process(lambda: main(list(args)), ["issuer", *args],
                          database_url=database_url, cwd=cwd, **env)


def run_in_process(entry: Callable[[], int], argv: list[str], *, database_url: str, cwd: Path,
                   **env: str) -> subprocess.CompletedProcess:
    """A console script's function ``entry`` run as its process would be, with
    ``sys.argv``, the environment and the working directory set, and ended as that
    process would end: exit status, stdout, stderr (a crash is exit status 1 with its
    traceback on stderr). It runs on a thread of its own, because a command runs its
    own event loop and the caller may be in one."""
    environment = _environment(database_url, **env)
    ended: list[subprocess.CompletedProcess] = []

    def command() -> None:
        stdout, stderr = io.StringIO(), io.StringIO()
        with _ONE_COMMAND, _process_state(argv, environment, cwd), redirect_stdout(stdout), \
                redirect_stderr(stderr):
            try:
                status = entry()
            except SystemExit as exit_:  # e.g. argparse's usage errors
                status = _exit_status(exit_.code)
            except Exception:
                traceback.print_exc()
                status = 1
        ended.append(subprocess.CompletedProcess(argv, status, stdout.getvalue(),
                                                 stderr.getvalue()))

    thread = threading.Thread(target=command, name=argv[0])
    thread.start()
    thread.join(timeout=120)
    assert ended, f"{' '.join(argv)} did not end within 120 s"
    return ended[0]


def _exit_status(code: object) -> int:
    """The exit status the interpreter gives ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


@contextmanager
def _process_state(argv: list[str], environment: dict[str, str], cwd: Path) -> Iterator[None]:
    saved_argv, saved_environment, directory = sys.argv, dict(os.environ), os.getcwd()
    sys.argv = argv
    os.environ.clear()
    os.environ.update(environment)
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(directory)
        os.environ.clear()
        os.environ.update(saved_environment)
        sys.argv = saved_argv


def test_the_installed_issuer_command_runs_as_a_process(tmp_path):
    """The console script ``pip install`` made, in a process of its own: the one
    test that pays for an interpreter's start-up."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    migrated = subprocess.run(
        [str(Path(sys.executable).with_name("issuer")), "migrate"], capture_output=True,
        text=True, env=_environment(url), cwd=tmp_path, timeout=120, check=False)
    assert migrated.returncode == 0, migrated.stderr
    assert migrated.stdout.splitlines()[0] == f"database at revision {head_revision()}"
    assert "client_secret: m2ms_" in migrated.stdout


def test_clients_create_json_then_token_round_trip(live_server, database_url, tmp_path):
    tenant = issuer("tenants", "create", "acme", "--json", database_url=database_url,
                    cwd=tmp_path)
    assert tenant.returncode == 0, tenant.stderr
    tenant_id = json.loads(tenant.stdout)["id"]
    created = issuer("clients", "create", "--tenant", "acme", "--scope", "orders:read orders:*",
                     "--audience", "https://api.example.com", "--ttl", "600", "--json",
                     database_url=database_url, cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    client = json.loads(created.stdout)
    assert client["client_id"].startswith("m2m_")
    assert client["client_secret"].startswith("m2ms_")
    assert client["tenant_id"] == tenant_id
    assert "secret_hash" not in client

    for method in ("client_secret_basic", "client_secret_post"):
        fetched = issuer("token", "--client-id", client["client_id"], "--client-secret",
                         client["client_secret"], "--scope", "orders:write",
                         "--auth-method", method, "--url", live_server,
                         database_url=database_url, cwd=tmp_path)
        assert fetched.returncode == 0, fetched.stderr + fetched.stdout
        response = json.loads(fetched.stdout)
        assert response["scope"] == "orders:write"
        assert response["expires_in"] == 600
        claims = pyjwt.decode(response["access_token"], options={"verify_signature": False})
        assert claims["tenant_id"] == tenant_id
        assert claims["aud"] == "https://api.example.com"

    shown = issuer("clients", "show", client["client_id"], "--json",
                   database_url=database_url, cwd=tmp_path)
    assert json.loads(shown.stdout)["allowed_scopes"] == ["orders:read", "orders:*"]
    assert client["client_secret"] not in shown.stdout
    listed = issuer("clients", "list", "--tenant", "acme", "--json", database_url=database_url,
                    cwd=tmp_path)
    assert [c["client_id"] for c in json.loads(listed.stdout)] == [client["client_id"]]


def test_token_with_a_wrong_secret_exits_non_zero_with_the_error(live_server, database_url,
                                                                 tmp_path):
    fetched = issuer("token", "--client-id", "m2m_x", "--client-secret", "nope", "--url",
                     live_server, database_url=database_url, cwd=tmp_path)
    assert fetched.returncode == 1
    assert json.loads(fetched.stdout)["error"] == "invalid_client"


@store_independent
def test_a_malformed_master_key_is_a_one_line_error_naming_the_variable(database_url, tmp_path):
    for command in (["keys", "list"], ["serve", "--port", "1"]):
        result = issuer(*command, database_url=database_url, cwd=tmp_path,
                        ENCRYPTION_MASTER_KEY="not-hex")
        assert result.returncode == 2
        assert result.stderr == ("issuer: configuration error: ENCRYPTION_MASTER_KEY must be 64 "
                                 "hexadecimal characters (32 bytes)\n")
        assert "Traceback" not in result.stderr


def test_tenants_list_and_keys_list(database_url, tmp_path):
    issuer("tenants", "create", "globex", database_url=database_url, cwd=tmp_path)
    tenants = issuer("tenants", "list", "--json", database_url=database_url, cwd=tmp_path)
    assert [t["name"] for t in json.loads(tenants.stdout)] == ["globex"]
    keys = issuer("keys", "list", "--json", database_url=database_url, cwd=tmp_path)
    listed = json.loads(keys.stdout)
    assert [(k["alg"], k["state"]) for k in listed] == [("RS256", "active"), ("RS256", "next")]
    assert "private" not in keys.stdout


def test_creating_a_client_for_an_unknown_tenant_says_how_to_fix_it(database_url, tmp_path):
    result = issuer("clients", "create", "--tenant", "nope", "--scope", "a",
                    database_url=database_url, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("issuer: error: no tenant named 'nope'")


def test_invalid_client_input_is_refused_with_a_reason(database_url, tmp_path):
    issuer("tenants", "create", "acme", database_url=database_url, cwd=tmp_path)
    result = issuer("clients", "create", "--tenant", "acme", "--scope", "orders:*:read",
                    database_url=database_url, cwd=tmp_path)
    assert result.returncode == 1
    assert "wildcard" in result.stderr


def test_first_migrate_bootstraps_the_platform_admin_and_prints_it_once(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"
    first = issuer("migrate", database_url=url, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"database at revision {head_revision()}"
    assert "the secret is not shown again" in first.stdout
    client_id = next(line.split()[1] for line in lines if "client_id:" in line)
    secret = next(line.split()[1] for line in lines if "client_secret:" in line)
    assert secret.startswith("m2ms_")

    again = issuer("migrate", database_url=url, cwd=tmp_path)
    assert again.stdout.strip() == f"database at revision {head_revision()}"
    shown = json.loads(issuer("clients", "show", client_id, "--json", database_url=url,
                              cwd=tmp_path).stdout)
    assert shown["allowed_scopes"] == ["admin", "introspect"]
    assert secret not in again.stdout + shown.__repr__()
    tenants = json.loads(issuer("tenants", "list", "--json", database_url=url,
                                cwd=tmp_path).stdout)
    assert [t["name"] for t in tenants] == ["default"]


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["migrate"]])
def test_a_refused_configuration_never_touches_the_store(command, tmp_path):
    """A custom store without ENCRYPTION_MASTER_KEY: refused before anything is created
    or migrated -- one line, exit status 2."""
    store = tmp_path / "custom.db"
    result = issuer(*command, database_url=f"sqlite+aiosqlite:///{store}", cwd=tmp_path,
                    ENCRYPTION_MASTER_KEY="")
    assert result.returncode == 2
    assert result.stderr == ("issuer: configuration error: ENCRYPTION_MASTER_KEY is required "
                             "unless the store is the default SQLite file\n")
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # no store, no -wal, no key file


@pytest.mark.skipif(PG_URL is None, reason="needs ISSUER_TEST_DATABASE_URL")
def test_a_refused_configuration_leaves_a_postgresql_store_unmigrated(fresh_postgres, tmp_path):
    url = fresh_postgres()
    for command in (["serve", "--port", "0"], ["migrate"]):
        result = issuer(*command, database_url=url, cwd=tmp_path, ENCRYPTION_MASTER_KEY="")
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1
    assert run(_revision(url)) is None


async def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        return await current_revision(engine)
    finally:
        await engine.dispose()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_migrate_and_serve_create_the_sqlite_store_and_its_wal_files_0600(tmp_path):
    """The store holds encrypted signing keys and secret digests: like the master-key
    file, only its owner may read it -- and so its -wal and -shm files."""
    store = tmp_path / "issuer.db"
    url = f"sqlite+aiosqlite:///{store}"
    previous = os.umask(0o022)  # the usual umask: private whatever it is
    try:
        migrated = issuer("migrate", database_url=url, cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        assert _mode(store) == 0o600

        store.unlink()  # and `issuer serve` on a new store, its WAL files open while it runs
        server = ServeProcess(_environment(url), tmp_path)
    finally:
        os.umask(previous)
    try:
        files = [store, store.with_name("issuer.db-wal"), store.with_name("issuer.db-shm")]
        assert {path.name: _mode(path) for path in files} == {
            "issuer.db": 0o600, "issuer.db-wal": 0o600, "issuer.db-shm": 0o600}
    finally:
        server.stop()
