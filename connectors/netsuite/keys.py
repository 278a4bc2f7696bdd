"""Key pairs and self-signed X.509 certificates for NetSuite.

NetSuite takes RSA 3072/4096 or EC P-256/P-384/P-521 keys; our RSA keys are 4096 bits
and their certificates are self-signed with RSA-PSS/SHA-256 (Oracle's recipe: "when
you change the scheme to RSA-PSS you must also change the algorithm used for signing
to PS256"). A certificate is valid for at most 729 days: NetSuite "automatically
shortens the validity to two years", and our expiry bookkeeping must match its own.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

RSA_BITS = 4096
#: JWS alg -> the key NetSuite pairs with it (the simulator's checklist, item 8).
ALGORITHMS: dict[str, str] = {"PS256": "RSA-4096", "ES256": "P-256", "ES384": "P-384",
                              "ES512": "P-521"}
DEFAULT_ALGORITHM = "PS256"
_CURVES: dict[str, ec.EllipticCurve] = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(),
                                        "ES512": ec.SECP521R1()}
_HASHES: dict[str, type[hashes.SHA256 | hashes.SHA384 | hashes.SHA512]] = {
    "PS256": hashes.SHA256, "ES256": hashes.SHA256, "ES384": hashes.SHA384,
    "ES512": hashes.SHA512}
MAX_VALIDITY_DAYS = 729
#: notBefore is set this far back, so a NetSuite clock a little behind ours accepts it.
BACKDATE = timedelta(minutes=5)


@dataclass(frozen=True)
class CertificateSubject:
    common_name: str
    organization: str | None = None
    country: str | None = None

    @classmethod
    def for_account(cls, platform_name: str, account_id: str, organization: str | None = None,
                    country: str | None = None) -> CertificateSubject:
        """CN ``"<platform name> - Tenant <account_id>"`` (the platform's plan)."""
        return cls(f"{platform_name} - Tenant {account_id}"[:64],
                   organization if organization is not None else platform_name[:64], country)

    def name(self) -> x509.Name:
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, self.common_name)]
        if self.organization:
            attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, self.organization))
        if self.country:
            attributes.append(x509.NameAttribute(NameOID.COUNTRY_NAME, self.country))
        return x509.Name(attributes)


def generate_key_pair(algorithm: str = DEFAULT_ALGORITHM) -> PrivateKey:
    if algorithm == "PS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if algorithm in _CURVES:
        return ec.generate_private_key(_CURVES[algorithm])
    raise ValueError(f"unsupported algorithm {algorithm!r}; one of {', '.join(ALGORITHMS)}")


def generate_certificate(key: PrivateKey, algorithm: str, subject: CertificateSubject,
                         now: datetime, days: int = MAX_VALIDITY_DAYS) -> x509.Certificate:
    """A self-signed certificate of ``key``, valid ``days`` (at most 729) from ``now``."""
    if not 1 <= days <= MAX_VALIDITY_DAYS:
        raise ValueError(f"a certificate is valid 1 to {MAX_VALIDITY_DAYS} days")
    not_before = now - BACKDATE
    public = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject.name())
        .issuer_name(subject.name())
        .public_key(public)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(not_before)
        .not_valid_after(not_before + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )
    hash_algorithm = _HASHES[algorithm]()
    if isinstance(key, rsa.RSAPrivateKey):
        pss = padding.PSS(mgf=padding.MGF1(hash_algorithm), salt_length=padding.PSS.DIGEST_LENGTH)
        return builder.sign(key, hash_algorithm, rsa_padding=pss)
    return builder.sign(key, hash_algorithm)


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_pem(data: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError("not an RSA or EC private key")
    return key


def certificate_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def new_key_id() -> str:
    return f"nsk_{secrets.token_hex(16)}"
