"""[tls] config, certificate inspection and the private copy CHP reads, with a throwaway CA
made in the test."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hubsvc import certs, config, hubconfig, secrets, status, tls
from hubsvc.config import ConfigError
from hubsvc.execshim import credential_paths
from tests.tlsca import CA, pem


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA()


def cfg_for(tmp_path: Path, tls_section: str, public: str = "https://hub.example.org:8443/",
            extra: str = "") -> config.Config:
    p = tmp_path / "hubsvc.toml"
    p.write_text(f'[paths]\nstate_dir = "state"\nruntime_dir = "run"\n'
                 f'[proxy]\npublic_url = "{public}"\n{extra}\n[tls]\n{tls_section}\n')
    (tmp_path / "state").mkdir(exist_ok=True)
    (tmp_path / "run").mkdir(exist_ok=True)
    return config.load(p)


def problems(tmp_path: Path, *args: str, **kw: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as e:
        cfg_for(tmp_path, *args, **kw)
    return {p.field: f"{p.message} | {p.fix}" for p in e.value.problems}


# ---- config ------------------------------------------------------------------------------
def test_tls_off_by_default_and_paths_relative_to_config(tmp_path: Path, ca: CA) -> None:
    assert config.parse({}).tls.mode == "off"
    cfg = cfg_for(tmp_path, 'mode = "files"\ncert_file = "c/cert.pem"\nkey_file = "c/key.pem"')
    assert cfg.tls.cert_file == tmp_path / "c" / "cert.pem"
    assert cfg.tls.key_file == tmp_path / "c" / "key.pem"
    assert cfg.tls.http_port == 0 and cfg.tls.hsts_max_age_s == 0


def test_tls_needs_https_public_url_naming_the_field(tmp_path: Path) -> None:
    got = problems(tmp_path, 'mode = "files"\ncert_file = "/c"\nkey_file = "/k"',
                   public="http://0.0.0.0:8000")
    assert "proxy.public_url" in got and "https://" in got["proxy.public_url"]


def test_files_mode_needs_both_files(tmp_path: Path) -> None:
    got = problems(tmp_path, 'mode = "files"\ncert_file = "/c"')
    assert "key_file" in got["tls"]


def test_owned_ssl_flags_rejected_in_extra_args(tmp_path: Path) -> None:
    got = problems(tmp_path, 'mode = "files"\ncert_file = "/c"\nkey_file = "/k"',
                   extra='extra_args = ["--ssl-key", "/k"]')
    assert "--ssl-key" in got["proxy.extra_args"]


def test_http_port_clash_and_acme_rules(tmp_path: Path) -> None:
    got = problems(tmp_path, 'mode = "files"\ncert_file = "/c"\nkey_file = "/k"\nhttp_port = 8443')
    assert "proxy.public_url" in got["tls.http_port"]
    got = problems(tmp_path, 'mode = "acme"', public="https://127.0.0.1/")
    assert "IP address" in got["proxy.public_url"] and "http-01" in got["tls.http_port"]
    got = problems(tmp_path, 'mode = "acme"\nhttp_port = 80\n[tls.acme]\nemail = "nope"')
    assert "tls.acme.email" in got
    cfg = cfg_for(tmp_path, 'mode = "acme"\nhttp_port = 80\n[tls.acme]\nemail = "a@example.org"')
    assert cfg.tls.acme.directory_url == config.LETSENCRYPT_DIRECTORY


# ---- inspection ----------------------------------------------------------------------------
def test_inspect_full_chain_key_match_names_and_expiry(tmp_path: Path, ca: CA) -> None:
    srv = ca.server("hub.example.org", "*.hub.example.org", "127.0.0.1")
    cert, key = ca.write(tmp_path / "c", srv)
    ins = certs.inspect(tls.Source(cert, None, key, "tls.cert_file", "tls.key_file"))
    assert len(ins.chain) == 2
    assert certs.names(ins.leaf) == ["hub.example.org", "*.hub.example.org", "127.0.0.1"]
    assert certs.covers(ins.leaf, "hub.example.org") and certs.covers(ins.leaf, "x.hub.example.org")
    assert not certs.covers(ins.leaf, "a.b.hub.example.org")
    assert not certs.covers(ins.leaf, "other.example.org")
    assert certs.covers(ins.leaf, "127.0.0.1") and not certs.covers(ins.leaf, "127.0.0.2")
    assert certs.expiry(ins.leaf)[0] == "ok"
    trust = [ca.root]
    assert certs.chain_gap(ins.chain, trust) is None


def test_chain_gap_names_the_missing_intermediate(tmp_path: Path, ca: CA) -> None:
    srv = ca.server("hub.example.org")
    cert, key = ca.write(tmp_path / "c", srv, full_chain=False)
    ins = certs.inspect(tls.Source(cert, None, key, "tls.cert_file", "tls.key_file"))
    gap = certs.chain_gap(ins.chain, [ca.root])
    assert gap is not None and "intermediate is missing" in gap
    # certmonger/IPA shape: the intermediates in a file of their own
    chain = tmp_path / "c" / "chain.pem"
    chain.write_bytes(pem(ca.inter))
    ins = certs.inspect(tls.Source(cert, chain, key, "tls.cert_file", "tls.key_file"))
    assert len(ins.chain) == 2 and certs.chain_gap(ins.chain, [ca.root]) is None
    # wrong order
    (tmp_path / "c" / "bad.pem").write_bytes(pem(ca.inter) + pem(srv.cert))
    bad = certs.load_certs(tmp_path / "c" / "bad.pem", "tls.cert_file")
    assert "wrong order" in (certs.chain_gap(bad, [ca.root]) or "")


def test_mismatched_key_is_refused_with_the_field(tmp_path: Path, ca: CA) -> None:
    a, b = ca.server("hub.example.org"), ca.server("hub.example.org")
    cert, _ = ca.write(tmp_path / "a", a)
    _, key_b = ca.write(tmp_path / "b", b)
    with pytest.raises(tls.TlsError) as e:
        certs.inspect(tls.Source(cert, None, key_b, "tls.cert_file", "tls.key_file"))
    assert e.value.problem.field == "tls.key_file"
    assert "does not belong" in e.value.problem.message


def test_unusable_files_name_path_and_fix(tmp_path: Path, ca: CA) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(tls.TlsError) as e:
        certs.load_certs(tmp_path / "junk.pem", "tls.cert_file")
    assert "no PEM certificate" in e.value.problem.message
    with pytest.raises(tls.TlsError) as e:
        certs.load_certs(tmp_path / "missing.pem", "tls.cert_file")
    assert "does not exist" in e.value.problem.message


def test_expiry_states(ca: CA) -> None:
    assert certs.expiry(ca.server("h", days=10).cert)[0] == "expiring"
    assert certs.expiry(ca.server("h", days=1, start_days_ago=5).cert)[0] == "expired"


# ---- the private copy ----------------------------------------------------------------------
def test_install_writes_private_copy_and_chp_args(tmp_path: Path, ca: CA) -> None:
    srv = ca.server("hub.example.org")
    cert, key = ca.write(tmp_path / "c", srv, full_chain=False)
    (tmp_path / "c" / "chain.pem").write_bytes(pem(ca.inter))
    cfg = cfg_for(tmp_path, f'mode = "files"\ncert_file = "{cert}"\nchain_file = '
                            f'"{tmp_path}/c/chain.pem"\nkey_file = "{key}"\nhttp_port = 8080')
    ins = tls.install(cfg)
    assert ins is not None
    d = cfg.paths.runtime_dir / "tls"
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    for f in (ins.cert_path, ins.key_path):
        st = f.stat()
        assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    assert ins.key_path.read_bytes() == key.read_bytes()
    assert ins.cert_path.read_bytes() == pem(srv.cert) + pem(ca.inter)
    args = tls.chp_args(cfg, ins)
    assert args[:4] == ["--ssl-cert", str(ins.cert_path), "--ssl-key", str(ins.key_path)]
    assert args[args.index("--redirect-port") + 1] == "8080"
    assert "--redirect-to" not in args  # CHP redirects to its own https port
    assert key.read_text() not in " ".join(args)
    assert not tls.changed_on_disk(cfg)
    # a renewal on disk (certbot replaced the files) is noticed
    ca.write(tmp_path / "c", ca.server("hub.example.org"), full_chain=False)
    assert tls.changed_on_disk(cfg)
    # status shows the expiry of what CHP serves
    doc = tls.status_doc(cfg)
    assert doc is not None and doc["expiry"] == "ok" and doc["names"] == ["hub.example.org"]
    line = status.tls_line(doc)
    assert line.startswith("certificate (files): valid until ") and "hub.example.org" in line


def test_tls_off_leaves_an_empty_credential_dir(tmp_path: Path) -> None:
    cfg = cfg_for(tmp_path, 'mode = "off"', public="http://127.0.0.1:8000")
    d = cfg.paths.runtime_dir / "tls"
    d.mkdir(mode=0o700)
    (d / "key.pem").write_text("stale")
    assert tls.install(cfg) is None
    assert d.is_dir() and list(d.iterdir()) == []
    assert tls.chp_args(cfg, None) == [] and tls.status_doc(cfg) is None


def test_execshim_points_chp_at_credentials() -> None:
    argv = ["chp", "--ssl-cert", "/run/hubsvc/tls/cert.pem", "--ssl-key",
            "/run/hubsvc/tls/key.pem", "--ip", "/run/hubsvc/tls/../x"]
    out = credential_paths(argv, "/run/credentials/hubsvc-proxy.service")
    assert out[2] == "/run/credentials/hubsvc-proxy.service/tls_cert.pem"
    assert out[4] == "/run/credentials/hubsvc-proxy.service/tls_key.pem"
    assert out[6] == "/run/hubsvc/tls/../x"


def test_hsts_goes_into_the_hub_config(tmp_path: Path, ca: CA) -> None:
    cert, key = ca.write(tmp_path / "c", ca.server("hub.example.org"))
    cfg = cfg_for(tmp_path, f'mode = "files"\ncert_file = "{cert}"\nkey_file = "{key}"\n'
                            'hsts_max_age_s = 31536000')
    files, _ = secrets.ensure(cfg.paths.state_dir)
    text = hubconfig.render(cfg, files)
    assert '"hsts": "max-age=31536000"' in text and "Strict-Transport-Security" in text
