"""HTTPS end to end: the real CHP terminates TLS with a certificate from a throwaway CA (key
file root-only, 0600), in front of the real hub; the plain-http port redirects; a new
certificate on disk takes effect on reload with users' routes restored."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.tlsca import CA

from .hubsvc_harness import HUBSVC, Instance, free_port, new_root

pytestmark = pytest.mark.integration


class TlsInstance(Instance):
    @property
    def public(self) -> str:
        return f"https://127.0.0.1:{self.public_port}"


def trusting(ca_file: Path) -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=45, verify=ssl.create_default_context(
        cafile=str(ca_file)))


def spawn(inst: Instance, user: str) -> None:
    """Start `user`'s server and wait until ready (the hub answers POST …/server only after
    up to 10 s of spawning: a longer client timeout than the harness's)."""
    from .hubsvc_harness import TEST_TOKEN

    with httpx.Client(trust_env=False, timeout=60,
                      headers={"Authorization": f"token {TEST_TOKEN}"}) as c:
        assert c.post(f"{inst.hub}/hub/api/users/{user}").status_code in (201, 409)
        assert c.post(f"{inst.hub}/hub/api/users/{user}/server").status_code in (201, 202)
    inst.spawn(user)  # already started: waits for ready


def served_cert(port: int, ca_file: Path) -> dict[str, Any]:
    ctx = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s, \
            ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
        cert = t.getpeercert()
        assert cert is not None
        return {**cert, "version": t.version()}


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[TlsInstance, CA, Path]]:
    root = new_root("hubsvc-tls-")
    ca = CA()
    certs = root / "pki"
    cert, key = ca.write(certs, ca.server("localhost", "127.0.0.1"))
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    inst = TlsInstance(root, overrides={"tls": {
        "mode": "files", "cert_file": str(cert), "key_file": str(key),
        "http_port": free_port(), "hsts_max_age_s": 600}})
    inst.write_config()
    try:
        inst.start(timeout=120)
        yield inst, ca, ca.write_root(root / "root.pem")
    finally:
        inst.cleanup()


def test_https_chain_redirect_and_hsts(hub: tuple[TlsInstance, CA, Path]) -> None:
    inst, _ca, root_pem = hub
    # verified against the test root alone: CHP sends the intermediate too
    with trusting(root_pem) as c:
        r = c.get(f"{inst.public}/hub/health")
        assert r.status_code == 200
        r = c.get(f"{inst.public}/hub/login")
        assert r.status_code == 200
        assert r.headers.get("strict-transport-security") == "max-age=600"
    info = served_cert(inst.public_port, root_pem)
    assert info["version"] in ("TLSv1.2", "TLSv1.3")
    # the plain-http port answers only with a redirect to the same path over https
    port = inst.settings()["tls"]["http_port"]
    with httpx.Client(trust_env=False, timeout=5) as c:
        r = c.get(f"http://127.0.0.1:{port}/hub/login?next=%2Fhub%2F")
    assert r.status_code == 301
    assert r.headers["location"] == f"https://127.0.0.1:{inst.public_port}/hub/login?next=%2Fhub%2F"
    # and plain http on the https port is not served
    with httpx.Client(trust_env=False, timeout=5) as c:
        with pytest.raises(httpx.HTTPError):
            c.get(f"http://127.0.0.1:{inst.public_port}/hub/health").raise_for_status()


def test_old_protocols_refused(hub: tuple[TlsInstance, CA, Path]) -> None:
    inst, _ca, root_pem = hub
    # openssl s_client speaks TLS 1.1 when asked to (SECLEVEL=0); CHP must refuse it
    out = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{inst.public_port}", "-tls1_1",
         "-cipher", "DEFAULT:@SECLEVEL=0", "-CAfile", str(root_pem)],
        input=b"", capture_output=True, timeout=20)
    text = (out.stdout + out.stderr).decode(errors="replace")
    assert out.returncode != 0, text
    # the server's refusal, not the client's: CHP answers with a protocol_version alert
    assert "alert protocol version" in text, text
    ok = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{inst.public_port}", "-tls1_2",
         "-CAfile", str(root_pem), "-verify_return_error"],
        input=b"", capture_output=True, timeout=20)
    assert ok.returncode == 0, ok.stdout.decode() + ok.stderr.decode()


def test_no_secret_in_chp_argv_or_env_and_status_shows_expiry(
        hub: tuple[TlsInstance, CA, Path]) -> None:
    inst, _ca, _root = hub
    key_text = Path(inst.settings()["tls"]["key_file"]).read_bytes()
    body = key_text.split(b"\n")[1]  # a line of the key's base64
    pid = inst.pid("proxy")
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    environ = Path(f"/proc/{pid}/environ").read_bytes()
    assert body not in cmdline and body not in environ
    argv = inst.argv("proxy")  # what CHP runs with (its cmdline may be hubsvc.warm's loader)
    assert body.decode() not in " ".join(argv)
    served_key = Path(argv[argv.index("--ssl-key") + 1])
    assert served_key.parent == inst.run_dir / "tls"
    assert oct(served_key.stat().st_mode & 0o777) == "0o600"
    assert body not in inst.log_text().encode()
    st = inst.status()
    assert st["tls"]["mode"] == "files" and st["tls"]["expiry"] == "ok"
    assert st["tls"]["names"] == ["localhost", "127.0.0.1"]
    out = subprocess.run([str(HUBSVC), "status", "--config", str(inst.config)],
                         capture_output=True, text=True, timeout=30)
    assert "certificate (files): valid until" in out.stdout, out.stdout + out.stderr


def test_new_certificate_on_reload_keeps_user_routes(hub: tuple[TlsInstance, CA, Path]) -> None:
    inst, ca, root_pem = hub
    spawn(inst, "tlsuser")
    token = inst.user_token("tlsuser")
    with trusting(root_pem) as c:
        r = c.get(f"{inst.public}/user/tlsuser/api/status",
                  headers={"Authorization": f"token {token}"})
        assert r.status_code == 200, r.text
    before = served_cert(inst.public_port, root_pem)["serialNumber"]
    old_proxy = inst.pid("proxy")
    old_hub = inst.pid("hub")
    # certbot/certmonger replace the files; `systemctl reload hubsvc` (SIGHUP) applies them
    ca.write(Path(inst.settings()["tls"]["cert_file"]).parent, ca.server("localhost", "127.0.0.1"))
    assert inst.proc is not None
    os.kill(inst.proc.pid, signal.SIGHUP)
    st = inst.wait_status(lambda s: s.get("last_reload", {}).get("ok") and s["ready"], 60)
    assert st["last_reload"]["restarted"] == ["proxy"]
    assert inst.pid("proxy") != old_proxy and inst.pid("hub") == old_hub
    assert served_cert(inst.public_port, root_pem)["serialNumber"] != before
    # the user's route is back at once: no wait for the hub's 5-minute sync
    assert "/user/tlsuser" in inst.routes()
    with trusting(root_pem) as c:
        r = c.get(f"{inst.public}/user/tlsuser/api/status",
                  headers={"Authorization": f"token {token}"})
        assert r.status_code == 200, r.text


def test_bad_tls_settings_exit_78_naming_the_field(tmp_path: Path) -> None:
    ca = CA()
    cert, _ = ca.write(tmp_path / "a", ca.server("localhost"))
    _, other_key = ca.write(tmp_path / "b", ca.server("localhost"))
    cases = {
        # the key of another certificate: check-config reads the files
        "tls.key_file": (f'[proxy]\npublic_url = "https://127.0.0.1:{free_port()}"\n[tls]\n'
                         f'mode = "files"\ncert_file = "{cert}"\nkey_file = "{other_key}"\n'),
        # TLS on, but users would be sent to plain http
        "proxy.public_url": (f'[tls]\nmode = "files"\ncert_file = "{cert}"\n'
                             f'key_file = "{other_key}"\n'),
    }
    for field, text in cases.items():
        cfg = tmp_path / f"{field}.toml"
        cfg.write_text(f'[paths]\nstate_dir = "{tmp_path}/s"\nruntime_dir = "{tmp_path}/r"\n'
                       + text)
        for cmd in ("check-config", "run"):
            p = subprocess.run([str(HUBSVC), cmd, "--config", str(cfg)], capture_output=True,
                               text=True, timeout=60, stdin=subprocess.DEVNULL)
            assert p.returncode == 78, (cmd, p.stdout, p.stderr)
            assert f"  {field}: " in p.stderr and "fix: " in p.stderr, p.stderr
            assert "Traceback" not in p.stderr
