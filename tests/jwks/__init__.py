"""Tests of the resource-server verifier (jwks.verifier, jwks.starlette)."""
