"""ACME against a real ACME server on loopback (Debian's pebble, http-01 validated for real):
issue, renew, a failed challenge; then hubsvc itself, started with tls.mode = "acme", serves
its temporary certificate, obtains a real one and has CHP serve it with the routes intact."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hubsvc import acme, certs, config, tls

from .hubsvc_harness import Instance, free_port, new_root
from .pebble import PEBBLE, Pebble

pytestmark = pytest.mark.integration

if not Path(PEBBLE).exists():
    pytest.skip("needs Debian's pebble (make setup installs it)", allow_module_level=True)


@pytest.fixture(scope="module")
def pebble() -> Iterator[Pebble]:
    root = new_root("hubsvc-pebble-")
    p = Pebble(root, free_port()).start()
    try:
        yield p
    finally:
        p.stop()


def acme_cfg(root: Path, p: Pebble, public_port: int | None = None) -> config.Config:
    for d in ("state", "run"):
        (root / d).mkdir(exist_ok=True)
    return config.parse({
        "paths": {"state_dir": str(root / "state"), "runtime_dir": str(root / "run")},
        "proxy": {"public_url": f"https://localhost:{public_port or free_port()}/"},
        "tls": {"mode": "acme", "http_port": p.http_port,
                "acme": {"directory_url": p.directory_url, "ca_bundle": str(p.ca_file),
                         "email": "admin@example.org", "retry_s": 5}}})


def test_issue_renew_and_failed_challenge(pebble: Pebble, tmp_path: Path) -> None:
    cfg = acme_cfg(tmp_path, pebble)

    async def scenario() -> None:
        answers: dict[str, str] = {}
        server = acme.ChallengeServer(cfg, answers)
        await server.start()
        try:
            # issue
            assert acme.why_due(cfg) == "no certificate yet"
            assert await acme.renew_if_due(cfg, answers)
            first = acme.current(cfg)
            assert first is not None and certs.covers(first, "localhost")
            assert "Pebble Intermediate" in first.issuer.rfc4514_string()
            d = tls.acme_dir(cfg)
            for f in ("account.key", "key.pem"):
                assert (d / f).stat().st_mode & 0o777 == 0o600
            account = json.loads((d / "account.json").read_text())["uri"]
            assert acme.why_due(cfg) is None and not await acme.renew_if_due(cfg, answers)
            # renew: at 2/3 of its lifetime the certificate is due again
            life = first.not_valid_after_utc - first.not_valid_before_utc
            later = first.not_valid_before_utc + life * 0.7
            assert "lifetime passed" in (acme.why_due(cfg, later) or "")
            assert await acme.renew_if_due(cfg, answers, now=later)
            second = acme.current(cfg)
            assert second is not None and second.serial_number != first.serial_number
            assert json.loads((d / "account.json").read_text())["uri"] == account  # same account
            assert answers == {}  # tokens are withdrawn after each order
        finally:
            server.close()
        # a failed challenge: nothing answers on the http-01 port. Under a new account:
        # pebble hands an account's valid authorization to a new order now and then even
        # with PEBBLE_AUTHZREUSE=0 (it reuses unless rand.Intn(100) > percent, so 1 in 100).
        d = tls.acme_dir(cfg)
        for f in ("account.key", "account.json"):
            (d / f).unlink()
        before = (d / "cert.pem").read_bytes()
        with pytest.raises(acme.AcmeFailure) as e:
            await asyncio.to_thread(acme.obtain, cfg, {})
        assert e.value.args[0].startswith("challenge failed: localhost: connection"), e.value
        assert (d / "cert.pem").read_bytes() == before  # kept
        assert json.loads((d / "account.json").read_text())["uri"] != account  # a new account

    asyncio.run(scenario())


def test_renewer_backs_off_and_doctor_says_why(pebble: Pebble, tmp_path: Path) -> None:
    cfg = acme_cfg(tmp_path, pebble)
    acme.ensure_placeholder(cfg)

    class Sup:  # the attributes of the supervisor the renewer reads
        def __init__(self) -> None:
            self.cfg = cfg

    reloads: list[int] = []
    clock = [1000.0]
    r = acme.Renewer(Sup(), {}, reload=lambda: reloads.append(1), clock=lambda: clock[0])

    async def scenario() -> None:
        # no listener answers: the attempt fails, the next one waits retry_s, then doubles
        assert not await r.attempt(cfg, "test")
        assert r.state["failures"] == 1 and r.state["next_attempt_at"] == 1005.0
        await r()
        assert r.task is None  # backing off: no attempt before next_attempt_at
        clock[0] = 1006.0
        await r()
        assert r.task is not None
        await r.task
        assert r.state["failures"] == 2 and r.state["next_attempt_at"] == 1006.0 + 10
        assert reloads == []

    asyncio.run(scenario())
    # the back-off survives a restart of hubsvc
    assert acme.Renewer(Sup(), {}).state["failures"] == 2
    from hubsvc.doctor.context import make_ctx
    from hubsvc.doctor.tls import check

    ctx = make_ctx(cfg)
    found = {f.id: f for f in check(ctx)}
    assert found["tls.acme.attempt"].severity == "error"
    assert "challenge failed" in found["tls.acme.attempt"].evidence
    assert "firewall-cmd" in found["tls.acme.attempt"].fix
    assert found["tls.acme.placeholder"].severity == "error"


class AcmeInstance(Instance):
    @property
    def public(self) -> str:
        return f"https://localhost:{self.public_port}"


def test_hubsvc_obtains_and_serves_the_certificate(pebble: Pebble) -> None:
    root = new_root("hubsvc-acme-")
    inst = AcmeInstance(root, overrides={"tls": {"mode": "acme", "http_port": pebble.http_port},
                                         "tls.acme": {"directory_url": pebble.directory_url,
                                                      "ca_bundle": str(pebble.ca_file),
                                                      "email": "admin@example.org"}})
    inst.write_config()
    try:
        inst.start(timeout=120)
        # status.json's certificate block is refreshed every health interval: wait for the
        # one that follows the reload which put the issued certificate in place
        st = inst.wait_status(lambda s: (s.get("tls") or {}).get("acme", {}).get("last_success_at")
                              and s.get("last_reload", {}).get("ok") and s["ready"]
                              and "placeholder" not in (s.get("tls") or {}).get("issuer", ""), 90)
        assert "Pebble Intermediate" in st["tls"]["issuer"] and st["tls"]["names"] == ["localhost"]
        # CHP serves the issued certificate, verifiable with pebble's own root
        roots = x509.load_pem_x509_certificates(pebble.issuer_roots())
        ctx = ssl.create_default_context(cadata="".join(
            c.public_bytes(serialization.Encoding.PEM).decode() for c in roots))
        with socket.create_connection(("127.0.0.1", inst.public_port), timeout=5) as s, \
                ctx.wrap_socket(s, server_hostname="localhost") as t:
            assert t.getpeercert() is not None
        with httpx.Client(trust_env=False, verify=ctx, timeout=30) as c:
            assert c.get(f"{inst.public}/hub/health").status_code == 200
            # hubsvc's plain-http listener redirects everything that is not a challenge
            r = c.get(f"http://localhost:{pebble.http_port}/hub/login?next=x")
            assert r.status_code == 301
            assert r.headers["location"] == f"https://localhost:{inst.public_port}/hub/login?next=x"
            assert c.get(f"http://localhost:{pebble.http_port}"
                         "/.well-known/acme-challenge/nope").status_code == 404
        assert st["last_reload"]["restarted"] == ["proxy"]
        assert inst.routes()["/"].get("hub") is True  # the hub's route is back
        assert dt.datetime.fromtimestamp(st["tls"]["not_after"], dt.UTC) > dt.datetime.now(dt.UTC)
    finally:
        inst.cleanup()
