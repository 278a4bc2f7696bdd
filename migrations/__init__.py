"""Alembic environment and revisions; shipped inside the package so `issuer migrate` finds them."""
