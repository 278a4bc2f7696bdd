"""Hand-made JWS for the simulator's negative tests: any header, any claims, any
signature encoding (the client under test uses joserfc; these are deliberately not)."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from connectors.netsuite.keys import PrivateKey

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def segment(value: dict[str, Any]) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def signature(key: PrivateKey, alg: str, message: bytes, *, der: bool = False,
              max_salt: bool = False) -> bytes:
    hash_type = HASHES[alg[2:]]
    if isinstance(key, rsa.RSAPrivateKey):
        if alg.startswith("RS"):
            return key.sign(message, padding.PKCS1v15(), hash_type())
        salt = padding.PSS.MAX_LENGTH if max_salt else hash_type.digest_size
        return key.sign(message, padding.PSS(mgf=padding.MGF1(hash_type()), salt_length=salt),
                        hash_type())
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    signed = key.sign(message, ec.ECDSA(hash_type()))
    if der:
        return signed
    size = (key.curve.key_size + 7) // 8
    r, s = decode_dss_signature(signed)
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def jws(key: PrivateKey, header: dict[str, Any], claims: dict[str, Any], *,
        sign_as: str | None = None, der: bool = False, max_salt: bool = False) -> str:
    signing_input = f"{segment(header)}.{segment(claims)}"
    alg = sign_as or str(header.get("alg"))
    if alg in ("none", "HS256"):
        return signing_input + "." + b64(b"not-a-signature")
    return signing_input + "." + b64(signature(key, alg, signing_input.encode(), der=der,
                                               max_salt=max_salt))


def certificate(key: PrivateKey, *, days: int = 30, pss: bool = True,
                not_before: datetime | None = None) -> x509.Certificate:
    """A self-signed certificate of ``key`` (any size or curve: for rejection tests)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    start = not_before or datetime.now(UTC) - timedelta(minutes=5)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + timedelta(days=days)))
    if isinstance(key, rsa.RSAPrivateKey) and pss:
        return builder.sign(key, hashes.SHA256(), rsa_padding=padding.PSS(
            mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.DIGEST_LENGTH))
    return builder.sign(key, hashes.SHA256())
