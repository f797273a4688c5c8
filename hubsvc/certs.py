"""Reading and checking certificate chains and keys (PEM, as certbot, certmonger/IPA and
corporate CAs write them): key match, chain order and completeness, names, expiry."""

from __future__ import annotations

import datetime as dt
import ipaddress
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import Problem
from .tls import Source, TlsError

# Where the system keeps the roots it trusts (Debian, then RHEL)
SYSTEM_TRUST = (Path("/etc/ssl/certs/ca-certificates.crt"),
                Path("/etc/pki/tls/certs/ca-bundle.crt"))
EXPIRY_WARN_DAYS = 14


# ---- reading ---------------------------------------------------------------------------
def _read(path: Path, field: str, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TlsError(Problem(field, f"{what} {path} does not exist",
                               f"point {field} at the PEM file")) from None
    except PermissionError:
        raise TlsError(Problem(field, f"{what} {path} cannot be read by uid {os.geteuid()}",
                               "run hubsvc as root (the key may stay root-only) or make it "
                               "readable by the service account")) from None
    except OSError as e:
        raise TlsError(Problem(field, f"cannot read {what} {path}: {e.strerror}",
                               f"point {field} at a readable PEM file")) from None


def load_certs(path: Path, field: str) -> list[x509.Certificate]:
    data = _read(path, field, "certificate file")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise TlsError(Problem(field, f"{path} holds no PEM certificate",
                               "use the PEM file (-----BEGIN CERTIFICATE-----); convert DER with "
                               "`openssl x509 -inform der -in FILE -out FILE.pem`"))
    return certs


PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def load_key(path: Path, field: str) -> tuple[bytes, PrivateKey]:
    data = _read(path, field, "key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsError(Problem(field, f"{path} is encrypted with a passphrase",
                               "store the key unencrypted (root-only, mode 0600): "
                               "`openssl pkey -in KEY -out KEY.plain`")) from None
    except (ValueError, Exception) as e:  # cryptography raises several shapes here
        raise TlsError(Problem(field, f"{path} holds no usable PEM private key ({e})",
                               "use the PEM key (-----BEGIN PRIVATE KEY----- or "
                               "-----BEGIN RSA/EC PRIVATE KEY-----)")) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey |
                      ed25519.Ed25519PrivateKey):
        raise TlsError(Problem(field, f"{path}: {type(key).__name__} keys are not served "
                               "by browsers", "use an RSA (2048+) or ECDSA P-256 key"))
    return data, key


def _spki(pub: object) -> bytes:
    return pub.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return _spki(cert.public_key()) == _spki(key.public_key())


# ---- inspecting --------------------------------------------------------------------------
def names(cert: x509.Certificate) -> list[str]:
    """DNS names and IP addresses the certificate covers (SAN; CN only without a SAN)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
                if isinstance(a.value, str)]
    out = list(san.get_values_for_type(x509.DNSName))
    out += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    return out


def covers(cert: x509.Certificate, host: str) -> bool:
    """Browsers' rule: SAN only (no CN fallback), one leftmost wildcard label."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    h = host.lower().rstrip(".")
    for n in san.get_values_for_type(x509.DNSName):
        n = n.lower().rstrip(".")
        if n == h:
            return True
        if n.startswith("*.") and "." in h and h.split(".", 1)[1] == n[2:]:
            return True
    return False


def describe(cert: x509.Certificate) -> str:
    return (f"subject {cert.subject.rfc4514_string()}, issuer {cert.issuer.rfc4514_string()}, "
            f"valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def self_signed(cert: x509.Certificate) -> bool:
    return issued_by(cert, cert)


def load_trust(paths: tuple[Path, ...] = SYSTEM_TRUST) -> list[x509.Certificate] | None:
    """The roots this host trusts, or None when no bundle is found."""
    for p in paths:
        try:
            return x509.load_pem_x509_certificates(p.read_bytes())
        except (OSError, ValueError):
            continue
    return None


def chain_gap(chain: list[x509.Certificate],
              trust: list[x509.Certificate] | None) -> str | None:
    """Why the chain (server certificate first) does not lead to a trusted root, or None.

    Each certificate must be issued by the next; the last must be a root itself or be
    issued by a root of the trust store."""
    for cert, parent in itertools.pairwise(chain):
        if not issued_by(cert, parent):
            return (f"{cert.subject.rfc4514_string()} is not issued by the next certificate in "
                    f"the file ({parent.subject.rfc4514_string()}): wrong order or a stray "
                    "certificate")
    last = chain[-1]
    if self_signed(last):
        if len(chain) == 1:
            return "self-signed: browsers warn unless it is installed on every client"
        return None
    if trust is None:
        return None
    if any(issued_by(last, root) for root in trust):
        return None
    return (f"the last certificate in the chain ({last.subject.rfc4514_string()}) is issued "
            f"by {last.issuer.rfc4514_string()}, which is neither in the file nor a root this "
            "host trusts: an intermediate is missing")


@dataclass(frozen=True)
class Inspected:
    chain: list[x509.Certificate]
    key_pem: bytes
    key: PrivateKey
    source: Source

    @property
    def leaf(self) -> x509.Certificate:
        return self.chain[0]

    @property
    def not_after(self) -> dt.datetime:
        return self.leaf.not_valid_after_utc

    def chain_pem(self) -> bytes:
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)


def inspect(src: Source) -> Inspected:
    """Read the certificate chain and the key; raise TlsError when CHP could not use them."""
    chain = load_certs(src.cert_file, src.cert_field)
    if src.chain_file is not None:
        extra = load_certs(src.chain_file, "tls.chain_file")
        # certbot's fullchain.pem with chain.pem named again: do not repeat certificates
        seen = {c.fingerprint(hashes.SHA256()) for c in chain}
        chain += [c for c in extra if c.fingerprint(hashes.SHA256()) not in seen]
    key_pem, key = load_key(src.key_file, src.key_field)
    if not key_matches(chain[0], key):
        raise TlsError(Problem(
            src.key_field, f"the key in {src.key_file} does not belong to the certificate in "
            f"{src.cert_file}", "pair the certificate with the key it was issued for (the "
            "server certificate must come first in the certificate file)",
            describe(chain[0])))
    return Inspected(chain, key_pem, key, src)


def expiry(cert: x509.Certificate, now: dt.datetime | None = None) -> tuple[str, str]:
    """("ok"|"expiring"|"expired"|"not_yet_valid", sentence)."""
    now = now or dt.datetime.now(dt.UTC)
    end = cert.not_valid_after_utc
    if now > end:
        return "expired", f"expired {end:%Y-%m-%d %H:%M} UTC"
    if now < cert.not_valid_before_utc:
        return "not_yet_valid", f"valid only from {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    days = (end - now).total_seconds() / 86400
    if days < EXPIRY_WARN_DAYS:
        return "expiring", f"expires in {days:.1f} days ({end:%Y-%m-%d %H:%M} UTC)"
    return "ok", f"valid until {end:%Y-%m-%d %H:%M} UTC ({days:.0f} days)"


def server_auth_ok(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return ExtendedKeyUsageOID.SERVER_AUTH in eku
