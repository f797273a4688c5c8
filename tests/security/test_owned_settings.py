"""extra_args cannot set what hubsvc owns: checked against JupyterHub 6.1.1's own
command-line parser, for every spelling it accepts, not against a list of examples."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from jupyterhub import app as hubapp
from jupyterhub.proxy import ConfigurableHTTPProxy
from pydantic import ValidationError
from traitlets.config import Configurable

from hubsvc import config, hubconfig

OWNED_TRAITS = sorted({*hubconfig.OWNED, ("JupyterHub", "config_file")})
CLASSES = {"JupyterHub": hubapp.JupyterHub, "ConfigurableHTTPProxy": ConfigurableHTTPProxy}


_HUB = hubapp.JupyterHub()
_FLAGS, _ALIASES = _HUB.flatten_flags()
_CLASSES = list(_HUB._classes_with_config_traits())


def _parse(args: list[str]) -> Any:
    """The config JupyterHub's own parser makes of `args` (None: it refuses them): the
    loader Application.parse_command_line builds, with the hub's aliases and flags."""
    try:
        return _HUB._create_loader(args, _ALIASES, _FLAGS, classes=_CLASSES).load_config()
    except (SystemExit, Exception):
        return None


def _owned_changes(cfg: Any) -> set[str]:
    """Owned settings that the parsed command line sets (the command line outranks the
    generated config file): a value for an owned trait in any section that reaches its
    class (the sections are checked against the real class hierarchy below)."""
    out = set()
    for owner, trait in OWNED_TRAITS:
        for section in config.HUB_CLASS_PARENTS[owner]:
            sec = cfg.get(section) if section in cfg else None
            if sec is not None and hasattr(sec, "keys") and trait in sec:
                out.add(f"{owner}.{trait}")
    return out


def _value(trait: str) -> str:
    if trait in ("cleanup_servers", "cleanup_proxy", "should_start"):
        return "True"
    if trait in ("port", "hub_port"):
        return "9"
    if trait.endswith("url"):
        return "http://10.9.9.9:9/x/"
    return "x" * 40


def _spellings() -> list[list[str]]:
    out = []
    for (cls, trait), dash in itertools.product(OWNED_TRAITS, ("--", "-")):
        for section in config.HUB_CLASS_PARENTS.get(cls, (cls,)):
            for sec, tr in ((section, trait), (section.lower(), trait),
                            (section, trait.replace("_", "-")), (section, trait.upper())):
                out.append([f"{dash}{sec}.{tr}={_value(trait)}"])
                out.append([f"{dash}{sec}.{tr}", _value(trait)])
    for alias, (_cls, trait) in config.HUB_ALIASES.items():
        for dash in ("--", "-"):
            out.append([f"{dash}{alias}={_value(trait)}"])
            out.append([f"{dash}{alias}", _value(trait)])
            out.append([f"{dash}{alias}"])
            for cut in range(1, len(alias)):  # argparse takes unambiguous prefixes
                out.append([f"{dash}{alias[:cut]}={_value(trait)}"])
    return out


def test_tables_match_jupyterhub() -> None:
    real_aliases = {k: tuple(v.split(".", 1)) for k, v in hubapp.aliases.items()}
    real_flags = {k: next((sec, key) for sec, d in v[0].items() for key in d)
                  for k, v in hubapp.flags.items()}
    assert {**real_aliases, **real_flags} == config.HUB_ALIASES
    for name, cls in CLASSES.items():
        mro = tuple(c.__name__ for c in cls.__mro__ if issubclass(c, Configurable))
        assert config.HUB_CLASS_PARENTS[name] == mro


def test_parser_shortcut_is_jupyterhubs_own() -> None:
    """_parse gives what `jupyterhub ARGS` parses, for a few spellings of each kind."""
    for args in (["--base-u=/x/"], ["--Application.bind_url", "http://a:1/"], ["--no-db"],
                 ["--JupyterHub.cleanup_servers=True"], ["--base=/x/"]):
        app = hubapp.JupyterHub()
        app.parse_command_line(args)
        assert dict(_parse(args)) == dict(app.config)


def test_every_spelling_jupyterhub_accepts_for_an_owned_setting_is_refused(
        capsys: pytest.CaptureFixture[str]) -> None:
    owned = config.hub_owned_settings()
    checked = reached = 0
    for args in _spellings():
        cfg = _parse(args)
        checked += 1
        if cfg is None:
            continue  # JupyterHub itself refuses this spelling: the hub would not start
        changes = _owned_changes(cfg)
        refused = any(config.owned_hub_arg(a, owned) for a in args)
        if changes:
            reached += 1
            assert refused, f"{args} sets {changes} but extra_args would accept it"
    assert checked > 300 and reached > 100  # the generator really reached owned settings


@pytest.mark.parametrize("args", [
    ["--JupyterHub.cleanup_servers=True"], ["--base-url=/x/"], ["--base-url", "/x/"],
    ["--Application.bind_url=http://1.2.3.4:9"], ["--Proxy.should_start", "True"],
    ["--Configurable.auth_token=abc"], ["--no-db"], ["-f", "/tmp/x.py"],
    ["--generate-config"], ["--JupyterHub.hub_connect_url=http://x:1"],
])
def test_owned_hub_args_refused_with_the_setting_named(args: list[str]) -> None:
    with pytest.raises(ValidationError) as e:
        config.Hub(extra_args=args)
    assert "is set by hubsvc: it sets" in str(e.value)


def test_admins_own_options_still_pass() -> None:
    args = ["--log-level=DEBUG", "--debug", "--Spawner.default_url=/lab",
            "--JupyterHub.tornado_settings={}", "--upgrade-db"]
    assert config.Hub(extra_args=args).extra_args == args


@pytest.mark.parametrize("arg", ["--port=1", "--api-port", "--api-ssl-key=/k", "--error-path=/e",
                                 "--default-target=http://x"])
def test_owned_proxy_flags_refused(arg: str) -> None:
    with pytest.raises(ValidationError, match="set by hubsvc"):
        config.Proxy(extra_args=[arg])
