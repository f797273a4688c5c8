"""HTTPS in the packaged service, in a real systemd 252: the RPM installed, [tls] on with a
certificate from a throwaway CA whose key file is readable by root only, launcher
"systemd" (CHP as a DynamicUser gets the key through LoadCredential=). Ports 443 and 80.
A renewed certificate takes effect on `systemctl reload hubsvc`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tlsca import CA, key_pem, pem

from .conftest import OUT, Machine, booted, wait_until

pytestmark = [pytest.mark.system, pytest.mark.timeout(900)]

KEY = "/etc/hubsvc/tls/hub.key"
CERT = "/etc/hubsvc/tls/hub.crt"
CONFIG = """
[supervisor]
launcher = "systemd"
[proxy]
public_url = "https://127.0.0.1/"
[tls]
mode = "files"
cert_file = "/etc/hubsvc/tls/hub.crt"
key_file = "/etc/hubsvc/tls/hub.key"
http_port = 80
hsts_max_age_s = 300
"""

# Runs in the container's network namespace with the host's Python (standard library).
PROBE = textwrap.dedent("""
    import json, socket, ssl, sys, urllib.request, http.client
    root = sys.argv[1]
    ctx = ssl.create_default_context(cafile=root)
    with socket.create_connection(("127.0.0.1", 443), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            serial = t.getpeercert()["serialNumber"]; version = t.version()
    c = http.client.HTTPSConnection("127.0.0.1", 443, context=ctx, timeout=30)
    c.request("GET", "/hub/health"); health = c.getresponse().status
    c = http.client.HTTPConnection("127.0.0.1", 80, timeout=10)
    c.request("GET", "/hub/login?next=x", headers={"Host": "localhost"}); r = c.getresponse()
    print(json.dumps({"serial": serial, "version": version, "health": health,
                      "redirect": [r.status, r.getheader("Location")]}))
""")


def put(m: Machine, path: str, data: bytes, mode: str) -> None:
    m.run(f"install -d -m 0700 {shlex.quote(os.path.dirname(path))} && "
          f"printf %s {shlex.quote(data.decode())} > {path} && chmod {mode} {path}")


def probe(m: Machine, root_pem: Path) -> dict:
    p = subprocess.run(["nsenter", "-t", str(m.leader), "-n", sys.executable, "-c", PROBE,
                        str(root_pem)], capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def tls_machine() -> Iterator[tuple[Machine, CA, Path]]:
    ca = CA()
    OUT.mkdir(parents=True, exist_ok=True)
    root_pem = ca.write_root(OUT / "tls-root.pem")
    with booted("tls", "systemd") as m:
        m.run(f"rpm -i --nodeps {m.rpm}", timeout=180)
        srv = ca.server("localhost", "127.0.0.1")
        put(m, CERT, pem(srv.cert) + pem(ca.inter), "0644")
        put(m, KEY, key_pem(srv.key), "0600")
        m.run(f"printf %s {shlex.quote(CONFIG)} > /etc/hubsvc/hubsvc.toml")
        m.run("hubsvc check-config >/dev/null")
        m.run("systemctl start hubsvc", timeout=150)
        wait_until(lambda: m.status().get("ready"), 120, "hubsvc ready with TLS")
        yield m, ca, root_pem


def test_packaged_unit_serves_https_with_a_root_only_key(
        tls_machine: tuple[Machine, CA, Path]) -> None:
    m, _ca, root_pem = tls_machine
    got = probe(m, root_pem)
    assert got["health"] == 200 and got["version"] in ("TLSv1.2", "TLSv1.3")
    assert got["redirect"] == [301, "https://localhost/hub/login?next=x"]
    # the admin's key stays root-only; CHP runs as a dynamic user and reads its credential
    assert m.out(f"stat -c '%a %U' {KEY}") == "600 root"
    pid = m.main_pid("hubsvc-proxy.service")
    assert m.out(f"stat -c %U /proc/{pid}") != "root"
    argv = m.out(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert "--ssl-key /run/credentials/hubsvc-proxy.service/tls_key.pem" in argv, argv
    assert "--ssl-cert /run/credentials/hubsvc-proxy.service/tls_cert.pem" in argv, argv
    key_line = m.out(f"sed -n 2p {KEY}")
    for where in (f"/proc/{pid}/cmdline", f"/proc/{pid}/environ"):
        assert m.run(f"grep -qF {shlex.quote(key_line)} {where}", check=False).returncode == 1
    assert m.run(f"journalctl -b --no-pager | grep -qF {shlex.quote(key_line)}",
                 check=False).returncode == 1
    # CHP's user cannot read the admin's key, nor hubsvc's copy
    uid = m.out(f"stat -c %u /proc/{pid}")
    for path in (KEY, "/run/hubsvc/tls/key.pem"):
        r = m.run(f"setpriv --reuid={uid} --regid={uid} --clear-groups cat {path}", check=False)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (path, r.stdout[:40])
    text = m.out("hubsvc status")
    assert "certificate (files): valid until" in text and "127.0.0.1" in text, text
    doc = json.loads(m.run("hubsvc doctor --json", check=False, timeout=180).stdout)
    tls_f = {f["id"]: f["severity"] for f in doc["findings"] if f["group"] == "tls"}
    assert tls_f.get("tls.files") == "ok" and tls_f.get("tls.key_mode") == "ok", tls_f
    assert tls_f.get("tls.http_port") == "ok" and tls_f.get("tls.served") == "ok", tls_f


def test_renewed_certificate_on_reload(tls_machine: tuple[Machine, CA, Path]) -> None:
    m, ca, root_pem = tls_machine
    before = probe(m, root_pem)["serial"]
    hub_pid = m.main_pid("hubsvc-hub.service")
    proxy_pid = m.main_pid("hubsvc-proxy.service")
    srv = ca.server("localhost", "127.0.0.1")
    put(m, KEY, key_pem(srv.key), "0600")
    put(m, CERT, pem(srv.cert) + pem(ca.inter), "0644")
    m.run("systemctl reload hubsvc", timeout=60)
    wait_until(lambda: m.main_pid("hubsvc-proxy.service") not in (0, proxy_pid)
               and m.status().get("ready"), 60, "CHP restarted with the new certificate")
    after = probe(m, root_pem)
    assert after["serial"] != before and after["health"] == 200
    assert m.main_pid("hubsvc-hub.service") == hub_pid  # the hub was not restarted


# ---- ACME in the packaged unit: Debian's pebble inside the container ---------------------
ACME_CONFIG = """
[supervisor]
launcher = "systemd"
[proxy]
public_url = "https://localhost/"
[tls]
mode = "acme"
http_port = 80
[tls.acme]
directory_url = "https://127.0.0.1:14000/dir"
ca_bundle = "/etc/pebble/root.pem"
email = "admin@example.org"
"""

# CHP listens on "localhost" (::1 first in the container); verifies with pebble's own root.
ACME_PROBE = textwrap.dedent("""
    import json, socket, ssl, sys, urllib.request
    raw = ssl.create_default_context(); raw.check_hostname = False; raw.verify_mode = ssl.CERT_NONE
    root = urllib.request.urlopen("https://127.0.0.1:15000/roots/0", context=raw,
                                  timeout=10).read().decode()
    ctx = ssl.create_default_context(cadata=root)
    for addr in ("::1", "127.0.0.1"):
        try:
            s = socket.create_connection((addr, 443), timeout=10)
            break
        except OSError:
            continue
    with s, ctx.wrap_socket(s, server_hostname="localhost") as t:
        cert = t.getpeercert()
        t.sendall(b"GET /hub/health HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n")
        status = t.recv(100).split(b" ")[1].decode()
    print(json.dumps({"issuer": dict(x[0] for x in cert["issuer"]), "health": int(status)}))
""")


@pytest.fixture(scope="module")
def acme_machine() -> Iterator[Machine]:
    from tests.integration.pebble import PEBBLE

    if not Path(PEBBLE).exists():
        pytest.skip("needs Debian's pebble on the host (make setup installs it)")
    ca = CA()
    with booted("tls-acme", "systemd") as m:
        m.run(f"rpm -i --nodeps {m.rpm}", timeout=180)
        # the same Debian 12 binary, copied into the container's (overlay) root
        dest = Path(f"/proc/{m.leader}/root/usr/local/bin/pebble")
        dest.write_bytes(Path(PEBBLE).read_bytes())
        dest.chmod(0o755)
        srv = ca.server("127.0.0.1", "localhost")
        put(m, "/etc/pebble/cert.pem", pem(srv.cert) + pem(ca.inter), "0644")
        put(m, "/etc/pebble/key.pem", key_pem(srv.key), "0600")
        put(m, "/etc/pebble/root.pem", pem(ca.root), "0644")
        conf = json.dumps({"pebble": {
            "listenAddress": "127.0.0.1:14000", "managementListenAddress": "127.0.0.1:15000",
            "certificate": "/etc/pebble/cert.pem", "privateKey": "/etc/pebble/key.pem",
            "httpPort": 80, "tlsPort": 5001, "ocspResponderURL": "",
            "externalAccountBindingRequired": False}})
        put(m, "/etc/pebble/config.json", conf.encode(), "0644")
        m.run("systemd-run --unit=pebble --setenv=PEBBLE_VA_ALWAYS_VALID=0 "
              "--setenv=PEBBLE_VA_NOSLEEP=1 --setenv=PEBBLE_WFE_NONCEREJECT=0 "
              "/usr/local/bin/pebble -config /etc/pebble/config.json")
        m.run(f"printf %s {shlex.quote(ACME_CONFIG)} > /etc/hubsvc/hubsvc.toml")
        m.run("systemctl start hubsvc", timeout=150)
        yield m


def test_packaged_unit_obtains_a_certificate_by_acme(acme_machine: Machine) -> None:
    m = acme_machine

    def issued() -> dict | None:
        st = m.status()
        acme = (st.get("tls") or {}).get("acme") or {}
        if acme.get("last_success_at") and st.get("ready") and st.get("last_reload", {}).get("ok"):
            return st
        return None

    st = wait_until(issued, 120, "the ACME certificate issued and served")
    assert "Pebble Intermediate" in st["tls"]["issuer"] and st["tls"]["names"] == ["localhost"]
    p = subprocess.run(["nsenter", "-t", str(m.leader), "-n", sys.executable, "-c", ACME_PROBE],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    got = json.loads(p.stdout)
    assert got["health"] == 200 and "Pebble Intermediate" in got["issuer"]["commonName"]
    for f in ("account.key", "key.pem"):
        assert m.out(f"stat -c '%a %U' /var/lib/hubsvc/acme/{f}") == "600 root"
    assert m.out("stat -c '%a' /var/lib/hubsvc/acme") == "700"
    pid = m.main_pid("hubsvc-proxy.service")
    argv = m.out(f"tr '\\0' ' ' < /proc/{pid}/cmdline")
    assert "--ssl-key /run/credentials/hubsvc-proxy.service/tls_key.pem" in argv, argv
    assert "--redirect-port" not in argv  # hubsvc's own listener answers on port 80
    text = m.out("hubsvc status")
    assert "certificate (acme): valid until" in text, text
