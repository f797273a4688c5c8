"""hubsvc.doctor: the pure parts (parsers, report, exit codes) and file checks on real
temporary files. The failures against real programs live in tests/integration."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx
import pytest

from hubsvc import config, doctor, host
from hubsvc.doctor import entry, files, finding, jupyterhub, network, scheduler, service, systemd
from hubsvc.doctor.context import make_ctx
from hubsvc.doctor.finding import Finding
from hubsvc.host import Account

pytestmark = pytest.mark.unit


def _cfg(tmp_path: Path, **sections: dict[str, object]) -> config.Config:
    data: dict[str, dict[str, object]] = {
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
        "hub": {"config_file": ""},
    }
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)
    return config.parse(data, source=tmp_path / "hubsvc.toml")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- systemd parsing ----------------------------------------------------------------------
def test_parse_systemctl_show() -> None:
    got = host.parse_systemctl_show("LoadState=loaded\nUser=\nDropInPaths=/a.conf /b.conf\n")
    assert got == {"LoadState": "loaded", "User": "", "DropInPaths": "/a.conf /b.conf"}


def test_failed_units() -> None:
    assert systemd.failed_units_findings("")[0].severity == "ok"
    f = systemd.failed_units_findings(
        "hubsvc.service loaded failed failed JupyterHub behind ...\n")[0]
    assert f.severity == "error" and "hubsvc.service" in f.evidence
    assert "reset-failed" in f.fix


def test_dropins_that_override_settings(tmp_path: Path) -> None:
    a = tmp_path / "10-env.conf"
    a.write_text("[Service]\nEnvironment=PATH=/opt/node/bin:/usr/bin\n# Restart=no\n")
    b = tmp_path / "20-desc.conf"
    b.write_text("[Unit]\nDescription=ours\n")
    f = systemd.dropin_findings(f"{a} {b}")[0]
    assert f.severity == "warning"
    assert f"{a}: Environment=PATH=/opt/node/bin:/usr/bin" in f.evidence
    assert "Restart" not in f.evidence  # a comment is not a setting
    assert systemd.dropin_findings(str(b))[0].severity == "ok"
    assert systemd.dropin_findings("")[0].severity == "ok"


def test_systemd_absent_is_skipped(tmp_path: Path) -> None:
    if host.systemd_running():
        pytest.skip("systemd is running here")
    ctx = make_ctx(_cfg(tmp_path), Account.from_uid(os.geteuid(), "test"))
    f = systemd.check_systemd(ctx)
    assert [(x.id, x.severity, x.what) for x in f] == [
        ("systemd", "skipped", "systemd not running")]


# ---- the admin's JupyterHub config ----------------------------------------------------------
def test_owned_lines(tmp_path: Path) -> None:
    p = tmp_path / "jupyterhub_config.py"
    p.write_text("c = get_config()\n\nc.JupyterHub.bind_url = 'http://:9000'\n"
                 "c.JupyterHub.hub_port += 1\nc.Spawner.cmd = ['x']\n")
    got = jupyterhub.owned_lines(p)
    assert got[("JupyterHub", "bind_url")] == 3
    assert got[("JupyterHub", "hub_port")] == 4
    assert got[("Spawner", "cmd")] == 5
    (tmp_path / "bad.py").write_text("c.JupyterHub.bind_url = (\n")
    assert jupyterhub.owned_lines(tmp_path / "bad.py") == {}


# ---- file permissions for another account -------------------------------------------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="the files must belong to someone else than nobody")
def test_access_as_another_account() -> None:
    nobody = Account.from_name("nobody", "test")
    assert nobody is not None
    tmp_path = Path(tempfile.mkdtemp(prefix="hubsvc-doctor-"))  # pytest's tmp is 0700
    try:
        _access_cases(tmp_path, nobody)
    finally:
        shutil.rmtree(tmp_path)


def _access_cases(tmp_path: Path, nobody: Account) -> None:
    tmp_path.chmod(0o755)
    open_file = tmp_path / "open.py"
    open_file.write_text("")
    open_file.chmod(0o644)
    private = tmp_path / "private.py"
    private.write_text("")
    private.chmod(0o600)
    closed_dir = tmp_path / "closed"
    closed_dir.mkdir(mode=0o700)
    inside = closed_dir / "f.py"
    inside.write_text("")
    inside.chmod(0o644)
    assert host.access_as(open_file, nobody, 4) is None
    why = host.access_as(private, nobody, 4)
    assert why is not None and "mode 0600" in why
    why = host.access_as(inside, nobody, 4)
    assert why is not None and f"cannot enter {closed_dir}" in why
    # group read is enough when the account is in the group
    private.chmod(0o640)
    os.chown(private, 0, nobody.gid)
    assert host.access_as(private, nobody, 4) is None


def test_secret_checks(tmp_path: Path) -> None:
    me = Account.from_uid(os.geteuid(), "test")
    s = tmp_path / "proxy_auth_token"
    assert files.secret_findings(s, me)[0].severity == "ok"  # created at first start
    s.write_text("x\n")
    s.chmod(0o600)
    assert [f.severity for f in files.secret_findings(s, me)] == ["ok"]
    s.chmod(0o640)
    f = files.secret_findings(s, me)[0]
    assert f.severity == "error" and "mode 0640" in f.evidence and "chmod 0600" in f.fix
    s.unlink()
    s.symlink_to("/etc/hostname")
    f = files.secret_findings(s, me)[0]
    assert f.severity == "error" and "not a regular file" in f.what


def test_world_writable_state_dir(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    cfg.paths.state_dir.mkdir()
    cfg.paths.state_dir.chmod(0o777)
    ctx = make_ctx(cfg, Account.from_uid(os.geteuid(), "test"))
    f = {x.id: x for x in files.check_files(ctx)}
    assert f["files.state_dir"].severity == "error"
    assert "writable by everyone" in f["files.state_dir"].what
    assert "chmod 0700" in f["files.state_dir"].fix


# ---- entry point --------------------------------------------------------------------------------
def test_hub_port_url_is_flagged_even_when_nothing_answers(tmp_path: Path) -> None:
    hub_port = _free_port()
    cfg = _cfg(tmp_path, hub={"bind_url": f"http://127.0.0.1:{hub_port}"},
               proxy={"public_url": "http://127.0.0.1:18000"})
    ctx = make_ctx(cfg, Account.from_uid(os.geteuid(), "test"))
    f = entry.check_entry_url(ctx, f"http://localhost:{hub_port}/hub/")[0]
    assert f.severity == "error"
    assert "hub's private address" in f.what
    assert "open http://127.0.0.1:18000/ instead" in f.fix


def test_hub_exposed_to_the_network_is_a_warning(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, hub={"bind_url": f"http://0.0.0.0:{_free_port()}"})
    ctx = make_ctx(cfg, Account.from_uid(os.geteuid(), "test"))
    f = {x.id: x for x in network.check_ports(ctx)}
    assert f["ports.hub_exposure"].severity == "warning"
    assert "127.0.0.1" in f["ports.hub_exposure"].fix


# ---- routes vs servers (the comparison only) ------------------------------------------------------
def test_route_comparison(tmp_path: Path) -> None:
    ctx = make_ctx(_cfg(tmp_path), Account.from_uid(os.geteuid(), "test"))
    routes = {"/": {"hub": True, "target": "http://127.0.0.1:8081"},
              "/user/alice": {"user": "alice", "target": "http://127.0.0.1:5000"}}
    users = [{"name": "alice", "servers": {"": {"ready": True, "url": "/user/alice/"}}},
             {"name": "bob", "servers": {"": {"ready": True, "url": "/user/bob/"},
                                         "gpu": {"ready": False, "url": "/user/bob/gpu/"}}}]
    reply = httpx.Response(200, content=json.dumps(users).encode())
    f = {x.id: x for x in service.route_findings(ctx, routes, reply)}
    assert f["service.hub_route"].severity == "ok"
    assert f["service.routes"].severity == "error"
    assert f["service.routes"].evidence == "missing: bob (/user/bob/)"
    del routes["/"]
    f = {x.id: x for x in service.route_findings(ctx, routes, reply)}
    assert f["service.hub_route"].severity == "error"


def test_loop_episodes_from_status(tmp_path: Path) -> None:
    ctx = make_ctx(_cfg(tmp_path), Account.from_uid(os.geteuid(), "test"))
    f = service.loop_findings(ctx, [
        {"user": "ann", "url": "/hub/user/ann/?redirects=4", "count": 4,
         "cause": "private_address", "detail": "requests came to the hub's private address"},
        {"user": "bo", "url": "/hub/user/bo/", "count": 2, "cause": "missing_route",
         "detail": ""}])
    assert f[0].id == "entry.private_address.ann" and f[0].severity == "error"
    assert "instead" in f[0].fix
    assert f[1].id == "service.loop.bo" and "hub/api/proxy" in f[1].fix
    assert f[1].severity == "warning"  # ended: it happened, it is not happening now
    # the same "missing route" loop while the route is in the table: the wrong entry point
    g = service.loop_findings(ctx, [{"user": "bo", "cause": "missing_route", "open": True}],
                              {"/": {}, "/user/bo": {"user": "bo"}})[0]
    assert g.severity == "error" and "hub's private address" in g.what
    assert "never http://127.0.0.1:8081/" in g.fix


# ---- report and exit codes ------------------------------------------------------------------
def test_report_groups_then_fixes_at_the_end() -> None:
    fs = [Finding("b.warn", "ports", "warning", "meh", "seen", "do b"),
          Finding("a.err", "programs", "error", "bad", "ev", "do a", True),
          Finding("c.ok", "programs", "ok", "fine"),
          Finding("d.skip", "systemd", "skipped", "systemd not running", "PID 1 is x")]
    text = finding.render_text(fs, None, 0.42)
    body, _, fixes = text.partition("What to fix:")
    assert body.index("programs") < body.index("ports") < body.index("systemd")
    assert "1 error(s), 1 warning(s), 1 ok, 1 skipped (0.4 s)" in body
    assert fixes.index("a.err") < fixes.index("b.warn")  # errors first
    assert "fix: do a" in fixes and "evidence: ev" in fixes
    assert "Not checked:" in fixes and "PID 1 is x" in fixes
    assert finding.exit_code(fs) == 1
    assert finding.exit_code(fs[2:]) == 0
    assert [b.id for b in finding.blocking(fs)] == ["a.err"]
    assert finding.format_problem(fs[1]) == "  a.err: bad\n      evidence: ev\n      fix: do a"


def test_config_errors_exit_78(tmp_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = doctor.run_doctor(tmp_path / "missing.toml", as_json=False, out=out, err=err)
    assert rc == 78
    assert f"{tmp_path / 'missing.toml'}: no such file" in err.getvalue()
    assert "fix: create it" in err.getvalue()
    out = io.StringIO()
    rc = doctor.run_doctor(tmp_path / "missing.toml", as_json=True, out=out)
    assert rc == 78 and json.loads(out.getvalue())["config_errors"][0]["message"] == "no such file"


def test_unusable_url_exits_78(tmp_path: Path) -> None:
    err = io.StringIO()
    rc = doctor.run_doctor(tmp_path / "x.toml", as_json=False, out=io.StringIO(), err=err,
                           url="ftp://host/")
    assert rc == 78 and "--url" in err.getvalue()


def test_other_groups_are_reported_too(tmp_path: Path) -> None:
    fs = [Finding("scheduler.munge", "scheduler", "error", "munge fails", "", "start munged"),
          Finding("x.y", "elsewhere", "warning", "odd", "", "look")]
    text = finding.render_text(fs, None, 0.1)
    assert "\nscheduler\n" in text and "\nelsewhere\n" in text
    cfg = _cfg(tmp_path)
    not_slurm = {"spawner": {"mro": ["jupyterhub.spawner.LocalProcessSpawner"]}}
    assert scheduler.findings(cfg, not_slurm) == []
    assert scheduler.findings(cfg, "probe failed") == []


# ---- one formatter, cheap import -----------------------------------------------------------------
def test_problems_and_findings_are_written_by_one_formatter() -> None:
    p = config.Problem("paths.state_dir", "is not writable", "chown it", evidence="mode 0555")
    assert finding.problems_text("/etc/hubsvc/hubsvc.toml", [p]) == (
        "hubsvc: /etc/hubsvc/hubsvc.toml cannot be used:\n"
        "  paths.state_dir: is not writable\n      evidence: mode 0555\n      fix: chown it\n")
    f = Finding("ports.public", "ports", "error", "taken", "", "stop it")
    assert finding.format_problem(f) == "  ports.public: taken\n      fix: stop it"
    assert "evidence" not in finding.render_text([f], None, 0.0)


def test_preflight_does_not_import_the_whole_doctor() -> None:
    code = ("import sys, hubsvc.preflight, hubsvc.survival, hubsvc.reload, hubsvc.slurm\n"
            "print(' '.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout.split()
    loaded = {m for m in out if m.startswith("hubsvc.doctor")}
    assert loaded == {"hubsvc.doctor", "hubsvc.doctor.context", "hubsvc.doctor.files",
                      "hubsvc.doctor.finding", "hubsvc.doctor.hubprobe",
                      "hubsvc.doctor.network", "hubsvc.doctor.programs",
                      "hubsvc.doctor.quick"}, loaded
    assert "cryptography" not in out and "acme" not in out


def test_user_names_from_the_hub_database(tmp_path: Path) -> None:
    import sqlite3

    from hubsvc import hubdb

    assert hubdb.user_names(tmp_path) == []  # no database yet
    con = sqlite3.connect(tmp_path / hubdb.FILE)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.executemany("INSERT INTO users (name) VALUES (?)", [("ann",), ("bo",)])
    con.commit()
    con.close()
    assert sorted(hubdb.user_names(tmp_path)) == ["ann", "bo"]
    (tmp_path / hubdb.FILE).write_bytes(b"not a database")
    assert hubdb.user_names(tmp_path) == []


@pytest.mark.parametrize("line", ["#!/nonexistent/env/bin/python3", "#!/usr/bin/env nopython9"])
def test_hub_script_whose_interpreter_is_gone_blocks_the_start(tmp_path: Path, line: str) -> None:
    """A jupyterhub script left behind by a removed or moved virtualenv: `hubsvc run`
    refuses it (78) instead of starting the proxy and burning the hub's restart budget."""
    from hubsvc import preflight
    from hubsvc.doctor.quick import preflight_findings

    script = tmp_path / "bin" / "jupyterhub"
    script.parent.mkdir()
    script.write_text(line + "\nprint('hub')\n")
    script.chmod(0o755)
    cfg = _cfg(tmp_path, hub={"command": str(script)})
    (tmp_path / "hubsvc.toml").write_text("")
    got = {f.id: f for f in finding.blocking(preflight_findings(cfg))}
    f = got["hub.python"]
    assert line[2:].split()[-1] in f.what and str(script) in f.evidence
    assert "hub.command" in f.fix
    assert "hub.python" in [p.field for p in preflight.static_problems(cfg)]
    # a healthy hub command adds no finding of that id
    healthy = _cfg(tmp_path, hub={"command": str(Path(sys.executable).parent / "jupyterhub")})
    assert "hub.python" not in {x.id for x in preflight_findings(healthy)}


def test_failed_requests_are_described_in_the_doctors_words() -> None:
    """The evidence text of a request that failed is what the doctor always wrote:
    'timed out', 'connection refused'."""
    from hubsvc.doctor import http

    assert http.describe(httpx.ReadTimeout("read timed out")) == "timed out"
    assert http.describe(httpx.ConnectTimeout("connect timed out")) == "timed out"
    with http.client() as c:
        refused = http.get(c, f"http://127.0.0.1:{_free_port()}/hub/health")
    assert http.describe(refused) == "connection refused"


@pytest.mark.parametrize("name", ["state?x", "state#1", "state%20"])
def test_user_names_from_a_database_whose_path_holds_uri_characters(tmp_path: Path,
                                                                      name: str) -> None:
    """The database is opened read-only whatever its folder is called: '?', '#' or '%' in
    the path must not open (or create) another file."""
    import sqlite3

    from hubsvc import hubdb

    sd = tmp_path / name
    sd.mkdir()
    con = sqlite3.connect(sd / hubdb.FILE)
    con.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    con.execute("INSERT INTO users (name) VALUES ('ann')")
    con.commit()
    con.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert hubdb.user_names(sd) == ["ann"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
