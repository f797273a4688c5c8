"""Certificates from an ACME CA (Let's Encrypt), obtained and renewed by hubsvc.

The protocol is the `acme` library's (the one certbot is built on; keys and JWS by
`josepy`/`cryptography`): hubsvc only decides *when* and keeps the files.

- Files, in `<state_dir>/acme/` (0700): `account.key` (0600) and `account.json` (the
  account's URL at the CA), `key.pem` (0600) and `cert.pem` (the full chain) CHP serves
  through `hubsvc.tls`, `state.json` (the last attempt, so a restarted hubsvc keeps the
  back-off instead of asking the CA again at once).
- Challenge: http-01, answered by hubsvc's own small listener on `tls.http_port`, which
  redirects every other request to https (CHP's own redirect listener cannot answer a
  challenge). It runs in the supervisor's event loop and reads at most one request head
  of 8 KiB per connection, with a timeout.
- When: the periodic hook asks at every health interval whether a certificate is due
  (none yet, the temporary self-signed stand-in, other names than configured, or
  `renew_after` of its lifetime passed). One attempt at a time, in a worker thread; a
  failed attempt waits `retry_s`, doubling up to a day. A new certificate reloads hubsvc
  (SIGHUP, the path of `systemctl reload`): CHP restarts with it and its routes are
  restored at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from . import certs, tls
from .config import Config
from .doctor.finding import Finding, for_group

if TYPE_CHECKING:
    from .doctor.context import Ctx

log = structlog.get_logger("hubsvc")

CHALLENGE_PREFIX = "/.well-known/acme-challenge/"
ACCOUNT_KEY = "account.key"
ACCOUNT_JSON = "account.json"
STATE_JSON = "state.json"
ATTEMPT_TIMEOUT_S = 300.0
MAX_RETRY_S = 86400.0


class AcmeFailure(Exception):
    """An attempt failed; the message is one line for a person (and the journal)."""


def domains(cfg: Config) -> list[str]:
    return list(cfg.tls.acme.domains) or [cfg.public.host]


def ensure_dir(cfg: Config) -> Path:
    d = tls.acme_dir(cfg)
    d.mkdir(mode=0o700, parents=False, exist_ok=True)
    os.chmod(d, 0o700)
    return d


# ---- when ------------------------------------------------------------------------------
def current(cfg: Config) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificates((tls.acme_dir(cfg) / tls.CERT_NAME).read_bytes())[0]
    except (OSError, ValueError, IndexError):
        return None


def is_placeholder(cert: x509.Certificate) -> bool:
    return cert.subject.rfc4514_string().endswith(tls.PLACEHOLDER_MARK) and certs.self_signed(cert)


def why_due(cfg: Config, now: dt.datetime | None = None) -> str | None:
    """Why a certificate should be requested now, or None."""
    cert = current(cfg)
    if cert is None:
        return "no certificate yet"
    if is_placeholder(cert):
        return "serving the temporary self-signed certificate"
    missing = [d for d in domains(cfg) if not certs.covers(cert, d)]
    if missing:
        return f"the certificate does not cover {', '.join(missing)}"
    now = now or dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    renew_at = start + (end - start) * cfg.tls.acme.renew_after
    if now >= renew_at:
        return f"{cfg.tls.acme.renew_after:.0%} of its lifetime passed (renew from {renew_at:%Y-%m-%d})"
    return None


# ---- the temporary certificate -----------------------------------------------------------
def ensure_placeholder(cfg: Config, now: dt.datetime | None = None) -> bool:
    """Until the CA has issued, CHP serves a self-signed certificate for the configured
    names (it cannot start https without one). True when one was written."""
    d = ensure_dir(cfg)
    if (d / tls.CERT_NAME).exists() and (d / tls.KEY_NAME).exists():
        cert = current(cfg)
        # a stand-in that ran out while the CA kept failing is made anew; a real
        # certificate is never replaced here
        if cert is None or not is_placeholder(cert) or cert.not_valid_after_utc > (
                now or dt.datetime.now(dt.UTC)):
            return False
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name.from_rfc4514_string(f"CN={domains(cfg)[0]},{tls.PLACEHOLDER_MARK}")
    now = now or dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=7))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in domains(cfg)]), critical=False)
            .sign(key, _sha256()))
    tls.write_private(d / tls.KEY_NAME, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    tls.write_private(d / tls.CERT_NAME, cert.public_bytes(serialization.Encoding.PEM))
    return True


def _sha256() -> Any:
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256()


# ---- the protocol (the acme library) ------------------------------------------------------
def _account_key(d: Path) -> Any:
    import josepy as jose

    path = d / ACCOUNT_KEY
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        tls.write_private(path, key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    assert isinstance(key, rsa.RSAPrivateKey)
    return jose.JWKRSA(key=key)


def _client(cfg: Config, d: Path) -> tuple[Any, Any]:
    from acme import client, messages

    jwk = _account_key(d)
    verify: bool | str = str(cfg.tls.acme.ca_bundle) if cfg.tls.acme.ca_bundle else True
    net = client.ClientNetwork(jwk, user_agent="hubsvc", verify_ssl=verify, timeout=30)
    try:
        directory = client.ClientV2.get_directory(cfg.tls.acme.directory_url, net)
    except Exception as e:
        raise AcmeFailure(f"cannot read the ACME directory {cfg.tls.acme.directory_url}: "
                          f"{_one_line(e)}") from None
    acme = client.ClientV2(directory, net)
    acct = d / ACCOUNT_JSON
    regr = None
    with contextlib.suppress(OSError, ValueError):
        saved = json.loads(acct.read_text())
        if saved.get("directory_url") == cfg.tls.acme.directory_url:
            regr = messages.RegistrationResource(uri=saved["uri"], body=messages.Registration())
    try:
        if regr is not None:
            net.account = regr
            acme.query_registration(regr)  # still valid at the CA?
        else:
            raise LookupError
    except Exception:
        new = messages.NewRegistration.from_data(email=cfg.tls.acme.email or None,
                                                 terms_of_service_agreed=True)
        try:
            regr = acme.new_account(new)
        except Exception as e:
            if type(e).__name__ == "ConflictError":  # the key already has an account
                regr = messages.RegistrationResource(uri=str(e), body=messages.Registration())
                net.account = regr
            else:
                raise AcmeFailure(f"the CA refused to create the account: {_one_line(e)}") from None
        tmp = acct.with_suffix(".tmp")
        tmp.write_text(json.dumps({"uri": regr.uri, "directory_url": cfg.tls.acme.directory_url}))
        os.replace(tmp, acct)
        log.info("acme_account", uri=regr.uri, email=cfg.tls.acme.email or None)
    return acme, jwk


def obtain(cfg: Config, answers: dict[str, str], timeout: float = ATTEMPT_TIMEOUT_S) -> x509.Certificate:
    """One order: account, http-01 challenges answered through `answers` (token → key
    authorization, served by ChallengeServer), finalize, download the full chain. Writes
    key.pem and cert.pem only when all of it worked. Blocking: run it in a thread."""
    from acme import challenges, crypto_util, errors, messages

    d = ensure_dir(cfg)
    names = domains(cfg)
    acme, jwk = _client(cfg, d)
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    csr = crypto_util.make_csr(key_pem, names)
    try:
        order = acme.new_order(csr)
    except messages.Error as e:
        raise AcmeFailure(f"the CA refused the order for {', '.join(names)}: {_one_line(e)}") from None
    tokens = []
    try:
        for authz in order.authorizations:
            if authz.body.status == messages.STATUS_VALID:
                continue
            http = [c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)]
            if not http:
                raise AcmeFailure(f"the CA offers no http-01 challenge for "
                                  f"{authz.body.identifier.value}")
            chall = http[0]
            response, validation = chall.response_and_validation(jwk)
            token = chall.chall.encode("token")
            answers[token] = validation
            tokens.append(token)
            acme.answer_challenge(chall, response)
        deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
        try:
            order = acme.poll_and_finalize(order, deadline)
        except errors.ValidationError as e:
            raise AcmeFailure(_validation_text(e)) from None
        except errors.TimeoutError:
            raise AcmeFailure(f"the CA did not finish the order within {timeout:g}s") from None
        except messages.Error as e:
            raise AcmeFailure(f"the CA refused to issue: {_one_line(e)}") from None
    finally:
        for t in tokens:
            answers.pop(t, None)
    chain_pem = order.fullchain_pem.encode()
    cert = x509.load_pem_x509_certificates(chain_pem)[0]
    tls.write_private(d / tls.KEY_NAME, key_pem)
    tls.write_private(d / tls.CERT_NAME, chain_pem)
    return cert


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text[:400]


def _validation_text(e: Any) -> str:
    parts = []
    for authzr in getattr(e, "failed_authzrs", []):
        for c in authzr.body.challenges:
            if c.error is not None:
                parts.append(f"{authzr.body.identifier.value}: {c.error.typ.rsplit(':', 1)[-1]}: "
                             f"{c.error.detail}")
    return "challenge failed: " + ("; ".join(parts) or _one_line(e))


# ---- the plain-http listener ---------------------------------------------------------------
class ChallengeServer:
    """tls.http_port with ACME: answers http-01 challenges, redirects the rest to https."""

    def __init__(self, cfg: Config, answers: dict[str, str]):
        self.cfg = cfg
        self.answers = answers
        self.server: asyncio.Server | None = None

    async def start(self) -> None:
        host = self.cfg.public.host
        self.server = await asyncio.start_server(self._handle, host or None, self.cfg.tls.http_port,
                                                 reuse_address=True, limit=8192)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status, headers, body = self.respond(head)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError):
            status, headers, body = "400 Bad Request", {}, b"bad request\n"
        head_out = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close",
                    *(f"{k}: {v}" for k, v in headers.items())]
        with contextlib.suppress(ConnectionError):
            writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode() + body)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def respond(self, head: bytes) -> tuple[str, dict[str, str], bytes]:
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, _version = lines[0].split(" ")
        except ValueError:
            return "400 Bad Request", {}, b"bad request\n"
        host = ""
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "host":
                host = v.strip()
        if method not in ("GET", "HEAD") or not target.startswith("/"):
            return "405 Method Not Allowed", {"Allow": "GET, HEAD"}, b"https only\n"
        if target.startswith(CHALLENGE_PREFIX):
            answer = self.answers.get(target[len(CHALLENGE_PREFIX):])
            if answer is None:
                return "404 Not Found", {}, b"no such challenge\n"
            body = answer.encode()
            return "200 OK", {"Content-Type": "text/plain"}, body if method == "GET" else b""
        name = (host.rsplit(":", 1)[0] if not host.endswith("]") else host).lower()
        if not name:
            return "400 Bad Request", {}, b"this server is https only; no Host header\n"
        # only to a name the certificate is for: a forged Host header cannot make this
        # listener redirect anywhere else
        names = domains(self.cfg)
        name = name if name in names else names[0]
        port = self.cfg.public.port
        return "301 Moved Permanently", {
            "Location": f"https://{name}{'' if port == 443 else f':{port}'}{target}"}, b""


# ---- the periodic hook -------------------------------------------------------------------------
class Renewer:
    """Obtains a certificate when one is due: one attempt at a time, back-off on failure."""

    def __init__(self, sup: Any, answers: dict[str, str],
                 reload: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.time):
        self.sup = sup
        self.answers = answers
        self.reload = reload or tls._reload_self
        self.clock = clock
        self.task: asyncio.Task[None] | None = None
        self.state: dict[str, Any] = {}
        self.__name__ = "acme_renewer"
        with contextlib.suppress(OSError, ValueError):
            self.state = json.loads((tls.acme_dir(sup.cfg) / STATE_JSON).read_text())

    async def __call__(self) -> None:
        if self.task is not None and not self.task.done():
            return
        cfg: Config = self.sup.cfg
        if cfg.tls.mode != "acme":
            return
        if self.clock() < float(self.state.get("next_attempt_at") or 0):
            return
        why = why_due(cfg)
        if why is None:
            return
        self.task = asyncio.create_task(self.attempt(cfg, why))

    async def attempt(self, cfg: Config, why: str) -> bool:
        """One attempt; True when a new certificate was written (and hubsvc reloads)."""
        log.info("acme_attempt", reason=why, domains=domains(cfg),
                 directory=cfg.tls.acme.directory_url)
        self.state["last_attempt_at"] = self.clock()
        try:
            cert = await asyncio.wait_for(asyncio.to_thread(obtain, cfg, self.answers),
                                          ATTEMPT_TIMEOUT_S + 30)
        except (AcmeFailure, TimeoutError, Exception) as e:
            failures = int(self.state.get("failures") or 0) + 1
            wait = min(cfg.tls.acme.retry_s * 2 ** (failures - 1), MAX_RETRY_S)
            reason = str(e) if isinstance(e, AcmeFailure) else f"{type(e).__name__}: {_one_line(e)}"
            self.state.update(failures=failures, last_error=reason,
                              next_attempt_at=self.clock() + wait)
            log.error("acme_failed", reason=reason, retry_in_s=round(wait),
                      fix="see `hubsvc doctor` (group tls)")
            self._save(cfg)
            if ensure_placeholder(cfg):  # the stand-in ran out: the file watch reloads CHP
                log.warning("acme_placeholder_renewed", reason="no certificate from the CA yet")
            return False
        self.state.update(failures=0, last_error=None, next_attempt_at=None,
                          last_success_at=self.clock(),
                          not_after=cert.not_valid_after_utc.timestamp())
        self._save(cfg)
        log.info("acme_issued", domains=certs.names(cert),
                 not_after=f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                 action="reloading: CHP restarts with the new certificate")
        self.reload()
        return True

    def _save(self, cfg: Config) -> None:
        path = tls.acme_dir(cfg) / STATE_JSON
        with contextlib.suppress(OSError):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state))
            os.replace(tmp, path)


async def renew_if_due(cfg: Config, answers: dict[str, str],
                       now: dt.datetime | None = None) -> bool:
    """Obtain a certificate when one is due (for callers outside the supervisor, e.g.
    tests). The answers dict must be served by a running ChallengeServer."""
    if why_due(cfg, now) is None:
        return False
    await asyncio.to_thread(obtain, cfg, answers)
    return True


def attach(sup: Any) -> Renewer:
    """Start the challenge listener with the supervisor and register the renewer."""
    answers: dict[str, str] = {}
    server = ChallengeServer(sup.cfg, answers)

    async def start_challenge_listener() -> None:
        await server.start()
        log.info("acme_listener", port=sup.cfg.tls.http_port, host=sup.cfg.public.host)

    sup.on_start.append(start_challenge_listener)
    sup.on_stop.append(server.close)
    renewer = Renewer(sup, answers)
    sup.periodic.append(renewer)
    return renewer


# ---- doctor --------------------------------------------------------------------------------
_f = for_group("tls")


def doctor_findings(ctx: Ctx) -> list[Finding]:
    cfg = ctx.cfg
    d = tls.acme_dir(cfg)
    out: list[Finding] = []
    key = d / ACCOUNT_KEY
    if key.exists():
        mode = key.stat().st_mode & 0o777
        if mode & 0o077:
            out.append(_f("acme.account_key", "error", "the ACME account key is readable by "
                          "others", f"{key}: mode {mode:04o}", f"`chmod 600 {key}`"))
        else:
            out.append(_f("acme.account_key", "ok", f"ACME account key {key} (mode {mode:04o})"))
    state: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        state = json.loads((d / STATE_JSON).read_text())
    acct: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        acct = json.loads((d / ACCOUNT_JSON).read_text())
    if acct and acct.get("directory_url") != cfg.tls.acme.directory_url:
        out.append(_f("acme.account", "warning", "the ACME account was made at another CA",
                      f"account at {acct.get('directory_url')}, tls.acme.directory_url = "
                      f"{cfg.tls.acme.directory_url}", "nothing to do: hubsvc registers anew "
                      "at the configured CA on its next attempt"))
    if state.get("last_error"):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(state.get("last_attempt_at") or 0))
        nxt = state.get("next_attempt_at")
        out.append(_f("acme.attempt", "error", "the last ACME attempt failed",
                      f"{when}: {state['last_error']}"
                      + (time.strftime("; next attempt %Y-%m-%d %H:%M:%S", time.localtime(nxt))
                         if nxt else ""),
                      _acme_fix(cfg, str(state["last_error"]))))
    elif state.get("last_success_at"):
        out.append(_f("acme.attempt", "ok", "the last ACME attempt succeeded",
                      time.strftime("%Y-%m-%d %H:%M:%S",
                                    time.localtime(state["last_success_at"]))))
    elif not (d / tls.CERT_NAME).exists():
        out.append(_f("acme.attempt", "warning", "no ACME certificate has been requested yet",
                      f"{d} holds no {tls.CERT_NAME}", "start hubsvc: it requests one at once"))
    return out


def _acme_fix(cfg: Config, error: str) -> str:
    port = cfg.tls.http_port
    names = ", ".join(domains(cfg))
    if "connection" in error or "Connection refused" in error or "timeout" in error.lower():
        return (f"the CA must reach http://{names}:{port if port != 80 else ''}"
                f"{CHALLENGE_PREFIX}…: point the name's DNS at this host and open port "
                f"{port}/tcp in the firewall (`firewall-cmd --permanent --add-service=http && "
                "firewall-cmd --reload`)")
    if "dns" in error.lower() or "NXDOMAIN" in error:
        return f"give {names} a DNS record (A/AAAA) pointing at this host"
    if "rateLimited" in error or "too many" in error.lower():
        return "Let's Encrypt's rate limit: wait for the time it names; hubsvc backs off"
    if "directory" in error:
        return (f"check tls.acme.directory_url ({cfg.tls.acme.directory_url}) and that this "
                "host reaches it over https (proxy, firewall, tls.acme.ca_bundle for a "
                "private CA)")
    return "read the CA's words in the evidence; hubsvc retries with back-off"
