"""DESIGN §1: ``jwks.verifier`` imports nothing from ``issuer`` -- a resource server installs
it alone. Proved in a fresh interpreter where importing ``issuer`` is impossible."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jwks
import jwks.starlette
import jwks.verifier
from tests.jwks.conftest import ROOT

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


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCK_ISSUER + textwrap.dedent(code)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_verifier_and_starlette_integration_import_with_issuer_absent():
    result = _run("""
        import jwks, jwks.verifier, jwks.starlette
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
        heavy = {"issuer", "starlette", "sqlalchemy", "authlib", "issuer.keys.ring",
                 "jwks.starlette"}
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
