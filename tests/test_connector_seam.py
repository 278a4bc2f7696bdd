"""The connectors meet the core at one seam (``issuer.connector``): only the composition
roots -- ``issuer/app.py`` and ``issuer/cli.py`` -- import ``connectors``, and a
connector imports only the core's public names, never a composition root."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from issuer import audit
from issuer.app import CONNECTORS, ENDPOINTS
from issuer.errors import ErrorTable, InvalidRequest, NotFound

ROOT = Path(__file__).resolve().parent.parent
COMPOSITION_ROOTS = {"issuer/app.py", "issuer/cli.py"}


def _imports(path: Path) -> Iterator[tuple[str, str | None]]:
    """Every (module, name) the file imports, anywhere in it (functions too); relative
    imports resolved against the file's package. ``name`` is None for ``import x``."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                yield module, alias.name


def _modules(top: str) -> list[Path]:
    return sorted((ROOT / top).rglob("*.py"))


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_only_the_composition_roots_of_the_core_import_connectors() -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _modules("issuer") if str(path.relative_to(ROOT)) not in COMPOSITION_ROOTS
        for module, name in _imports(path)
        if _within(module, "connectors")
        or (module == "" and name == "connectors"))
    assert offenders == []
    # The walk sees the composition roots' imports (the check above cannot pass vacuously).
    assert any(_within(module, "connectors") for module, _ in _imports(ROOT / "issuer/app.py"))


def test_connectors_import_only_the_cores_public_names_and_no_composition_root() -> None:
    offenders = sorted(
        f"{path.relative_to(ROOT)} imports {module}.{name}"
        for path in _modules("connectors")
        for module, name in _imports(path)
        if _within(module, "issuer")
        and (module in ("issuer.app", "issuer.cli")
             or any(part.startswith("_") for part in module.split("."))
             or (name is not None and name.startswith("_"))))
    assert offenders == []


def test_every_connector_brings_its_endpoints_events_tables_and_encrypted_columns() -> None:
    served = {(endpoint.method, endpoint.path) for endpoint in ENDPOINTS}
    vocabulary = audit.vocabulary(*(connector.audit_events for connector in CONNECTORS))
    for connector in CONNECTORS:
        assert connector.endpoints, connector.name
        assert {(endpoint.method, endpoint.path) for endpoint in connector.endpoints} <= served
        assert {event.value for event in connector.audit_events} <= set(vocabulary)
        assert connector.tables, connector.name
        assert {column.table for column in connector.encrypted_columns} <= set(
            connector.tables)


def test_the_audit_vocabulary_refuses_an_event_declared_twice() -> None:
    with pytest.raises(ValueError, match="TENANT_CREATED"):
        audit.vocabulary([audit.AuditEvent.TENANT_CREATED])


class _Domain(Exception):
    pass


class _Specific(_Domain):
    pass


def test_the_error_table_answers_with_the_most_specific_registered_entry() -> None:
    table = ErrorTable([{_Domain: lambda error: InvalidRequest(str(error))},
                        {_Specific: lambda error: NotFound(reason="specific")}])
    assert isinstance(table.translate(_Specific()), NotFound)
    assert isinstance(table.translate(_Domain("x")), InvalidRequest)
    assert table.translate(ValueError()) is None
    with pytest.raises(ValueError, match="two entries"):
        ErrorTable([{_Domain: NotFound}, {_Domain: NotFound}])  # type: ignore[dict-item]
