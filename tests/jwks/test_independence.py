"""``jwks.verifier`` imports nothing from ``issuer`` -- a resource server installs
it alone. Proved from the source (every import of every module of ``jwks/``) and in a
fresh interpreter where importing ``issuer`` is impossible."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import jwks
import jwks.fastapi
import jwks.starlette
import jwks.verifier
from tests.jwks.conftest import ROOT

MODULES = sorted((ROOT / "jwks").glob("*.py"))
#: What a module of jwks/ may import besides the standard library and jwks itself: the
#: distribution's two dependencies, and an integration's own framework.
ALLOWED = {"httpx", "joserfc"}
FRAMEWORK = {"starlette.py": {"starlette"}, "fastapi.py": {"fastapi"}}

BLOCK_ISSUER = textwrap.dedent("""
    import importlib.util, sys

    class NoIssuer:
        def find_spec(self, name, path=None, target=None):
            if name == "issuer" or name.startswith("issuer."):
                raise ImportError(f"{name} is not installed here")
            return None

    sys.meta_path.insert(0, NoIssuer())
    try:
        import issuer
    except ImportError:
        pass
    else:
        raise SystemExit("the blocker did not block")
""")


def imported_packages(path: Path) -> set[str]:
    """The top-level names ``path`` imports anywhere (functions and ``try`` included);
    a relative import is an import of ``jwks``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("jwks" if node.level else str(node.module).partition(".")[0])
    return names


def test_the_package_holds_exactly_the_resource_server_modules():
    assert [path.name for path in MODULES] == [
        "__init__.py", "dpop.py", "errors.py", "fastapi.py", "sources.py", "starlette.py",
        "verifier.py"]


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_no_module_of_jwks_imports_the_issuer(path):
    assert not imported_packages(path) & {"issuer", "connectors", "migrations", "tests"}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_each_module_imports_only_its_dependencies(path):
    allowed = {"jwks", *ALLOWED, *FRAMEWORK.get(path.name, ())}
    foreign = imported_packages(path) - allowed - set(sys.stdlib_module_names)
    assert not foreign, f"{path.name} imports {sorted(foreign)}"


def test_the_import_check_sees_an_issuer_import(tmp_path):
    """The check above would catch an import of the issuer, however it is written."""
    module = tmp_path / "leaky.py"
    module.write_text("def f():\n    from issuer.keys import ring\n    import issuer.app\n"
                      "from . import verifier\n")
    assert imported_packages(module) == {"issuer", "jwks"}


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_ISSUER + textwrap.dedent(code)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_verifier_and_starlette_integration_import_with_issuer_absent():
    result = _run("""
        import jwks, jwks.verifier, jwks.starlette, jwks.fastapi
        from jwks.verifier import JWKSVerifier
        JWKSVerifier("https://idp.example", "https://api.example")
        spec = importlib.util.spec_from_file_location("example", "examples/resource_server.py")
        example = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(example)
        example.create_app()
        leaked = sorted(m for m in sys.modules if m == "issuer" or m.startswith("issuer."))
        assert not leaked, leaked
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_verifier_alone_pulls_in_only_httpx_and_joserfc():
    result = _run("""
        import jwks.verifier
        heavy = {"issuer", "starlette", "fastapi", "sqlalchemy", "authlib",
                 "issuer.keys.ring", "jwks.starlette", "jwks.fastapi"}
        loaded = sorted(heavy & set(sys.modules))
        assert not loaded, loaded
        assert {"httpx", "joserfc"} <= set(sys.modules)
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_package_reexports_the_verifier_api_with_a_sorted_all():
    assert jwks.__all__ == sorted(jwks.__all__)
    assert jwks.__all__ == jwks.verifier.__all__
    assert all(getattr(jwks, name) is getattr(jwks.verifier, name) for name in jwks.__all__)


def test_starlette_module_exports_a_sorted_all_of_real_names():
    assert jwks.starlette.__all__ == sorted(jwks.starlette.__all__)
    assert all(hasattr(jwks.starlette, name) for name in jwks.starlette.__all__)


def test_fastapi_module_without_fastapi_says_how_to_install_it():
    result = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys

        class NoFastAPI:
            def find_spec(self, name, path=None, target=None):
                if name == "fastapi" or name.startswith("fastapi."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, NoFastAPI())
        import jwks, jwks.verifier, jwks.starlette
        try:
            import jwks.fastapi
        except ModuleNotFoundError as error:
            print(error.name, "|", error)
        """)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "fastapi | jwks.fastapi needs FastAPI: pip install fastapi "
        "(or the m2m-jwks[fastapi] extra)")


def test_fastapi_module_exports_a_sorted_all_of_real_names():
    assert jwks.fastapi.__all__ == sorted(jwks.fastapi.__all__)
    assert all(hasattr(jwks.fastapi, name) for name in jwks.fastapi.__all__)
