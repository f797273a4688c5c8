"""A throwaway certificate authority for tests: root → intermediate → server certificate,
made with `cryptography` in the test itself (nothing leaves the test's tmp_path)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "hubsvc test"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


class CA:
    def __init__(self) -> None:
        now = dt.datetime.now(dt.UTC)
        self.root_key = ec.generate_private_key(ec.SECP256R1())
        self.root = self._sign(_name("hubsvc test root"), self.root_key.public_key(),
                               _name("hubsvc test root"), self.root_key, ca=True,
                               start=now - dt.timedelta(days=1), days=3650)
        self.inter_key = ec.generate_private_key(ec.SECP256R1())
        self.inter = self._sign(_name("hubsvc test intermediate"), self.inter_key.public_key(),
                                self.root.subject, self.root_key, ca=True,
                                start=now - dt.timedelta(days=1), days=1825)

    @staticmethod
    def _sign(subject: x509.Name, pub: ec.EllipticCurvePublicKey, issuer: x509.Name,
              issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool, start: dt.datetime,
              days: float, sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(pub).serial_number(x509.random_serial_number())
             .not_valid_before(start).not_valid_after(start + dt.timedelta(days=days))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                              False, False), critical=True)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                                critical=False)
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def server(self, *hosts: str, days: float = 90, start_days_ago: float = 1) -> Issued:
        sans: list[x509.GeneralName] = []
        for h in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(h)))
            except ValueError:
                sans.append(x509.DNSName(h))
        key = ec.generate_private_key(ec.SECP256R1())
        start = dt.datetime.now(dt.UTC) - dt.timedelta(days=start_days_ago)
        cert = self._sign(_name(hosts[0]), key.public_key(), self.inter.subject, self.inter_key,
                          ca=False, start=start, days=days, sans=sans)
        return Issued(cert, key)

    def write(self, d: Path, issued: Issued, *, full_chain: bool = True,
              key_mode: int = 0o600) -> tuple[Path, Path]:
        """cert.pem (server + intermediate unless full_chain=False) and key.pem in d."""
        d.mkdir(parents=True, exist_ok=True)
        cert = d / "cert.pem"
        cert.write_bytes(pem(issued.cert) + (pem(self.inter) if full_chain else b""))
        key = d / "key.pem"
        key.write_bytes(key_pem(issued.key))
        key.chmod(key_mode)
        return cert, key

    def write_root(self, path: Path) -> Path:
        path.write_bytes(pem(self.root))
        return path
