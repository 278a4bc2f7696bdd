"""The jwks distribution (``m2m-jwks``, built from ``jwks/pyproject.toml``) on its own.

Its wheel holds the ``jwks`` package and nothing else, and declares httpx and joserfc
with the issuer's own ranges. pip installs it into an empty virtual environment from a
local wheelhouse -- the installed versions of httpx, joserfc and everything they need,
repacked as wheels, so no package index is asked -- and there, with no issuer, database
driver, Redis client, server or web framework installed, it verifies a token the
issuer signed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from collections.abc import Iterable
from email.parser import HeaderParser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools import find_namespace_packages

from tests.conftest import ISSUER, issue_token, store_independent
from tests.jwks.conftest import AUDIENCE, ROOT

#: What a resource server must not get with the verifier.
ISSUER_ONLY = {"m2m-issuer", "asyncpg", "sqlalchemy", "aiosqlite", "alembic", "redis", "hiredis",
               "granian", "uvloop", "starlette", "fastapi", "authlib", "asyncssh", "pydantic",
               "prometheus-client"}
#: pip on its own: no configuration file (no index, find-links or constraints of this
#: machine), no version check.
PIP_ENV = {**os.environ, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1",
           "PIP_NO_INPUT": "1"}


def _pip(*args: str | Path, timeout: float = 120) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *map(str, args)], env=PIP_ENV,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip wheel ./jwks`` on a copy (a build in place would leave jwks/build/ behind)."""
    work = tmp_path_factory.mktemp("m2m-jwks")
    source = work / "jwks"
    shutil.copytree(ROOT / "jwks", source,
                    ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", work / "dist", source)
    [built] = (work / "dist").glob("*.whl")
    return built


def wheel_metadata(wheel: Path) -> tuple[list[str], dict[str, list[str]]]:
    """The wheel's file names and its METADATA headers (every value of each)."""
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        [meta] = [name for name in names if name.endswith(".dist-info/METADATA")]
        headers = HeaderParser().parsestr(archive.read(meta).decode())
    return names, {key: headers.get_all(key) or [] for key in set(headers.keys())}


def root_ranges() -> dict[str, str]:
    """Each requirement of the issuer's pyproject.toml (its test extra included), by name."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return {canonicalize_name(Requirement(r).name): r for r in requirements}


def test_wheel_holds_the_jwks_package_and_nothing_else(wheel):
    names, headers = wheel_metadata(wheel)
    assert wheel.name == "m2m_jwks-0.1.0-py3-none-any.whl"
    assert headers["Name"] == ["m2m-jwks"]
    modules = sorted(path.name for path in (ROOT / "jwks").glob("*.py"))
    assert sorted(n for n in names if ".dist-info/" not in n) == [f"jwks/{m}" for m in modules]


def test_wheel_requires_httpx_and_joserfc_with_the_issuers_ranges(wheel):
    _, headers = wheel_metadata(wheel)
    required = [Requirement(r) for r in headers["Requires-Dist"]]
    plain = sorted(str(r) for r in required if r.marker is None)
    assert plain == sorted(str(Requirement(root_ranges()[name])) for name in ("httpx", "joserfc"))
    # The integrations' frameworks are extras, with the ranges the issuer tests them with.
    extras = {str(r.marker): f"{r.name}{r.specifier}" for r in required if r.marker is not None}
    root = {name: Requirement(root_ranges()[name]) for name in ("starlette", "fastapi")}
    assert extras == {f'extra == "{name}"': f"{r.name}{r.specifier}" for name, r in root.items()}


def test_the_issuers_distribution_ships_the_jwks_package_too():
    """README's install of the issuer needs no index holding m2m-jwks: the issuer's own
    distribution carries the package (and the issuer's keys), and does not require it."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_namespace_packages(str(ROOT), include=include)
    assert {"jwks", "issuer", "issuer.keys"} <= set(packages)
    assert not [name for name in packages if name.startswith("jwks.")]
    assert "m2m-jwks" not in root_ranges()


def dependency_closure(requirements: Iterable[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``requirements`` need, transitively (no extras of the
    root; an extra a requirement names is followed)."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in requirements]
    while todo:
        requirement, extra = todo.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        distribution = metadata.distribution(name)
        assert requirement.specifier.contains(distribution.version, prereleases=True), (
            f"{distribution.version} of {name} does not meet {requirement}")
        found[name] = distribution
        for wanted in ("", *sorted(requirement.extras)):
            if (name, wanted) not in seen:
                seen.add((name, wanted))
                todo += [(Requirement(r), wanted) for r in distribution.requires or []]
    return found


def repack(distribution: metadata.Distribution, wheelhouse: Path) -> None:
    """An installed distribution back into a wheel (its own files, tag and metadata)."""
    tag = next(line.split(":", 1)[1].strip() for line in
               (distribution.read_text("WHEEL") or "").splitlines() if line.startswith("Tag:"))
    name = canonicalize_name(distribution.metadata["Name"]).replace("-", "_")
    records = []
    target = wheelhouse / f"{name}-{distribution.version}-{tag}.whl"
    with zipfile.ZipFile(target, "w") as archive:
        for file in distribution.files or []:
            path = Path(str(file))
            installer_only = path.name in {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
            if (str(file).startswith("..") or "__pycache__" in path.parts
                    or (path.parent.name.endswith(".dist-info") and installer_only)):
                continue
            data = Path(str(distribution.locate_file(file))).read_bytes()
            archive.writestr(str(file), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{file},sha256={digest.decode()},{len(data)}")
        dist_info = next(Path(str(f)).parent for f in distribution.files or []
                         if str(f).endswith(".dist-info/METADATA"))
        records.append(f"{dist_info}/RECORD,,")
        archive.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")


CHECK = textwrap.dedent("""
    import asyncio, importlib.metadata, json, sys

    issuer, audience, token, jwks_file = sys.argv[1:]
    report = {"distributions": sorted(d.metadata["Name"] for d in
                                      importlib.metadata.distributions())}
    for name in ("issuer", "jwks.starlette", "jwks.fastapi"):
        try:
            __import__(name)
        except ModuleNotFoundError as missing:
            report[name] = f"missing {missing.name}"

    import jwks
    from jwks.verifier import JWKSVerifier, StaticKeySource, WrongAudience

    async def verify():
        with open(jwks_file) as document:
            keys = json.load(document)
        verified = await JWKSVerifier(issuer, audience,
                                      key_source=StaticKeySource(keys)).verify(token)
        try:
            await JWKSVerifier(issuer, "https://elsewhere.example",
                               key_source=StaticKeySource(keys)).verify(token)
        except WrongAudience:
            elsewhere = "WrongAudience"
        return {"client_id": verified.client_id, "tenant_id": verified.tenant_id,
                "scopes": sorted(verified.scopes), "kid": verified.kid,
                "elsewhere": elsewhere}

    report["verified"] = asyncio.run(verify())
    report["jwks"] = jwks.__file__
    print(json.dumps(report))
""")


@pytest.fixture(scope="module")
def closure(wheel: Path) -> dict[str, metadata.Distribution]:
    """What pip must install with the wheel: its requirements' closure, as installed here."""
    _, headers = wheel_metadata(wheel)
    return dependency_closure(headers["Requires-Dist"])


@pytest.fixture(scope="module")
def venv(wheel: Path, closure: dict[str, metadata.Distribution],
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty virtual environment (not even pip) where pip installed the wheel, with
    no index: only the closure is at hand, in a wheelhouse."""
    work = tmp_path_factory.mktemp("venv")
    wheelhouse = work / "wheelhouse"
    wheelhouse.mkdir()
    for distribution in closure.values():
        repack(distribution, wheelhouse)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", work / "venv"], check=True,
                   timeout=60)
    python = work / "venv" / "bin" / "python"
    _pip("--python", python, "install", "-q", "--no-compile", "--no-index",
         "--find-links", wheelhouse, wheel)
    _pip("--python", python, "check")  # every requirement met by what is installed
    return work / "venv"


def test_its_dependencies_hold_nothing_of_the_issuer(closure):
    assert {"httpx", "joserfc"} <= set(closure)
    assert not set(closure) & ISSUER_ONLY


@store_independent
async def test_installed_alone_it_verifies_a_token_the_issuer_signed(venv, closure, tmp_path,
                                                                     client, register):
    c = await register(allowed_scopes=["orders:read"], allowed_audiences=[AUDIENCE])
    token = await issue_token(client, c, scope="orders:read")
    jwks_file = tmp_path / "jwks.json"
    jwks_file.write_text((await client.get("/.well-known/jwks.json")).text)
    process = await asyncio.create_subprocess_exec(
        venv / "bin" / "python", "-I", "-c", CHECK, ISSUER, AUDIENCE, token, jwks_file,
        cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode == 0, stderr.decode()
    report = json.loads(stdout)

    installed = {canonicalize_name(name) for name in report["distributions"]}
    assert installed == {"m2m-jwks", *closure}
    assert report["issuer"] == "missing issuer"
    assert report["jwks.starlette"] == "missing starlette"
    assert report["jwks.fastapi"] == "missing fastapi"
    assert Path(report["jwks"]).is_relative_to(venv)
    assert report["verified"] == {"client_id": c.client_id, "tenant_id": c.tenant_id,
                                  "scopes": ["orders:read"], "kid": report["verified"]["kid"],
                                  "elsewhere": "WrongAudience"}
    published = json.loads(jwks_file.read_text())["keys"]
    assert report["verified"]["kid"] in {key["kid"] for key in published}
