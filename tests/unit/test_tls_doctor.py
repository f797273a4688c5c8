"""The doctor's tls group, the ACME listener's answers, renewal timing and the watch for
new certificate files: pure logic over a throwaway CA's files, no processes."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from hubsvc import acme, config, tls
from hubsvc.doctor.context import make_ctx
from hubsvc.doctor.finding import Finding
from hubsvc.doctor.tls import check
from hubsvc.host import Account
from tests.tlsca import CA


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


def make_cfg(tmp_path: Path, public: str = "https://hub.example.org/", **tls_kw: Any) -> config.Config:
    for d in ("state", "run"):
        (tmp_path / d).mkdir(exist_ok=True)
    return config.parse({"paths": {"state_dir": str(tmp_path / "state"),
                                   "runtime_dir": str(tmp_path / "run")},
                         "proxy": {"public_url": public}, "tls": tls_kw})


def findings(cfg: config.Config, ca: CA, **kw: Any) -> dict[str, Finding]:
    ctx = make_ctx(cfg, Account.from_uid(0, "root"))
    return {f.id: f for f in check(ctx, trust=[ca.root], **kw)}


def files_cfg(tmp_path: Path, ca: CA, *hosts: str, full_chain: bool = True, key_mode: int = 0o600,
              days: float = 90, public: str = "https://hub.example.org/") -> config.Config:
    cert, key = ca.write(tmp_path / "pki", ca.server(*hosts, days=days), full_chain=full_chain,
                         key_mode=key_mode)
    return make_cfg(tmp_path, public, mode="files", cert_file=str(cert), key_file=str(key))


def test_healthy_certificate(tmp_path: Path, ca: CA) -> None:
    f = findings(files_cfg(tmp_path, ca, "hub.example.org"), ca)
    for id in ("tls.files", "tls.key_mode", "tls.chain", "tls.expiry", "tls.names"):
        assert f[id].severity == "ok", f[id]
    assert not [x for x in f.values() if x.severity in ("error", "warning")]


def test_each_problem_has_evidence_and_fix(tmp_path: Path, ca: CA) -> None:
    cfg = files_cfg(tmp_path, ca, "other.example.org", full_chain=False, key_mode=0o644, days=5)
    f = findings(cfg, ca)
    assert f["tls.key_mode"].severity == "error" and "0644" in f["tls.key_mode"].evidence
    assert "chmod 600" in f["tls.key_mode"].fix
    assert f["tls.chain"].severity == "error" and "intermediate" in f["tls.chain"].what
    assert "fullchain.pem" in f["tls.chain"].fix
    assert f["tls.expiry"].severity == "warning" and "expires in" in f["tls.expiry"].what
    assert f["tls.names"].severity == "error" and "hub.example.org" in f["tls.names"].what
    assert "other.example.org" in f["tls.names"].evidence
    # expired (judged at a later "now")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=6)
    assert findings(cfg, ca, now=later)["tls.expiry"].severity == "error"


def test_mismatched_key_blocks_start(tmp_path: Path, ca: CA) -> None:
    cfg = files_cfg(tmp_path, ca, "hub.example.org")
    _, other_key = ca.write(tmp_path / "other", ca.server("hub.example.org"))
    cfg = cfg.model_copy(update={"tls": cfg.tls.model_copy(update={"key_file": other_key})})
    f = findings(cfg, ca)["tls.files"]
    assert f.severity == "error" and f.blocks_start and "does not belong" in f.what
    assert tls.preflight_problems(cfg)[0].field == "tls.key_file"


def test_http_port_held_by_another_process(tmp_path: Path, ca: CA) -> None:
    import socket

    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", 0))
    s.listen()
    port = s.getsockname()[1]
    try:
        cert, key = ca.write(tmp_path / "pki", ca.server("hub.example.org"))
        cfg = make_cfg(tmp_path, mode="files", cert_file=str(cert), key_file=str(key),
                       http_port=port)
        f = findings(cfg, ca)["tls.http_port"]
        assert f.severity == "error" and f"port {port}" in f.what and "pid" in f.evidence
        p = tls.preflight_problems(cfg)
        assert [x.field for x in p] == ["tls.http_port"]
    finally:
        s.close()


def test_plain_http_on_the_network_warns(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, public="http://0.0.0.0:8000")
    ctx = make_ctx(cfg, Account.from_uid(0, "root"))
    f = check(ctx)
    assert [x.id for x in f] == ["tls.mode"] and "clear text" in f[0].what
    assert check(make_ctx(make_cfg(tmp_path, public="http://127.0.0.1:8000"))) == []


# ---- ACME: when, and the plain-http listener ------------------------------------------------
def test_acme_placeholder_and_due(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, mode="acme", http_port=80)
    assert acme.why_due(cfg) == "no certificate yet"
    ins = tls.install(cfg)  # CHP can start before the CA issued anything
    assert ins is not None and ins.names == ("hub.example.org",)
    assert acme.why_due(cfg) == "serving the temporary self-signed certificate"
    assert (tls.acme_dir(cfg) / "key.pem").stat().st_mode & 0o777 == 0o600
    assert not acme.ensure_placeholder(cfg)  # kept while valid
    first = acme.current(cfg)
    assert first is not None and acme.is_placeholder(first)
    # an expired stand-in (the CA failing for over a week) is made anew
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    assert acme.ensure_placeholder(cfg, now=later)
    second = acme.current(cfg)
    assert second is not None and second.not_valid_after_utc > later


def test_acme_renewal_time(tmp_path: Path, ca: CA) -> None:
    cfg = make_cfg(tmp_path, mode="acme", http_port=80)
    d = tls.acme_dir(cfg)
    d.mkdir(mode=0o700)
    srv = ca.server("hub.example.org", days=90, start_days_ago=0)
    ca.write(d, srv)
    start = srv.cert.not_valid_before_utc
    assert acme.why_due(cfg, start + dt.timedelta(days=59)) is None
    assert "lifetime passed" in (acme.why_due(cfg, start + dt.timedelta(days=61)) or "")
    other = make_cfg(tmp_path, mode="acme", http_port=80,
                     acme={"domains": ["hub.example.org", "jupyter.example.org"]})
    assert acme.why_due(other) == "the certificate does not cover jupyter.example.org"


def test_challenge_listener_answers(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, public="https://hub.example.org:8443/", mode="acme", http_port=80)
    srv = acme.ChallengeServer(cfg, {"tok": "tok.thumb"})
    req = b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: hub.example.org\r\n\r\n"
    assert srv.respond(req) == ("200 OK", {"Content-Type": "text/plain"}, b"tok.thumb")
    assert srv.respond(req.replace(b"/tok ", b"/nope "))[0] == "404 Not Found"
    st, hdrs, _ = srv.respond(b"GET /hub/login?next=%2F HTTP/1.1\r\nHost: hub.example.org:80\r\n\r\n")
    assert st.startswith("301") and hdrs["Location"] == "https://hub.example.org:8443/hub/login?next=%2F"
    assert srv.respond(b"GET / HTTP/1.0\r\n\r\n")[0] == "400 Bad Request"
    _, hdrs, _ = srv.respond(b"GET /x HTTP/1.1\r\nHost: evil.example.com\r\n\r\n")
    assert hdrs["Location"] == "https://hub.example.org:8443/x"  # never to another host
    assert srv.respond(b"POST / HTTP/1.1\r\nHost: a\r\n\r\n")[0].startswith("405")


def test_source_watch_reloads_on_new_files(tmp_path: Path, ca: CA) -> None:
    cfg = files_cfg(tmp_path, ca, "hub.example.org")
    tls.install(cfg)

    class Sup:
        def __init__(self) -> None:
            self.cfg = cfg
            self.extra_status: dict[str, Any] = {}
            self.published = 0

        def publish(self) -> None:
            self.published += 1

    sup, reloads, now = Sup(), [], [0.0]
    w = tls.SourceWatch(sup, reload=lambda: reloads.append(1))
    w._clock = lambda: now[0]
    w._next = 60.0
    asyncio.run(w())
    assert sup.extra_status["tls"]["expiry"] == "ok" and sup.published == 1 and reloads == []
    ca.write(tmp_path / "pki", ca.server("hub.example.org"))  # renewed on disk
    asyncio.run(w())
    assert reloads == []  # not before the minute is up
    now[0] = 61.0
    asyncio.run(w())
    assert reloads == [1]
