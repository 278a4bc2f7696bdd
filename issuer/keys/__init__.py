"""The issuer's signing keys: the key ring (``issuer.keys.ring``), its rotation policy
(``issuer.keys.policy``), the JWKS endpoint that publishes them
(``issuer.keys.endpoint``), and the ring as a key source for verifying the issuer's own
tokens (``issuer.keys.local``).

The resource-server library (``jwks``) stays apart and imports nothing from here.
"""
