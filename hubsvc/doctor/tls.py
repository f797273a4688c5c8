"""The doctor's "tls" group: is the certificate CHP serves one browsers accept, and can
it stay so? Each finding carries the evidence and the fix.

Checks: files readable and usable, key matching the certificate, chain complete, expiry
(expired, or within 14 days), names covering the public host, key file permissions, the
plain-http port and the https port held by someone else, what CHP serves now versus the
files, and (ACME) the account, the last attempt and the CA's directory.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from .. import ports, tls
from .context import Ctx
from .finding import Finding, for_group

if TYPE_CHECKING:
    from cryptography import x509

    from ..certs import Inspected

_f = for_group("tls")


def check(ctx: Ctx, trust: list[x509.Certificate] | None = None,
          now: dt.datetime | None = None) -> list[Finding]:
    cfg = ctx.cfg
    if cfg.tls.mode == "off":
        return _off(ctx)  # without importing cryptography
    from .. import certs
    out: list[Finding] = []
    src = tls.source(cfg)
    assert src is not None
    out += _key_mode(src.key_file, src.key_field)
    if cfg.tls.mode == "acme":
        from .. import acme

        out += acme.doctor_findings(ctx)
        if not src.cert_file.exists():
            return out  # nothing issued yet: acme's findings say why
    try:
        ins = certs.inspect(src)
    except tls.TlsError as e:
        p = e.problem
        return [*out, _f("files", "error", p.message, p.evidence, p.fix, True)]
    leaf = ins.leaf
    out.append(_f("files", "ok", f"certificate and key belong together ({src.cert_file})",
                  certs.describe(leaf)))
    if (cfg.tls.mode == "acme" and certs.self_signed(leaf)
            and leaf.subject.rfc4514_string().endswith(tls.PLACEHOLDER_MARK)):
        out.append(_f("acme.placeholder", "error",
                      "CHP serves a temporary self-signed certificate: the ACME CA has not "
                      "issued one yet", certs.describe(leaf),
                      "see the tls.acme findings above and `journalctl -u hubsvc | grep acme`"))
        return out
    out += _chain(ins.chain, trust if trust is not None else certs.load_trust())
    out += _expiry(ctx, leaf, now)
    out += _names(ctx, leaf)
    if not certs.server_auth_ok(leaf):
        out.append(_f("usage", "error", "the certificate is not meant for web servers "
                      "(its extended key usage lacks serverAuth)", certs.describe(leaf),
                      "ask the CA for a TLS server certificate"))
    out += _ports(ctx)
    out += _served(ctx, ins)
    return out


def _off(ctx: Ctx) -> list[Finding]:
    pub = ctx.cfg.public
    if pub.scheme == "https":
        return [_f("mode", "warning", "proxy.public_url is https but [tls] is off: TLS is set up "
                   "by hand", f"proxy.public_url = {ctx.cfg.proxy.public_url}",
                   "set [tls] mode = \"files\" with cert_file and key_file (hubsvc then gets "
                   "the key to CHP without loosening its permissions)")]
    if pub.is_loopback:
        return []
    return [_f("mode", "warning", "users log in over plain http: their passwords cross the "
               "network in clear text", f"proxy.public_url = {ctx.cfg.proxy.public_url}",
               "turn on [tls] in hubsvc.toml (mode = \"files\" or \"acme\") and make "
               "proxy.public_url https://")]


def _key_mode(key: Path, field: str) -> list[Finding]:
    try:
        st = key.stat()
    except OSError:
        return []  # missing/unreadable: reported by the files check
    mode = stat.S_IMODE(st.st_mode)
    ev = f"{key}: mode {mode:04o}, owner uid {st.st_uid}, group gid {st.st_gid}"
    if mode & 0o004:
        return [_f("key_mode", "error", "the private key is readable by every account on "
                   "this host", ev, f"`chmod 600 {key}` (root-only is fine: hubsvc hands CHP "
                   "its own copy); consider the key exposed and have the certificate reissued")]
    if mode & 0o040:
        return [_f("key_mode", "warning", "the private key is readable by its group", ev,
                   f"unless that group is meant to read keys (e.g. ssl-cert), `chmod 600 {key}`")]
    return [_f("key_mode", "ok", "the private key is readable by its owner only", ev)]


def _chain(chain: list[x509.Certificate], trust: list[x509.Certificate] | None) -> list[Finding]:
    from .. import certs

    gap = certs.chain_gap(chain, trust)
    ev = " <- ".join(c.subject.rfc4514_string() for c in chain)
    if gap is None:
        return [_f("chain", "ok", f"the chain is complete ({len(chain)} certificate"
                   f"{'s' if len(chain) > 1 else ''})", ev)]
    if gap.startswith("self-signed"):
        return [_f("chain", "warning", f"the certificate is {gap}", ev,
                   "use a certificate from a CA the users' browsers trust (tls.mode = \"acme\", "
                   "or your organisation's CA)")]
    return [_f("chain", "error", f"the chain is incomplete: {gap}", ev,
               "append the intermediate certificate(s) to tls.cert_file (certbot: use "
               "fullchain.pem) or name them in tls.chain_file; browsers other than those that "
               "fetch missing intermediates reject the site")]


def _expiry(ctx: Ctx, leaf: x509.Certificate, now: dt.datetime | None) -> list[Finding]:
    from .. import certs

    state, sentence = certs.expiry(leaf, now)
    renew = ("hubsvc renews it itself; see the tls.acme findings for why it has not"
             if ctx.cfg.tls.mode == "acme" else
             "renew it (certbot renew / getcert resubmit / your CA), then `systemctl reload "
             "hubsvc` (hubsvc also notices new files within a minute)")
    if state == "expired":
        return [_f("expiry", "error", f"the certificate {sentence}: browsers refuse the site",
                   certs.describe(leaf), renew, True)]
    if state == "not_yet_valid":
        return [_f("expiry", "error", f"the certificate is {sentence}", certs.describe(leaf),
                   "check this host's clock (`timedatectl`) or wait for the validity start")]
    if state == "expiring":
        return [_f("expiry", "warning", f"the certificate {sentence}", certs.describe(leaf), renew)]
    return [_f("expiry", "ok", f"the certificate is {sentence}")]


def _names(ctx: Ctx, leaf: x509.Certificate) -> list[Finding]:
    from .. import certs

    host = ctx.cfg.public.host
    names = certs.names(leaf)
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
        if not host or host == "localhost":
            return [_f("names", "ok", f"the certificate names {', '.join(names)}; "
                       "proxy.public_url binds every address, so the name users open is "
                       "not known here")]
    if certs.covers(leaf, host):
        return [_f("names", "ok", f"the certificate covers {host}", ", ".join(names))]
    return [_f("names", "error", f"the certificate does not cover {host}, the host of "
               "proxy.public_url: browsers show a name mismatch",
               f"certificate names: {', '.join(names) or '(none; no subjectAltName)'}",
               f"have the certificate issued for {host} (as a subjectAltName), or set "
               "proxy.public_url to a name it covers")]


def _ours(ctx: Ctx, holder: ports.Holder) -> bool:
    if holder.pid is None:
        return False
    if holder.pid in ctx.our_pids:
        return True
    comps = (ctx.status or {}).get("components") or {}
    return holder.pid in {c.get("pid") for c in comps.values() if isinstance(c, dict)}


def _ports(ctx: Ctx) -> list[Finding]:
    cfg = ctx.cfg
    out: list[Finding] = []
    wanted = [("https_port", "proxy.public_url", cfg.public.host, cfg.public.port)]
    if cfg.tls.http_port:
        wanted.append(("http_port", "tls.http_port", tls.http_bind_host(cfg), cfg.tls.http_port))
    for id, field, host, port in wanted:
        holder = ports.port_holder(host, port)
        if holder is None:
            if id == "http_port":
                out.append(_f(id, "ok" if not ctx.supervisor_alive else "warning",
                              f"nothing listens on the plain-http port {port}"
                              + (" although hubsvc runs" if ctx.supervisor_alive else ""),
                              "", "" if not ctx.supervisor_alive else
                              "look at `journalctl -u hubsvc -u hubsvc-proxy`"))
            continue  # the https port: the ports group reports it
        if _ours(ctx, holder):
            out.append(_f(id, "ok", f"port {port} ({field}) is held by hubsvc",
                          holder.describe()))
            continue
        if holder.pid is None and ctx.supervisor_alive:
            out.append(_f(id, "skipped", f"port {port} ({field}) is held by a process this "
                          "account cannot identify", holder.describe(),
                          "run the doctor as root"))
            continue
        if id == "https_port":
            continue  # the ports group reports another process on the public port
        out.append(_f(id, "error", f"port {port} ({field}) is held by another process: no "
                      "redirect to https" + (" and no ACME challenge" if cfg.tls.mode == "acme"
                                            else ""), holder.describe(),
                      f"stop it (a web server left on port {port}? `systemctl status "
                      f"{holder.pid or 'PID'}` names its unit) or set tls.http_port to another "
                      "port (0: none)", True))
    return out


def _served(ctx: Ctx, ins: Inspected) -> list[Finding]:
    """What CHP serves now, compared with the files: a renewal not yet applied."""
    if not ctx.supervisor_alive:
        return []
    pub = ctx.cfg.public
    ctxs = ssl.create_default_context()
    ctxs.check_hostname = False
    ctxs.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((pub.connect_host, pub.port), timeout=3) as s, \
                ctxs.wrap_socket(s, server_hostname=pub.host if not _is_ip(pub.host) else None) as t:
            der = t.getpeercert(binary_form=True)
    except OSError as e:
        return [_f("served", "error", f"no TLS handshake on {pub.connect_host}:{pub.port}",
                   f"{type(e).__name__}: {e}", "look at `journalctl -u hubsvc -u hubsvc-proxy`")]
    if not der:
        return []
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    from .. import certs

    served = x509.load_der_x509_certificate(der)
    if served.fingerprint(hashes.SHA256()) == ins.leaf.fingerprint(hashes.SHA256()):
        return [_f("served", "ok", "CHP serves the certificate in the files")]
    return [_f("served", "warning", "CHP serves another certificate than the one in the files "
               "(a renewal not applied yet)", f"served: {certs.describe(served)}; files: "
               f"{certs.describe(ins.leaf)}", "`systemctl reload hubsvc` (hubsvc also notices "
               "new files within a minute)")]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
