"""DROPZONE_JSON_V1's filesystem mode keeps orgs apart: every path an org sends
resolves inside ``<root>/<org_id>/``, through HTTP on SQLite and PostgreSQL.

The attack table is every way found to name another org's folder (or anything
outside the org's own) as ``export_path``: ``..``, absolute paths, percent- and
Unicode look-alike encodings, NUL, and symbolic links placed inside the attacker's
own folder. Each is sent through every path that writes: create with
``test_on_save``, ``/test``, and a push (through a saved connection, or through a
stored config the rules would refuse today). After each, the whole dropzone tree
and a directory outside it are exactly as before: nothing was written anywhere.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from connectors.erp import store
from connectors.erp.dropzone import DropzoneConnector, timestamp
from connectors.erp.port import ConnectorError
from connectors.erp.registry import DROPZONE_JSON_V1
from issuer.clock import SystemClock
from issuer.crypto import Encryptor
from tests.conftest import TEST_MASTER_KEY, issue_token
from tests.erp.conftest import bearer, draft_order

CONNECTORS = "/api/v1/connectors"
DROPZONE = f"{CONNECTORS}/dropzone-json-v1"
EXPORTS = "/api/v1/erp-exports"
NOT_FOUND = "Export path not found"
FILE_EXISTS = "A file of that name exists already"


@dataclass
class Layout:
    """The dropzone as the attack finds it: org B's (globex's) folder holds an order;
    org A (acme) has a folder of its own with links in it that point out of it."""

    root: Path
    outside: Path
    acme: str
    globex: str
    headers: dict[str, str]

    def path(self, template: str) -> str:
        return template.format(globex=self.globex, root=self.root, nobody=uuid.uuid4())


@pytest.fixture
async def layout(client, register, dropzone_root: Path, tmp_path: Path) -> Layout:
    admin = await register(tenant="acme", allowed_scopes=["admin"])
    globex = (await register(tenant="globex")).tenant_id
    acme = admin.tenant_id
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the operator's")
    theirs = dropzone_root / globex / "inbound"
    theirs.mkdir(parents=True)
    (theirs / "order-1.json").write_text("{}")
    ours = dropzone_root / acme
    (ours / "inbound").mkdir(parents=True)
    (ours / "to-globex").symlink_to(theirs)  # absolute target
    (ours / "relative").symlink_to(Path("..") / globex / "inbound")
    (ours / "up").symlink_to("..")
    (ours / "out").symlink_to(outside)
    (ours / "inbound" / "deeper").symlink_to(Path("..") / ".." / globex)
    (ours / "dangling").symlink_to(dropzone_root / str(uuid.uuid4()))
    return Layout(dropzone_root, outside, acme, globex,
                  bearer(await issue_token(client, admin, "admin")))


def snapshot(*tops: Path) -> dict[str, str]:
    """Every entry below ``tops``: its kind and content or link target (links are
    not followed)."""
    seen: dict[str, str] = {}
    for top in tops:
        for directory, names, files in os.walk(top):
            for name in names + files:
                path = Path(directory) / name
                mode = path.lstat().st_mode
                seen[str(path)] = (f"link:{os.readlink(path)}" if stat.S_ISLNK(mode)
                                   else "dir" if stat.S_ISDIR(mode)
                                   else f"file:{path.read_text()}")
    return seen


REFUSED = "refused"  # 400 invalid_request naming export_path, whatever lies on disk
INSIDE = "inside"  # resolves inside the org's own folder, where nothing of that name is

#: Every way found to name org B's folder, or anything outside the org's own.
ATTACKS = {
    "dot-dot": [
        ("../{globex}/inbound", REFUSED),
        ("/../{globex}/inbound", REFUSED),
        ("inbound/../../{globex}/inbound", REFUSED),
        ("./../{globex}/inbound", REFUSED),
        ("inbound/./../../{globex}", REFUSED),
        ("..\\{globex}\\inbound", REFUSED),
    ],
    "absolute": [
        ("{globex}/inbound", INSIDE),  # the other org's folder name, as in the report
        ("/{globex}/inbound", INSIDE),
        ("//{globex}//inbound/", INSIDE),
        ("{root}/{globex}/inbound", INSIDE),  # the host's absolute path of B's folder
        ("/etc", INSIDE),
    ],
    "percent-encoded": [
        ("%2e%2e/{globex}/inbound", REFUSED),
        ("%2E%2E%2F{globex}%2Finbound", REFUSED),
        ("..%2f{globex}%2finbound", REFUSED),
        ("%252e%252e/{globex}/inbound", REFUSED),  # double-encoded
    ],
    "unicode look-alikes": [
        ("\uff0e\uff0e/{globex}/inbound", REFUSED),  # full-width full stops
        ("\u2025/{globex}/inbound", REFUSED),  # two-dot leader
        ("..\uff0f{globex}\uff0finbound", REFUSED),  # full-width solidus
        ("\ufe52\ufe52/{globex}/inbound", REFUSED),  # small full stops
        (".\u200b./{globex}/inbound", REFUSED),  # zero-width space
        ("\u202e../{globex}/inbound", REFUSED),  # right-to-left override
        ("\ufeff../{globex}/inbound", REFUSED),  # byte order mark
        ("\u2215..\u2215{globex}\u2215inbound", INSIDE),  # division slash: a letter here
    ],
    "NUL": [
        ("inbound\x00/../../{globex}", REFUSED),
        ("{globex}\x00", REFUSED),
    ],
    "links in the org's own folder": [
        ("to-globex", INSIDE),
        ("to-globex/", INSIDE),
        ("relative", INSIDE),
        ("up/{globex}/inbound", INSIDE),
        ("out", INSIDE),
        ("inbound/deeper/inbound", INSIDE),
        ("dangling", INSIDE),
    ],
}


def refused_as_config(response: Any, path: str) -> None:
    assert response.status_code == 400, (path, response.text)
    body = response.json()
    assert body["error"] == "invalid_request", (path, body)
    assert [problem["field"] for problem in body["details"]["errors"]] == ["export_path"], path


def refused_as_not_found(response: Any, path: str) -> None:
    assert response.status_code == 400, (path, response.text)
    body = response.json()
    assert (body["error"], body["error_description"]) == ("connection_test_failed",
                                                          NOT_FOUND), path


async def plant(engine, org_id: str, config: dict[str, Any]) -> uuid.UUID:
    """An ACTIVE connection whose stored config is ``config`` as it is (as one saved
    before today's rules, or written around the API)."""
    connection_id = uuid.uuid4()
    sealed = Encryptor(current=TEST_MASTER_KEY).encrypt(
        json.dumps(config).encode(), store.associated_data(connection_id))
    async with AsyncSession(engine) as session, session.begin():
        await store.insert_connection(session, connection_id=connection_id, org_id=org_id,
                                      connector_type=DROPZONE_JSON_V1, config_encrypted=sealed,
                                      now=0, tested=False)
    return connection_id


@pytest.mark.parametrize("kind", list(ATTACKS))
async def test_no_export_path_an_org_sends_reaches_outside_its_own_folder(
        client, engine, layout, kind):
    before = snapshot(layout.root, layout.outside)
    for template, outcome in ATTACKS[kind]:
        path = layout.path(template)
        config = {"mode": "filesystem", "export_path": path, "atomic_write": False}
        expected = refused_as_config if outcome == REFUSED else refused_as_not_found

        saved = await client.post(DROPZONE, json={**config, "test_on_save": True},
                                  headers=layout.headers)
        expected(saved, path)
        expected(await client.post(f"{DROPZONE}/test", json=config, headers=layout.headers),
                 path)

        if outcome == INSIDE:  # saved without a test, then pushed through
            created = await client.post(DROPZONE, json=config, headers=layout.headers)
            assert created.status_code == 201, (path, created.text)
            connection_id = created.json()["id"]
        else:  # stored around today's rules: still never used
            connection_id = str(await plant(engine, layout.acme, config))
        pushed = await client.post(EXPORTS, json={
            "draft_order": draft_order(layout.acme).model_dump(mode="json")},
            headers=layout.headers)
        if outcome == INSIDE:
            assert pushed.status_code == 201, (path, pushed.text)
            assert (pushed.json()["status"], pushed.json()["error_json"]) == (
                "FAILED", {"code": "not_found", "message": NOT_FOUND}), path
        else:
            refused_as_config(pushed, path)
        tested = await client.post(f"{DROPZONE}/test", json={}, headers=layout.headers)
        (refused_as_not_found if outcome == INSIDE else refused_as_config)(tested, path)
        disabled = await client.post(f"{CONNECTORS}/{connection_id}/disable",
                                     headers=layout.headers)
        assert disabled.json()["last_test_at"] is None, path

        assert snapshot(layout.root, layout.outside) == before, path


@pytest.mark.parametrize(("theirs", "nobodys"), [
    ("{globex}/inbound", "{nobody}/inbound"),
    ("{root}/{globex}/inbound", "{root}/{nobody}/inbound"),
    ("to-globex", "dangling"),
    ("../{globex}/inbound", "../{nobody}/inbound"),
    ("%2e%2e/{globex}", "%2e%2e/{nobody}"),
])
async def test_the_answers_tell_nothing_of_other_orgs_folders(client, layout, theirs,
                                                              nobodys):
    """A path naming org B's existing folder and one naming nothing at all get the
    same answers, on every path that answers."""

    async def answers(template: str) -> list[Any]:
        config = {"mode": "filesystem", "export_path": layout.path(template)}
        found = []
        for response in (
                await client.post(f"{DROPZONE}/test", json=config, headers=layout.headers),
                await client.post(DROPZONE, json={**config, "test_on_save": True},
                                  headers=layout.headers)):
            body = response.json()
            body.get("details", {}).pop("latency_ms", None)
            found.append((response.status_code, body))
        return found

    mine = await answers(theirs)
    assert mine == await answers(nobodys)
    assert layout.globex not in json.dumps(mine)  # nor is the other org named back
    assert str(layout.root) not in json.dumps(mine)


async def test_an_orgs_folder_is_made_0700_on_first_use_and_holds_its_exports(
        client, make_org, dropzone_root):
    org = await make_org("initech")
    folder = dropzone_root / org.id
    assert not folder.exists()
    created = await client.post(DROPZONE, json={"mode": "filesystem", "export_path": "/",
                                                "test_on_save": True}, headers=org.admin)
    assert created.status_code == 201, created.text
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert list(folder.iterdir()) == []  # the test file is gone
    order = draft_order(org.id)
    pushed = (await client.post(EXPORTS, json={"draft_order": order.model_dump(mode="json")},
                                headers=org.admin)).json()
    (written,) = folder.iterdir()
    assert pushed["dropzone_path"] == f"/{written.name}"
    assert json.loads(written.read_bytes()) == order.model_dump(mode="json")


async def test_an_existing_org_folder_keeps_the_operators_mode(client, make_org,
                                                                dropzone_root):
    org = await make_org("initech")
    (dropzone_root / org.id / "orders").mkdir(parents=True)
    (dropzone_root / org.id).chmod(0o750)  # the ERP's reader is in the group
    created = await client.post(DROPZONE, json={"mode": "filesystem", "export_path": "orders",
                                                "test_on_save": True}, headers=org.admin)
    assert created.status_code == 201, created.text
    assert stat.S_IMODE((dropzone_root / org.id).stat().st_mode) == 0o750


@pytest.mark.parametrize("atomic", [True, False])
async def test_a_link_waiting_at_the_files_own_name_is_never_followed(client, clock, layout,
                                                                      atomic):
    """The file names are predictable (the order id and the time): a link placed at
    that name, pointing into org B's folder, is not written through."""
    config = {"mode": "filesystem", "export_path": "inbound", "atomic_write": atomic}
    created = await client.post(DROPZONE, json=config, headers=layout.headers)
    assert created.status_code == 201, created.text
    order = draft_order(layout.acme)
    target = layout.root / layout.globex / "inbound" / "planted.json"
    inbound = layout.root / layout.acme / "inbound"
    (inbound / f"{order.id}_{timestamp(clock.now())}.json").symlink_to(target)
    (inbound / f"test_connection_{timestamp(clock.now())}.json").symlink_to(target)
    before = snapshot(layout.root, layout.outside)

    pushed = await client.post(EXPORTS, json={"draft_order": order.model_dump(mode="json")},
                               headers=layout.headers)
    assert pushed.json()["error_json"] == {"code": "file_exists", "message": FILE_EXISTS}
    tested = await client.post(f"{DROPZONE}/test", json={}, headers=layout.headers)
    assert tested.json()["error_description"] == FILE_EXISTS
    assert not target.exists()
    assert snapshot(layout.root, layout.outside) == before  # no temporary file left either


async def test_a_stored_path_refused_today_can_be_mended_with_patch(client, engine, layout):
    connection_id = await plant(engine, layout.acme, {
        "mode": "filesystem", "export_path": "inbound/../inbound"})
    patched = await client.patch(f"{CONNECTORS}/{connection_id}",
                                 json={"export_path": "inbound"}, headers=layout.headers)
    assert patched.status_code == 200, patched.text
    pushed = await client.post(EXPORTS, json={
        "draft_order": draft_order(layout.acme).model_dump(mode="json")}, headers=layout.headers)
    assert pushed.json()["status"] == "SUCCESS"
    assert len(list((layout.root / layout.acme / "inbound").glob("*.json"))) == 1


async def test_a_folder_swapped_for_a_link_during_writes_never_leads_out(tmp_path):
    """A thread keeps swapping the org's folder ``inbound`` for a link to org B's
    folder while orders are written: each lands in the org's real folder or is not
    written at all, never in B's."""
    root = tmp_path / "root"
    theirs = root / "globex" / "inbound"
    theirs.mkdir(parents=True)
    ours = root / "acme"
    (ours / "inbound").mkdir(parents=True)
    (ours / "spare").symlink_to(theirs)
    stop = threading.Event()
    swaps = 0

    def swap() -> None:
        nonlocal swaps
        while not stop.is_set():
            os.rename(ours / "inbound", ours / "held")
            os.rename(ours / "spare", ours / "inbound")
            os.rename(ours / "held", ours / "spare")
            swaps += 1

    connector = DropzoneConnector(SystemClock(), root)
    config = connector.parse_config({"mode": "filesystem", "export_path": "inbound",
                                     "atomic_write": False})
    outcomes: dict[str, int] = {}
    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        for _ in range(500):
            try:
                await connector.export(draft_order("acme"), config, org_id="acme")
                outcome = "written"
            except ConnectorError as error:
                outcome = error.message
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
    finally:
        stop.set()
        swapper.join()
    assert list(theirs.iterdir()) == []
    assert set(outcomes) == {"written", NOT_FOUND}, outcomes  # both states were met
    mine = [path for name in ("inbound", "spare") if (ours / name).is_dir()
            and not (ours / name).is_symlink() for path in (ours / name).iterdir()]
    assert len(mine) == outcomes["written"]
    assert swaps > 0
