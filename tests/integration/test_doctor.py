"""`hubsvc doctor` against real failures: each test breaks a real installation (files,
programs, ports, a running hubsvc with real CHP and JupyterHub) and asserts the finding,
its evidence and its fix. A healthy setup, stopped or running, gives no error and no
warning. How long doctor takes is a figure for bench/, not an assertion here."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hubsvc import secrets as secrets_mod
from hubsvc.doctor.finding import blocking, format_problem
from hubsvc.doctor.quick import preflight_findings

from ..unpriv import as_user
from .hubsvc_harness import REPO, Instance

pytestmark = pytest.mark.integration

PY = sys.executable
CHP = REPO / "node_modules" / ".bin" / "configurable-http-proxy"
CACHE = Path(os.environ.get("HUBSVC_TEST_CACHE", "/var/tmp/hubsvc-test-cache"))
OTHER_JH = "5.2.1"  # a JupyterHub release other than the hub's 6.x


def run_doctor(config: Path, *extra: str, user: str | None = None,
               env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], float]:
    """`python -m hubsvc.doctor --json` as a separate process (optionally as `user`)."""
    args = ["--config", str(config), "--json", *extra]
    argv = [PY, "-m", "hubsvc.doctor", *args] if user is None else \
        as_user(user, args, python_module="hubsvc.doctor")
    e = dict(os.environ if env is None else env)
    e.pop("HUBSVC_CONFIG", None)
    t0 = time.monotonic()
    r = subprocess.run(argv, capture_output=True, text=True, env=e, cwd="/", timeout=60)
    elapsed = time.monotonic() - t0
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {r.returncode}): {r.stdout!r} {r.stderr!r}") \
            from None
    assert doc["exit_code"] == r.returncode
    return r.returncode, doc, elapsed


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["id"]: f for f in doc["findings"]}


def problems(doc: dict[str, Any]) -> list[str]:
    return [f"{f['severity']} {f['id']}: {f['what']} | {f['evidence']}"
            for f in doc["findings"] if f["severity"] in ("error", "warning")]


def listener_proc(port: int) -> subprocess.Popen[bytes]:
    code = ("import socket,sys,time\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            f"s.bind(('127.0.0.1',{port})); s.listen(); print('up', flush=True)\n"
            "time.sleep(120)\n")
    p = subprocess.Popen([PY, "-c", code, "squatter"], stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"up"
    return p


@contextlib.contextmanager
def killed_at_end(p: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield p
    finally:
        p.kill()
        p.wait(10)


# ---- healthy --------------------------------------------------------------------------------
def test_healthy_stopped_setup_has_no_error_and_no_warning(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(start=False)
    rc, doc, _ = run_doctor(inst.config)
    assert problems(doc) == []
    assert rc == 0
    f = by_id(doc)
    assert f["proxy.version"]["what"].startswith("configurable-http-proxy 5.")
    assert f["jupyterhub.singleuser"]["severity"] == "ok"
    assert f["ports.hub"]["severity"] == "ok"
    assert f["service.status"]["severity"] == "skipped"
    assert f["systemd"]["severity"] == "skipped" or os.path.isdir("/run/systemd/system")
    # the cheap subset `hubsvc run` uses finds nothing blocking, quickly
    from hubsvc.config import load

    t0 = time.monotonic()
    pre = preflight_findings(load(inst.config))
    assert time.monotonic() - t0 < 0.5
    assert blocking(pre) == []
    assert [x for x in pre if x.severity != "ok"] == []


def test_healthy_running_setup_has_no_error_and_no_warning(hubsvc: Instance) -> None:
    rc, doc, _ = run_doctor(hubsvc.config)
    assert problems(doc) == [], problems(doc)
    assert rc == 0
    f = by_id(doc)
    for key in ("ports.public", "ports.api", "ports.hub"):
        assert "held by hubsvc" in f[key]["what"], f[key]
    for key in ("service.status", "service.proxy", "service.hub", "service.proxy_api",
                "service.hub_health", "service.hub_route", "service.routes", "entry.public"):
        assert f[key]["severity"] == "ok", f[key]


# ---- programs -------------------------------------------------------------------------------
def test_missing_chp(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(overrides={"proxy": {"command": "/opt/nodejs/bin/"
                                                                 "configurable-http-proxy"}},
                                 start=False)
    rc, doc, _ = run_doctor(inst.config)
    assert rc == 1
    f = by_id(doc)["proxy.command"]
    assert f["severity"] == "error" and f["blocks_start"]
    assert "not found" in f["what"]
    assert "set proxy.command to the right absolute path" in f["fix"]


def test_chp_name_not_on_path(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(overrides={"proxy": {"command": "configurable-http-proxy-x"}},
                                 start=False)
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["proxy.command"]
    assert rc == 1 and f["severity"] == "error"
    assert "is not on PATH" in f["what"]
    assert "absolute path" in f["fix"] and "searched" in f["evidence"]


def test_non_executable_chp(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(start=False)
    bindir = inst.root / "bin"
    bindir.mkdir()
    copy = bindir / "configurable-http-proxy"
    shutil.copyfile(CHP.resolve(), copy)
    copy.chmod(0o644)
    inst.overrides = {"proxy": {"command": str(copy)}}
    inst.write_config()
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["proxy.command"]
    assert rc == 1 and f["severity"] == "error", f
    assert "not executable" in f["what"]
    assert "mode 0644" in f["evidence"]
    assert f"chmod 0755 {copy}" in f["fix"]


def test_node_not_on_the_services_path(make_hubsvc: Any) -> None:
    """The seed story: CHP is found, but node lives outside the service's PATH."""
    inst: Instance = make_hubsvc(start=False)
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = str(inst.root / "empty-bin")  # nothing there: no node
    rc, doc, _ = run_doctor(inst.config, env=env)
    f = by_id(doc)["proxy.node"]
    assert rc == 1 and f["severity"] == "error" and f["blocks_start"]
    assert "needs 'node'" in f["what"]
    assert "#!/usr/bin/env node" in f["evidence"]
    assert "PATH" in f["fix"]
    # the CHP itself was still found (bundled), and nothing ran it
    assert by_id(doc)["proxy.command"]["severity"] == "ok"
    assert "proxy.version" not in by_id(doc)


def test_hub_command_whose_python_lacks_jupyterhub(make_hubsvc: Any) -> None:
    """A jupyterhub launcher left pointing at a Python without JupyterHub (the system one)."""
    if subprocess.run(["/usr/bin/python3", "-c", "import jupyterhub"],
                      capture_output=True).returncode == 0:
        pytest.skip("the system Python has jupyterhub")
    inst: Instance = make_hubsvc(start=False)
    launcher = inst.root / "bin" / "jupyterhub"
    launcher.parent.mkdir()
    launcher.write_text("#!/usr/bin/python3\nimport sys\nfrom jupyterhub.app import main\n"
                        "sys.exit(main())\n")
    launcher.chmod(0o755)
    inst.overrides = {"hub": {"command": str(launcher)}}
    inst.write_config()
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["hub.import"]
    assert rc == 1 and f["severity"] == "error" and f["blocks_start"]
    assert "cannot be imported in the hub's environment" in f["what"]
    assert "/usr/bin/python3: cannot import jupyterhub: ModuleNotFoundError" in f["evidence"]
    assert "/usr/bin/python3 -m pip install 'jupyterhub>=6,<7'" in f["fix"]


@pytest.fixture(scope="session")
def other_jupyterhub() -> Path:
    """A second environment with another JupyterHub release (created once, cached)."""
    venv = CACHE / f"jupyterhub-{OTHER_JH}"
    marker = venv / ".complete"
    if not marker.exists():
        shutil.rmtree(venv, ignore_errors=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True, timeout=120)
        r = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps",
                            f"jupyterhub=={OTHER_JH}"], capture_output=True, text=True,
                           timeout=300)
        if r.returncode != 0:
            pytest.skip(f"cannot install jupyterhub {OTHER_JH}: {r.stderr[-300:]}")
        marker.write_text("ok\n")
    return venv


def test_singleuser_of_another_version(make_hubsvc: Any, other_jupyterhub: Path) -> None:
    su = other_jupyterhub / "bin" / "jupyterhub-singleuser"
    inst: Instance = make_hubsvc(hub_extra=f"c.Spawner.cmd = [{str(su)!r}]", start=False)
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["jupyterhub.singleuser"]
    assert rc == 1 and f["severity"] == "error", f
    assert f"jupyterhub-singleuser {OTHER_JH} does not match the hub's JupyterHub 6." in f["what"]
    assert str(su) in f["evidence"]
    assert "pip install 'jupyterhub==6." in f["fix"]


# ---- files ------------------------------------------------------------------------------------
def _open_tree(inst: Instance) -> None:
    """Let other accounts reach the instance's folder (mkdtemp makes it 0700)."""
    inst.root.chmod(0o755)
    inst.config.chmod(0o644)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
def test_hub_config_unreadable_by_the_account_running_doctor(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(start=False)
    _open_tree(inst)
    inst.hub_config.chmod(0o600)  # root's, not readable by nobody
    rc, doc, _ = run_doctor(inst.config, user="nobody")
    f = by_id(doc)["files.hub_config"]
    assert rc == 1 and f["severity"] == "error", problems(doc)
    assert "cannot be read by nobody" in f["what"]
    assert f"chmod 0640 {inst.hub_config}" in f["fix"]
    assert "chgrp" in f["fix"] and "never chmod 777" in f["fix"]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_hub_config_unreadable_by_the_service_account_checked_as_root(make_hubsvc: Any) -> None:
    """Run as root; the service account (owner of state_dir) is nobody."""
    inst: Instance = make_hubsvc(start=False)
    _open_tree(inst)
    inst.state.mkdir(mode=0o700)
    os.chown(inst.state, 65534, 65534)
    inst.hub_config.chmod(0o600)
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)
    assert "nobody" in f["files.account"]["what"]
    hc = f["files.hub_config"]
    assert rc == 1 and hc["severity"] == "error", hc
    assert "nobody, who runs the hub" in hc["what"]
    assert "mode 0600, owner root:root" in hc["evidence"]
    # the state dir itself is fine for nobody
    assert f["files.state_dir"]["severity"] == "ok", f["files.state_dir"]


def test_secret_with_mode_0644(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(start=False)
    inst.state.mkdir(mode=0o700)
    files, _ = secrets_mod.ensure(inst.state)
    files.cookie_secret.chmod(0o644)
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["files.secret.jupyterhub_cookie_secret"]
    assert rc == 1 and f["severity"] == "error"
    assert "readable by other accounts" in f["what"]
    assert "mode 0644" in f["evidence"]
    assert f"chmod 0600 {files.cookie_secret}" in f["fix"]
    assert by_id(doc)["files.secret.proxy_auth_token"]["severity"] == "ok"


# ---- ports --------------------------------------------------------------------------------------
def test_port_taken_by_another_process(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(start=False)
    with killed_at_end(listener_proc(inst.hub_port)) as squatter:
        rc, doc, _ = run_doctor(inst.config)
        f = by_id(doc)["ports.hub"]
        assert rc == 1 and f["severity"] == "error" and f["blocks_start"]
        assert f"127.0.0.1:{inst.hub_port} is taken by another process" in f["what"]
        assert f"pid {squatter.pid} (" in f["evidence"] and "python" in f["evidence"]
        assert f"kill {squatter.pid}" in f["fix"] and "hub.bind_url" in f["fix"]
        # the same finding stops `hubsvc run` (preflight), worded the same way
        from hubsvc.config import load

        blockers = blocking(preflight_findings(load(inst.config)))
        assert [b.id for b in blockers] == ["ports.hub"]
        assert blockers[0].what == f["what"]
        assert f["what"] in format_problem(blockers[0])


def test_proxy_api_exposure_through_extra_args_is_refused(make_hubsvc: Any) -> None:
    """proxy.extra_args overriding --api-ip would open CHP's API to the network: the
    config is refused up front (exit 78 naming the field), by the doctor as by run."""
    inst: Instance = make_hubsvc(overrides={"proxy": {"extra_args": ["--api-ip", "0.0.0.0"]}},
                                 start=False)
    rc, doc, _ = run_doctor(inst.config)
    assert rc == 78
    assert "proxy.extra_args" in json.dumps(doc) and "--api-ip" in json.dumps(doc)


# ---- the admin's JupyterHub config --------------------------------------------------------------
def test_admin_config_overrides_bind_url(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(hub_extra='c.JupyterHub.bind_url = "http://0.0.0.0:9999"',
                                 start=False)
    line = next(i for i, ln in enumerate(inst.hub_config.read_text().splitlines(), 1)
                if "bind_url" in ln)
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["jupyterhub.owned.JupyterHub.bind_url"]
    assert f["severity"] == "warning"
    assert "c.JupyterHub.bind_url, which hubsvc owns" in f["what"]
    assert f"{inst.hub_config}, line {line}: c.JupyterHub.bind_url = 'http://0.0.0.0:9999'" \
        == f["evidence"]
    assert "remove that line" in f["fix"] and "proxy.public_url" in f["fix"]
    assert rc == 0  # a warning: hubsvc's own value wins


def test_admin_config_that_fails_to_load(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(hub_extra="c.Spawner.cmd = undefined_name", start=False)
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["jupyterhub.config_load"]
    assert rc == 1 and f["severity"] == "error"
    assert "NameError" in f["evidence"] and "line" in f["evidence"]


def test_authenticator_not_importable(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(
        hub_extra='c.JupyterHub.authenticator_class = "nosuchpkg.NoAuthenticator"',
        start=False)
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["jupyterhub.authenticator"]
    assert rc == 1 and f["severity"] == "error"
    assert "nosuchpkg" in f["what"] and "ModuleNotFoundError" in f["evidence"]


def test_local_process_spawner_users_without_accounts(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(hub_extra=(
        'c.JupyterHub.spawner_class = "localprocess"\n'
        'c.Authenticator.allowed_users = {"root", "nosuch-user-h6"}'), start=False)
    rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["jupyterhub.users"]
    assert rc == 1 and f["severity"] == "error", f
    assert f["evidence"] == "no account for: nosuch-user-h6"
    assert "useradd -m NAME" in f["fix"]


# ---- entry point ------------------------------------------------------------------------------
def test_request_through_the_hubs_private_port(hubsvc: Instance) -> None:
    # 1. the URL a user reported: the hub's own port
    rc, doc, _ = run_doctor(hubsvc.config, "--url", f"{hubsvc.hub}/hub/")
    f = by_id(doc)["entry.url"]
    assert rc == 1 and f["severity"] == "error", f
    assert "reaches the hub directly, without the proxy" in f["what"]
    assert f"open {hubsvc.public}/ instead" in f["fix"]
    # the right one is recognised
    rc, doc, _ = run_doctor(hubsvc.config, "--url", f"{hubsvc.public}/")
    assert rc == 0 and by_id(doc)["entry.url"]["severity"] == "ok"

    # 2. a browser-like client that talks to the hub's port and keeps its connection open
    code = ("import http.client,sys,time\n"
            f"c=http.client.HTTPConnection('127.0.0.1',{hubsvc.hub_port})\n"
            "c.request('GET','/hub/login'); r=c.getresponse(); r.read()\n"
            "print(r.status, flush=True); time.sleep(60)\n")
    with killed_at_end(subprocess.Popen([PY, "-c", code, "browser"],
                                        stdout=subprocess.PIPE)) as browser:
        assert browser.stdout is not None
        assert browser.stdout.readline().strip() == b"200"
        rc, doc, _ = run_doctor(hubsvc.config)
        f = by_id(doc)["entry.direct_clients"]
        assert f["severity"] == "warning", f
        assert f"pid {browser.pid} (" in f["evidence"] and "http.client" in f["evidence"]
        assert f"users must open {hubsvc.public}/" in f["fix"]


def test_redirect_loop_through_the_hubs_private_port(hubsvc: Instance) -> None:
    """A browser logs in on the hub's own port while its server runs: the hub loops and
    logs it (as it would for a missing route: it does not warn about the private address
    when the server is running); hubsvc publishes the episode; the route is in the proxy's
    table, so the doctor names the wrong entry point."""
    import re

    hubsvc.spawn("alice")
    with httpx.Client(trust_env=False, timeout=40, follow_redirects=True,
                      max_redirects=20) as browser:
        page = browser.get(f"{hubsvc.hub}/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf, page.text[:500]
        # login works on the hub's port; then the hub sends alice to her running server,
        # /user/alice/ on the same (wrong) port, which the hub can only send back: a loop
        r = browser.post(f"{hubsvc.hub}/hub/login?next=", data={
            "username": "alice", "password": "x", "_xsrf": xsrf.group(1)})
        assert r.status_code == 500 and "Redirect loop" in r.text, (r.status_code, r.url)
    hubsvc.wait_status(lambda s: any(e.get("user") == "alice"
                                     for e in s.get("redirect_loops") or []), 30)
    _, doc, _ = run_doctor(hubsvc.config)
    f = by_id(doc).get("entry.private_address.alice") or by_id(doc)["service.loop.alice"]
    assert f["severity"] in ("warning", "error"), f
    assert "hub's private address" in f["what"]
    assert f"users open {hubsvc.public}/ (proxy.public_url), never {hubsvc.hub}/" in f["fix"] \
        or f"open {hubsvc.public}/ instead" in f["fix"]
    assert by_id(doc)["service.routes"]["severity"] == "ok"  # the route is really there


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to nobody")
def test_running_service_checked_by_an_unprivileged_account(hubsvc: Instance) -> None:
    """nobody cannot read the tokens, status.json or root's /proc/PID/fd: it says so
    (skipped, with the reason) instead of calling hubsvc's own ports taken."""
    _open_tree(hubsvc)
    hubsvc.run_dir.chmod(0o750)  # as RuntimeDirectoryMode= in the unit
    rc, doc, _ = run_doctor(hubsvc.config, user="nobody")
    assert problems(doc) == [], problems(doc)
    assert rc == 0
    f = by_id(doc)
    assert f["service.status"]["severity"] == "skipped"
    assert "cannot be read by this account" in f["service.status"]["what"]
    for key in ("ports.public", "ports.api", "ports.hub"):
        assert f[key]["severity"] == "skipped", f[key]
        assert "cannot identify" in f[key]["what"]
    assert f["service.proxy_api"]["severity"] == "skipped"
    assert "root or as the service account" in f["service.proxy_api"]["fix"]
    assert f["entry.public"]["severity"] == "ok"
    assert "root (uid 0)" in f["files.account"]["what"]  # the files are checked for root
    assert f["files.secrets"]["severity"] == "skipped"  # nobody cannot enter the 0700 state dir


# ---- the running service ------------------------------------------------------------------------
def test_route_missing_for_a_running_server(hubsvc: Instance) -> None:
    hubsvc.spawn("alice")
    rc, doc, _ = run_doctor(hubsvc.config)
    assert problems(doc) == [] and rc == 0, problems(doc)
    assert "every running server (1)" in by_id(doc)["service.routes"]["what"]

    assert hubsvc.proc is not None
    sup = hubsvc.proc.pid
    os.kill(sup, signal.SIGSTOP)  # so that hubsvc's own route repair cannot race the check
    try:
        spec = next(k for k in hubsvc.routes() if "/user/alice" in k)
        with httpx.Client(trust_env=False, timeout=5) as c:
            r = c.delete(f"{hubsvc.api}/api/routes{spec}", headers={
                "Authorization": f"token {hubsvc.secret('proxy_auth_token')}"})
            assert r.status_code == 204
        rc, doc, _ = run_doctor(hubsvc.config)
    finally:
        os.kill(sup, signal.SIGCONT)
    f = by_id(doc)["service.routes"]
    assert rc == 1 and f["severity"] == "error", f
    assert "1 running server(s) have no route" in f["what"]
    assert "alice (/user/alice/)" in f["evidence"]
    # the advice never puts a token on a command line (argv is readable in /proc)
    assert "hub/api/proxy" in f["fix"] and "hubsvc probe-spawn" in f["fix"]
    assert "token" not in f["fix"].replace("probe-spawn", "")


def test_orphan_proxy_without_supervisor(make_hubsvc: Any) -> None:
    """A CHP left on the API port with no hubsvc running: named, with its pid."""
    inst: Instance = make_hubsvc(start=False)
    p = subprocess.Popen([str(CHP), "--ip", "127.0.0.1", "--port", str(inst.public_port),
                          "--api-ip", "127.0.0.1", "--api-port", str(inst.api_port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "CONFIGPROXY_AUTH_TOKEN": "x" * 32})
    with killed_at_end(p):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", inst.api_port), 0.2).close()
                break
            time.sleep(0.05)
        rc, doc, _ = run_doctor(inst.config)
    f = by_id(doc)["ports.api"]
    assert rc == 1 and f["severity"] == "error"
    assert "left behind by a stopped hubsvc" in f["what"]
    assert f"pid {p.pid}" in f["evidence"]


# ---- interface ------------------------------------------------------------------------------------
def test_text_report_lists_fixes_at_the_end(make_hubsvc: Any) -> None:
    inst: Instance = make_hubsvc(overrides={"proxy": {"command": "/nowhere/chp"}}, start=False)
    r = subprocess.run([PY, "-m", "hubsvc.doctor", "--config", str(inst.config)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    head, sep, tail = r.stdout.partition("What to fix:")
    assert sep, r.stdout
    assert "error    proxy.command" in head
    assert "fix: install it" in tail and "proxy.command" in tail


def test_unusable_config_exits_78_with_check_config_words(tmp_path: Path) -> None:
    cfg = tmp_path / "hubsvc.toml"
    cfg.write_text('[proxy]\napi_url = "http://0.0.0.0:8001"\nbogus = 1\n')
    r = subprocess.run([PY, "-m", "hubsvc.doctor", "--config", str(cfg)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 78
    assert "proxy.api_url" in r.stderr and "proxy.bogus: unknown key" in r.stderr
    assert "fix:" in r.stderr
    r = subprocess.run([PY, "-m", "hubsvc.doctor", "--config", str(cfg), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 78
    doc = json.loads(r.stdout)
    assert {p["field"] for p in doc["config_errors"]} == {"proxy.api_url", "proxy.bogus"}


# ---- systemd (a real systemd 252 booted with systemd-nspawn) ------------------------------------
SYSTEM_ROOT = Path(os.environ.get("HUBSVC_SYSTEM_ROOT", "/var/cache/hubsvc-test/bookworm"))


@pytest.fixture
def booted(tmp_path: Path) -> Iterator[Any]:
    """The cached Debian 12 root (tests/system/mkroot.sh) booted read-only-overlay, with this
    checkout bound read-only at the same path; yields run(cmd) -> CompletedProcess."""
    # `make test` builds the root before any test runs; in CI a missing root is a failure.
    impossible = pytest.fail if os.environ.get("CI", "").lower() in ("1", "true", "yes") \
        else pytest.skip
    if os.geteuid() != 0 or shutil.which("systemd-nspawn") is None:
        impossible("needs root and systemd-nspawn")
    if not (SYSTEM_ROOT / "usr/lib/systemd/systemd").exists():
        impossible(f"no system root at {SYSTEM_ROOT} (tests/system/mkroot.sh builds it)")
    log = open(tmp_path / "nspawn.log", "wb")
    ns = subprocess.Popen(
        ["systemd-nspawn", "-q", "-D", str(SYSTEM_ROOT), "--volatile=overlay", "-b",
         "--register=no", "--keep-unit", "--private-network", f"--bind-ro={REPO}:{REPO}",
         "-M", f"doctor{os.getpid()}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def leader() -> int | None:
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    st = (d / "stat").read_text()
                    if (int(st.rsplit(")", 1)[1].split()[1]) == ns.pid
                            and st[st.index("(") + 1:st.rindex(")")] == "systemd"):
                        return int(d.name)
        return None

    def run(cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nsenter", "-t", str(pid1), "-a", "env", "-i",
             "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "/bin/sh", "-c", cmd],
            capture_output=True, text=True, timeout=timeout)

    try:
        deadline = time.monotonic() + 60
        pid1 = None
        while time.monotonic() < deadline and ns.poll() is None:
            pid1 = leader()
            if pid1 is not None and run("systemctl is-system-running --wait",
                                        timeout=60).stdout.strip() in ("running", "degraded"):
                break
            time.sleep(0.2)
        assert pid1 is not None, (tmp_path / "nspawn.log").read_text()[-2000:]
        yield run
    finally:
        ns.terminate()  # nspawn powers the container off
        try:
            ns.wait(30)
        except subprocess.TimeoutExpired:
            ns.kill()
            ns.wait(10)
        log.close()


@pytest.mark.system
def test_systemd_unit_enabled_failed_and_dropins(booted: Any) -> None:
    run = booted
    cfg = "/tmp/doctor/hubsvc.toml"
    setup = run("mkdir -p /tmp/doctor && printf '[paths]\\nstate_dir = \"/tmp/doctor/state\"\\n"
                "runtime_dir = \"/tmp/doctor/run\"\\n[hub]\\nconfig_file = \"\"\\n' > " + cfg
                + f" && cp {REPO}/units/hubsvc.service /etc/systemd/system/"
                "&& systemctl daemon-reload")
    assert setup.returncode == 0, setup.stderr

    def doctor_inside() -> dict[str, dict[str, Any]]:
        r = run(f"{PY} -m hubsvc.doctor --config {cfg} --json")
        return by_id(json.loads(r.stdout))

    f = doctor_inside()
    assert f["systemd.enabled"]["severity"] == "warning"
    assert "systemctl enable --now hubsvc" in f["systemd.enabled"]["fix"]
    assert f["systemd.failed"]["severity"] == "ok"
    assert f["systemd.dropins"]["severity"] == "ok"
    assert "User= of hubsvc.service" in f["files.account"]["what"]

    # enabled; a drop-in changes Restart= and the account; the start fails
    run("systemctl enable hubsvc && mkdir -p /etc/systemd/system/hubsvc.service.d && "
        "printf '[Service]\\nRestart=no\\nUser=nobody\\n' > "
        "/etc/systemd/system/hubsvc.service.d/override.conf && systemctl daemon-reload")
    run("systemctl start hubsvc")  # /usr/bin/hubsvc is not installed in this root: it fails
    f = doctor_inside()
    assert f["systemd.enabled"]["severity"] == "ok"
    assert f["systemd.failed"]["severity"] == "error"
    assert f["systemd.failed"]["evidence"] == "hubsvc.service"
    d = f["systemd.dropins"]
    assert d["severity"] == "warning"
    assert "override.conf: Restart=no" in d["evidence"]
    assert "override.conf: User=nobody" in d["evidence"]
    # the drop-in's User= is the account the file checks are made for
    assert "nobody (uid 65534), User= of hubsvc.service" in f["files.account"]["what"]
    # ... and PAM (the default authenticator) cannot work as nobody
    pam = f["jupyterhub.pam"]
    assert pam["severity"] == "error" and "/etc/shadow" in pam["evidence"]
    assert "run hubsvc as root" in pam["fix"]


@pytest.mark.system
def test_systemd_node_in_a_custom_prefix(booted: Any) -> None:
    """The seed story: node is on the admin's PATH (/opt/node/bin), not on the service's."""
    run = booted
    cfg = "/tmp/doctor/hubsvc.toml"
    setup = run("mkdir -p /tmp/doctor /opt/node/bin && printf '[paths]\\nstate_dir = "
                "\"/tmp/doctor/state\"\\nruntime_dir = \"/tmp/doctor/run\"\\n[hub]\\n"
                f"config_file = \"\"\\n' > {cfg} && mv /usr/bin/node /opt/node/bin/node && "
                f"cp {REPO}/units/hubsvc.service /etc/systemd/system/ && systemctl daemon-reload")
    assert setup.returncode == 0, setup.stderr
    admin_shell = "PATH=/opt/node/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    r = run(f"{admin_shell} node --version && {admin_shell} {PY} -m hubsvc.doctor "
            f"--config {cfg} --json")
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    f = by_id(doc)
    assert r.stdout.startswith("v18"), r.stdout[:100]  # the admin's shell finds node
    node = f["proxy.node"]
    assert node["severity"] == "error" and "needs 'node'" in node["what"]
    assert "/opt/node/bin" not in node["evidence"]
    assert "Environment=PATH" in node["fix"]
    assert "systemd's default PATH" in f["programs.path"]["what"]
    # the fix, done: a drop-in giving the service that PATH
    run("mkdir -p /etc/systemd/system/hubsvc.service.d && printf '[Service]\\n"
        "Environment=PATH=/opt/node/bin:/usr/bin:/bin\\n' > "
        "/etc/systemd/system/hubsvc.service.d/path.conf && systemctl daemon-reload")
    r = run(f"{PY} -m hubsvc.doctor --config {cfg} --json")
    f = by_id(json.loads(r.stdout))
    assert f["proxy.node"]["severity"] == "ok", f["proxy.node"]
    assert f["proxy.node"]["what"].endswith("/opt/node/bin/node")
    assert "Environment=PATH of hubsvc.service" in f["programs.path"]["what"]
    assert f["proxy.version"]["severity"] == "ok"


def test_hubsvc_doctor_command(make_hubsvc: Any) -> None:
    """`hubsvc doctor` (the CLI) is the same entry point as `python -m hubsvc.doctor`."""
    inst: Instance = make_hubsvc(start=False)
    hubsvc_bin = Path(PY).parent / "hubsvc"
    r = subprocess.run([str(hubsvc_bin), "doctor", "--config", str(inst.config), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    _, doc, _ = run_doctor(inst.config)
    assert [f["id"] for f in json.loads(r.stdout)["findings"]] == [f["id"] for f in
                                                                    doc["findings"]]
    r = subprocess.run([str(hubsvc_bin), "doctor"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "HUBSVC_CONFIG": str(inst.root / "nope.toml")})
    assert r.returncode == 78 and "nope.toml: no such file" in r.stderr
