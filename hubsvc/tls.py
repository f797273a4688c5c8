"""HTTPS for CHP: read and inspect the certificate chain and key, and install the private
copy CHP reads.

The certificate and key stay where the admin (certbot, certmonger, a corporate CA) or
hubsvc's ACME client keeps them, readable by root only if they like. hubsvc reads them
and writes one private copy into `<runtime_dir>/tls/` (directory 0700, files 0600, owned
by the account hubsvc runs as):
  - process launcher: CHP runs as that same account and reads the copy directly;
  - systemd launcher: CHP runs as a DynamicUser; its unit loads the directory with
    `LoadCredential=tls:/run/hubsvc/tls`, and `hubsvc exec proxy` points CHP's
    `--ssl-cert`/`--ssl-key` at `$CREDENTIALS_DIRECTORY/tls_<file>`.
CHP's argv carries only paths; nothing secret is logged.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .config import Config, Problem

DIR_NAME = "tls"
CERT_NAME = "cert.pem"  # the server certificate followed by its intermediates
KEY_NAME = "key.pem"
# Where the system keeps the roots it trusts (Debian, then RHEL)
SYSTEM_TRUST = (Path("/etc/ssl/certs/ca-certificates.crt"),
                Path("/etc/pki/tls/certs/ca-bundle.crt"))
EXPIRY_WARN_DAYS = 14
# The organisation name of the self-signed stand-in CHP serves until the ACME CA has issued
PLACEHOLDER_MARK = "O=hubsvc placeholder until the ACME CA issues"


class TlsError(Exception):
    def __init__(self, problem: Problem):
        super().__init__(str(problem))
        self.problem = problem


@dataclass(frozen=True)
class Source:
    """Where the certificate and key come from, for the config's mode."""

    cert_file: Path
    chain_file: Path | None
    key_file: Path
    cert_field: str  # the config field a problem with the certificate names
    key_field: str


def acme_dir(cfg: Config) -> Path:
    return cfg.paths.state_dir / "acme"


def source(cfg: Config) -> Source | None:
    t = cfg.tls
    if t.mode == "files":
        assert t.cert_file is not None and t.key_file is not None
        return Source(t.cert_file, t.chain_file, t.key_file, "tls.cert_file", "tls.key_file")
    if t.mode == "acme":
        d = acme_dir(cfg)
        return Source(d / CERT_NAME, None, d / KEY_NAME, "tls.acme", "tls.acme")
    return None


def private_dir(cfg: Config) -> Path:
    return cfg.paths.runtime_dir / DIR_NAME


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


# ---- the private copy CHP reads ----------------------------------------------------------
@dataclass(frozen=True)
class Installed:
    cert_path: Path
    key_path: Path
    digest: str  # changes when the certificate or key changes (part of CHP's fingerprint)
    not_after: dt.datetime
    names: tuple[str, ...]


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def ensure_private_dir(cfg: Config) -> Path:
    """`<runtime_dir>/tls`, 0700. Created even with TLS off: the proxy unit loads it as a
    credential directory, and systemd fails a unit whose credential directory is missing."""
    d = private_dir(cfg)
    d.mkdir(mode=0o700, exist_ok=True)
    st = d.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise TlsError(Problem("paths.runtime_dir", f"{d} is not a directory owned by uid "
                               f"{os.geteuid()}", f"remove {d}; hubsvc creates it"))
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(d, 0o700)
    return d


def digest_of(chain_pem: bytes, key_pem: bytes) -> str:
    return hashlib.sha256(chain_pem + b"\0" + key_pem).hexdigest()


def install(cfg: Config) -> Installed | None:
    """Write the private copy CHP reads; None with TLS off (and no copy left behind)."""
    d = ensure_private_dir(cfg)
    src = source(cfg)
    if src is None:
        for name in (CERT_NAME, KEY_NAME):
            (d / name).unlink(missing_ok=True)
        return None
    if cfg.tls.mode == "acme":
        from . import acme

        acme.ensure_placeholder(cfg)  # CHP needs a certificate before the CA issues one
    ins = inspect(src)
    chain_pem = ins.chain_pem()
    cert_path, key_path = d / CERT_NAME, d / KEY_NAME
    _write_private(key_path, ins.key_pem)
    _write_private(cert_path, chain_pem)
    return Installed(cert_path, key_path, digest_of(chain_pem, ins.key_pem), ins.not_after,
                     tuple(names(ins.leaf)))


def chp_args(cfg: Config, installed: Installed | None) -> list[str]:
    """CHP's TLS flags: paths only. CHP 5.3.0 has no minimum-version flag (its
    --ssl-protocol pins one version, which would shut out TLS 1.3); node already refuses
    below TLS 1.2 by default, and the cipher list holds TLS 1.2 suites only."""
    if installed is None:
        return []
    args = ["--ssl-cert", str(installed.cert_path), "--ssl-key", str(installed.key_path),
            "--ssl-ciphers", cfg.tls.ciphers]
    if cfg.tls.http_port and cfg.tls.mode != "acme":
        # CHP's own redirect listener (all addresses): 301 to https://HOST:PORT/same/path,
        # PORT being its own https port (omitted for 443). No --redirect-to: CHP compares
        # that string with the number 443 and would write ":443" into every Location.
        # With ACME hubsvc answers on this port itself (CHP's listener cannot serve the
        # CA's challenge).
        args += ["--redirect-port", str(cfg.tls.http_port)]
    return args


def hsts_value(cfg: Config) -> str:
    return f"max-age={cfg.tls.hsts_max_age_s}" if cfg.tls.mode != "off" and cfg.tls.hsts_max_age_s else ""


# ---- the run path ------------------------------------------------------------------------
def http_bind_host(cfg: Config) -> str:
    """Where the plain-http port listens: CHP's redirect listener binds every address;
    hubsvc's own (ACME) listener binds the public address."""
    return cfg.public.host if cfg.tls.mode == "acme" else "::"


def file_problems(cfg: Config) -> list[Problem]:
    """Certificate/key files CHP could not use (for check-config and run)."""
    src = source(cfg)
    if src is None or (cfg.tls.mode == "acme" and not src.cert_file.exists()):
        return []
    try:
        inspect(src)
    except TlsError as e:
        return [e.problem]
    return []


def preflight_problems(cfg: Config) -> list[Problem]:
    """What would stop CHP from serving https: unusable files, a taken plain-http port."""
    if cfg.tls.mode == "off":
        return []
    out = file_problems(cfg)
    if cfg.tls.http_port:
        from . import ports

        host = http_bind_host(cfg)
        err = ports.bind_error(host, cfg.tls.http_port)
        if err is not None and host == "::" and err.errno in (97, 99):  # no IPv6 here
            host = "0.0.0.0"
            err = ports.bind_error(host, cfg.tls.http_port)
        if err is not None:
            holder = ports.port_holder(host, cfg.tls.http_port)
            who = f" by {holder.describe()}" if holder else ""
            out.append(Problem("tls.http_port", f"port {cfg.tls.http_port} cannot be bound{who}: "
                               f"{err.strerror or err}", "stop the process holding it, or set "
                               "tls.http_port to a free port (0: no plain-http port)"))
    return out


def status_doc(cfg: Config) -> dict[str, object] | None:
    """What `hubsvc status` shows about the certificate CHP serves."""
    if cfg.tls.mode == "off":
        return None
    d = private_dir(cfg)
    try:
        chain = x509.load_pem_x509_certificates((d / CERT_NAME).read_bytes())
    except (OSError, ValueError) as e:
        return {"mode": cfg.tls.mode, "error": f"no certificate installed ({e})"}
    leaf = chain[0]
    state, sentence = expiry(leaf)
    return {"mode": cfg.tls.mode, "not_after": leaf.not_valid_after_utc.timestamp(),
            "expiry": state, "summary": sentence, "names": names(leaf),
            "issuer": leaf.issuer.rfc4514_string()}


class SourceWatch:
    """Periodic: when the certificate files change on disk (certbot, certmonger renewed
    them), reload hubsvc so CHP restarts with them. Reads the files at most once a minute."""

    every_s = 60.0

    def __init__(self, sup: object, reload: object = None,
                 acme_state: dict[str, object] | None = None):
        import time

        self.sup = sup
        self.acme_state = acme_state
        self._clock = time.monotonic
        self._next = self._clock() + self.every_s
        self._reload = reload or _reload_self
        self.__name__ = "tls_source_watch"

    async def __call__(self) -> None:
        cfg: Config = self.sup.cfg  # type: ignore[attr-defined]
        extra: dict[str, object] = self.sup.extra_status  # type: ignore[attr-defined]
        doc = status_doc(cfg)
        if doc is not None and self.acme_state:
            doc["acme"] = {k: self.acme_state.get(k) for k in
                           ("last_error", "next_attempt_at", "last_success_at", "failures")}
        if doc != extra.get("tls"):
            if doc is None:
                extra.pop("tls", None)
            else:
                extra["tls"] = doc
            self.sup.publish()  # type: ignore[attr-defined]
        if self._clock() < self._next:
            return
        self._next = self._clock() + self.every_s
        if changed_on_disk(cfg):
            import structlog

            structlog.get_logger("hubsvc").info(
                "tls_certificate_changed", source=str(source(cfg).cert_file),  # type: ignore[union-attr]
                action="reloading: CHP restarts with the new certificate")
            self._reload()  # type: ignore[operator]


def _reload_self() -> None:
    import signal

    os.kill(os.getpid(), signal.SIGHUP)  # the supervisor's reload path (as `systemctl reload`)


def changed_on_disk(cfg: Config) -> bool:
    """True when the source certificate/key differ from the copy CHP serves."""
    src = source(cfg)
    if src is None:
        return False
    try:
        ins = inspect(src)
    except TlsError:
        return False  # a half-written renewal: keep serving the copy; doctor reports it
    d = private_dir(cfg)
    try:
        current = digest_of((d / CERT_NAME).read_bytes(), (d / KEY_NAME).read_bytes())
    except OSError:
        return True
    return current != digest_of(ins.chain_pem(), ins.key_pem)


def attach(sup: object) -> None:
    """Register hubsvc's TLS duties with the supervisor (called once from `hubsvc run`)."""
    cfg: Config = sup.cfg  # type: ignore[attr-defined]
    doc = status_doc(cfg)
    if doc is not None:
        sup.extra_status["tls"] = doc  # type: ignore[attr-defined]
    acme_state = None
    if cfg.tls.mode == "acme":
        from . import acme

        acme_state = acme.attach(sup).state
    sup.periodic.append(SourceWatch(sup, acme_state=acme_state))  # type: ignore[attr-defined]
