"""The rate-limit package's shape: the Redis check script ships as package data and
is what Redis runs, and no module of the package is part of an import cycle.
"""

from __future__ import annotations

import ast
import hashlib
import tomllib
from fnmatch import fnmatch
from importlib.resources import files
from pathlib import Path

from redis.asyncio import Redis

import issuer
from issuer.ratelimit import Rate, RedisRateLimiter
from tests.conftest import FakeClock, RedisServer

ROOT = Path(__file__).resolve().parent.parent
ISSUER = Path(issuer.__file__).resolve().parent
PACKAGE = "issuer.ratelimit"


async def test_the_check_script_redis_runs_is_the_packaged_lua_file(
        redis_server: RedisServer) -> None:
    script = files(PACKAGE).joinpath("check.lua").read_text(encoding="utf-8")
    sha = hashlib.sha1(script.encode()).hexdigest()  # noqa: S324 -- Redis's script id
    redis = Redis.from_url(redis_server.url)
    try:
        assert await redis.script_exists(sha) == [False]  # a fresh server
        decision = await RedisRateLimiter(redis, FakeClock(1_000_000)).hit("k", Rate(3, 60))
        assert (decision.allowed, decision.remaining) == (True, 2)
        assert await redis.script_exists(sha) == [True]
    finally:
        await redis.aclose()


def test_every_data_file_of_the_package_is_declared_package_data() -> None:
    # An editable install reads the source tree; a wheel holds only what setuptools
    # was told to ship: every file of the package that is not Python must match.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"].get(PACKAGE, [])
    data = [path for path in (ISSUER / "ratelimit").iterdir()
            if path.is_file() and path.suffix not in (".py", ".pyc")]
    assert [path.name for path in data] == ["check.lua"]
    for path in data:
        assert any(fnmatch(path.name, pattern) for pattern in patterns), path.name


def _module_name(path: Path) -> str:
    parts = path.relative_to(ISSUER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _issuer_modules() -> dict[str, Path]:
    return {_module_name(path): path for path in ISSUER.rglob("*.py")}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The issuer modules ``name`` imports, type-checking-only imports included."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0]
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            # ``from package import module`` imports that module.
            found.update(f"{base}.{alias.name}" for alias in node.names
                         if f"{base}.{alias.name}" in modules)
    return {module for module in found if module in modules and module != name}


def test_no_rate_limit_module_is_part_of_an_import_cycle() -> None:
    modules = _issuer_modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    ours = sorted(name for name in modules if name.startswith(PACKAGE + "."))
    assert {name.rpartition(".")[2] for name in ours} == {
        "rates", "protocol", "memory", "redis_backend", "leases", "fallback", "policy"}
    for name in ours:
        # Submodules import each other, never the package (whose __init__ imports them all).
        assert PACKAGE not in graph[name], f"{name} imports {PACKAGE}"
        # Nothing ``name`` reaches, directly or not, leads back to it.
        seen: set[str] = set()
        todo = list(graph[name])
        while todo:
            module = todo.pop()
            assert module != name, f"{name} is part of an import cycle"
            if module not in seen:
                seen.add(module)
                todo.extend(graph[module])
