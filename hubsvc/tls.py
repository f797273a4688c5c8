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
CHP's argv carries only paths; nothing secret is logged. Reading and checking the
certificates is `hubsvc.certs` (imported only when TLS is on: `cryptography` costs
tens of milliseconds at every start).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .config import Config, Problem

DIR_NAME = "tls"
CERT_NAME = "cert.pem"  # the server certificate followed by its intermediates
KEY_NAME = "key.pem"
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


# ---- the private copy CHP reads ----------------------------------------------------------
@dataclass(frozen=True)
class Installed:
    cert_path: Path
    key_path: Path
    digest: str  # changes when the certificate or key changes (part of CHP's fingerprint)
    not_after: dt.datetime
    names: tuple[str, ...]


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` atomically with a 0600 file holding `data`."""
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
    from .certs import inspect, names

    if cfg.tls.mode == "acme":
        from . import acme

        acme.ensure_placeholder(cfg)  # CHP needs a certificate before the CA issues one
    ins = inspect(src)
    chain_pem = ins.chain_pem()
    cert_path, key_path = d / CERT_NAME, d / KEY_NAME
    write_private(key_path, ins.key_pem)
    write_private(cert_path, chain_pem)
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
    from .certs import inspect

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
    from cryptography import x509

    from .certs import expiry, names

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

    def refresh(self) -> bool:
        """The `tls` status block from the certificate on disk now; True if it changed."""
        cfg: Config = self.sup.cfg  # type: ignore[attr-defined]
        extra: dict[str, object] = self.sup.extra_status  # type: ignore[attr-defined]
        doc = status_doc(cfg)
        if doc is not None and self.acme_state:
            doc["acme"] = {k: self.acme_state.get(k) for k in
                           ("last_error", "next_attempt_at", "last_success_at", "failures")}
        if doc == extra.get("tls"):
            return False
        if doc is None:
            extra.pop("tls", None)
        else:
            extra["tls"] = doc
        return True

    async def __call__(self) -> None:
        if self.refresh():
            self.sup.publish()  # type: ignore[attr-defined]
        cfg: Config = self.sup.cfg  # type: ignore[attr-defined]
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
    from .certs import inspect

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
    watch = SourceWatch(sup, acme_state=acme_state)
    sup.periodic.append(watch)  # type: ignore[attr-defined]
    # a reload's outcome is published with the certificate CHP serves from then on, not
    # the one before it (the periodic refresh comes up to an interval later)
    sup.on_reload_end.append(watch.refresh)  # type: ignore[attr-defined]
