"""The hub held from the first milliseconds of `hubsvc run` (hubsvc.hubhold): its guess of
the hub's command line, environment and working directory from the raw TOML must be what
the validated config gives (cli._hub_command) wherever the systemd launcher would run it,
and nothing where it would not. A wrong guess is caught after validation and costs only
the early start; these tests keep it from being wrong."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hubsvc import cli, config, hubconfig, hubhold
from hubsvc.launch.unitstart import RUNTIME_DIR, STATE_DIR
from hubsvc.output import ROTATE_BYTES

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "etc" / "hubsvc" / "hubsvc.toml"


def both(path: Path) -> tuple[object, object]:
    raw = tomllib.loads(path.read_text())
    return hubhold.guess(raw, path, STATE_DIR, RUNTIME_DIR), cli._hub_command(config.load(path))


def test_the_constants_are_the_configs_own() -> None:
    assert hubhold.GENERATED_NAME == hubconfig.GENERATED_NAME
    assert hubhold.DEFAULT_CONFIG == str(config.DEFAULT_PATH)
    assert hubhold.DEFAULT_HUB_COMMAND == config.Config().hub.command


@pytest.mark.parametrize("extra", [
    "",
    '[paths]\nstate_dir = "/var/lib/hubsvc"\nruntime_dir = "/run/hubsvc/"\n',
    '[supervisor]\nlauncher = "systemd"\n',
    '[hub]\nextra_args = ["--JupyterHub.log_level=DEBUG"]\n',
    '[hub]\ncommand = "COMMAND"\n',
    '[hub]\ncommand = "./bin/jh"\n',
    '[hub]\ncommand = " ./bin/jh "\nextra_args = [" --debug ", "x"]\n',
    '[paths]\nstate_dir = "/var/lib/hubsvc/"\n',
])
@pytest.mark.parametrize("through_link", [False, True])
def test_the_guess_is_what_the_validated_config_gives(tmp_path: Path, extra: str,
                                                      through_link: bool) -> None:
    script = tmp_path / "bin" / "jh"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    text, extra = SHIPPED.read_text(), extra.replace("COMMAND", str(script))
    section = extra.split("\n", 1)[0] + "\n"
    if extra and f"\n{section}" in text:  # the shipped file has it: add the keys there
        text = text.replace(f"\n{section}", f"\n{extra}", 1)
    else:
        text += "\n" + extra
    path = tmp_path / "hubsvc.toml"
    path.write_text(text)
    if through_link:  # --config through a symbolic link to another directory
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "elsewhere" / "hubsvc.toml").symlink_to(path)
        path = tmp_path / "elsewhere" / "hubsvc.toml"
    guessed, validated = both(path)
    assert guessed == validated
    assert guessed is not None and guessed[0][1:3] == ["--config", str(RUNTIME_DIR / "jupyterhub_config.py")]


@pytest.mark.parametrize("extra", [
    '[supervisor]\nlauncher = "process"\n',
    '[paths]\nstate_dir = "/srv/hub"\n',
    '[paths]\nruntime_dir = "run"\n',
    '[hub]\ncommand = 5\n',
    '[hub]\nextra_args = "--debug"\n',
    'paths = 3\n',
])
def test_no_guess_where_the_systemd_launcher_would_not_run_it(tmp_path: Path, extra: str) -> None:
    raw = tomllib.loads(extra)
    assert hubhold.guess(raw, tmp_path / "hubsvc.toml", STATE_DIR, RUNTIME_DIR) is None


def _early_child(tmp_path: Path, state_mode: int = 0o700, log_dir: bool = True,
                 argv: str = "['run', '--config', CONFIG]", log_file: str = "") -> list[str]:
    """`hubhold.begin` in a fresh interpreter (no INVOCATION_ID: not a unit of systemd),
    for a config naming the process launcher and a hub script of this Python: what it
    held, whether pydantic, asyncio or structlog were loaded, and the held process's
    state after `discard`."""
    script = tmp_path / "bin" / "jh"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\nimport sys\nfrom json import main\n")
    script.chmod(0o755)
    state = tmp_path / "state"
    state.mkdir(mode=state_mode)
    state.chmod(state_mode)
    if log_dir:
        (state / "log").mkdir(mode=0o700)
    out_file = state / "log" / "hub-output.log"
    if log_file == "due":  # past output.ROTATE_BYTES: the first start after it rotates it
        with open(out_file, "wb") as f:
            f.truncate(ROTATE_BYTES + 1)
    elif log_file == "fifo":
        os.mkfifo(out_file, 0o600)
    elif log_file == "link":
        out_file.symlink_to(tmp_path / "elsewhere.log")
    cfg = tmp_path / "hubsvc.toml"
    cfg.write_text(f'[supervisor]\nlauncher = "process"\n[hub]\ncommand = "{script}"\n'
                   f'[paths]\nstate_dir = "state"\nruntime_dir = "{tmp_path / "run"}"\n')
    code = (f"import sys\nfrom hubsvc import hubhold\nCONFIG = {str(cfg)!r}\n"
            f"hubhold.begin({argv})\n"
            "child = hubhold._child\n"
            "print(hubhold.held_unit(), child is not None, 'pydantic' in sys.modules,"
            " 'asyncio' in sys.modules, 'structlog' in sys.modules)\n"
            "if child:\n"
            "    held, mode = child\n"
            "    print(held.argv == [CONFIG.rsplit('/', 1)[0] + '/bin/jh', '--config',"
            f" {str(tmp_path / 'run' / 'jupyterhub_config.py')!r}], held.cwd, mode,"
            " held.handle.returncode)\n"
            "    hubhold.discard()\n"
            "    print(held.handle.returncode is not None, held.sink.fd)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("INVOCATION_ID", "JOURNAL_STREAM")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env, cwd=REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout.split()


def test_the_process_launcher_holds_the_hub_from_the_first_milliseconds(tmp_path: Path) -> None:
    """Outside systemd, the hub's own command line is started held (a child of hubsvc,
    output to the hub's file in the state folder) before pydantic, asyncio or structlog
    are loaded; `discard` stops and reaps it and closes its output."""
    out = _early_child(tmp_path)
    assert out[:5] == ["False", "True", "False", "False", "False"], out
    assert out[5:9] == ["True", str(tmp_path / "state"), f"file:{tmp_path / 'state' / 'log'}",
                        "None"], out
    assert out[9:] == ["True", "-1"], out
    assert (tmp_path / "state" / "log" / "hub-output.log").exists()


RUN = "['run', '--config', CONFIG]"


@pytest.mark.parametrize(("state_mode", "log_dir", "argv", "log_file"), [
    (0o770, True, RUN, ""),     # other accounts may write there
    (0o700, False, RUN, ""),    # a first start: nothing made before the preflight
    (0o700, True, "['run', '--config', CONFIG, '--bogus']", ""),  # a usage error
    (0o700, True, RUN, "due"),  # rotating it could move a running hub's output aside
    (0o700, True, RUN, "fifo"),  # opening it would block
    (0o700, True, RUN, "link"),
])
def test_nothing_is_held_before_a_check_that_could_refuse_it(
        tmp_path: Path, state_mode: int, log_dir: bool, argv: str, log_file: str) -> None:
    """The preflight refuses a state folder others may write to, creates what is missing,
    and refuses a second instance before its sink rotates the hub's output file: the
    early hold waits for all of it then, and touches nothing there."""
    out_file = tmp_path / "state" / "log" / "hub-output.log"
    out = _early_child(tmp_path, state_mode, log_dir, argv, log_file)
    assert out == ["False", "False", "False", "False", "False"], out
    if log_file == "due":
        assert out_file.stat().st_size == ROTATE_BYTES + 1
        assert not out_file.with_name("hub-output.log.1").exists()
    elif not log_file:
        assert not out_file.exists()
    assert not (tmp_path / "elsewhere.log").exists()


def test_the_unit_start_module_stays_light() -> None:
    """launch.unitstart is what hubhold.begin loads under systemd: standard library,
    pystemd's binding and hubsvc.hold only."""
    code = ("import sys\nfrom hubsvc.launch import unitstart\n"
            "print('pydantic' in sys.modules, 'asyncio' in sys.modules,"
            " 'structlog' in sys.modules, 'lxml' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.stdout.split() == ["False", "False", "False", "False"], out.stdout + out.stderr


class _Early:
    """Stand-in for the UnitHeadStart hubhold.begin left pending (the decision is pure)."""

    def __init__(self, differs: list[str]) -> None:
        self.unit, self._differs, self.stopped = "hubsvc-hub.service", differs, 0

    def differs_from(self, argv: list[str], cwd: Path, env: object) -> list[str]:
        return self._differs

    def stop(self) -> None:
        self.stopped += 1


@pytest.mark.parametrize(("differs", "proxy_started", "kept"), [
    ([], True, True),           # what the config gives, CHP head-started: kept
    (["argv"], True, False),    # another command line: stopped, the hub not held again
    (["env"], False, False),
    ([], False, False),         # CHP's unit not head-started (kept running): stopped
])
def test_the_early_hub_is_kept_only_when_it_runs_what_the_config_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, differs: list[str],
        proxy_started: bool, kept: bool) -> None:
    from hubsvc import secrets
    from hubsvc.launch import systemd

    early, calls = _Early(differs), []

    def head_start(component: str, *args: object, **kw: object) -> object:
        calls.append(component)
        return f"head-{component}" if component == "proxy" and proxy_started else None

    monkeypatch.setattr(systemd, "head_start", head_start)
    monkeypatch.setattr(hubhold, "_unit", early)
    path = tmp_path / "hubsvc.toml"
    path.write_text(SHIPPED.read_text().replace(
        "\n[paths]\n", f'\n[paths]\nstate_dir = "{tmp_path}"\nruntime_dir = "{tmp_path / "run"}"\n', 1))
    cfg = config.load(path)
    (tmp_path / "run").mkdir(mode=0o755)  # preflight.ensure_dirs made it
    files = secrets.SecretFiles.in_dir(tmp_path)
    files.proxy_token.write_text("x" * 64)
    files.proxy_token.chmod(0o600)
    out = cli._unit_head_start(cfg, files)
    assert calls == ["proxy"]  # never held a second time
    assert not hubhold.held_unit()
    assert early.stopped == (0 if kept else 1)
    assert out == ((["head-proxy", early] if kept else ["head-proxy"]) if proxy_started else [])


@pytest.mark.parametrize(("argv", "plain"), [
    (["run"], True),
    (["--config", "/x.toml", "run"], True),
    (["run", "--config=/x.toml", "--log-level", "debug"], True),
    (["run", "--he"], False),                     # argparse: --help, abbreviated
    (["--version", "run"], False),
    (["run", "--conf", "/x.toml"], False),        # abbreviated: not what the guess reads
    (["run", "--log-level", "loud"], False),      # a usage error
    (["--log-level", "debug", "run"], False),     # not an option of the top level
    (["run", "--config"], False),
    (["run", "--config="], False),
    (["run", "extra"], False),
])
def test_the_hub_is_held_early_only_for_a_run_that_will_read_its_config(
        argv: list[str], plain: bool) -> None:
    """hubhold.begin starts nothing for a command line cli's parser would refuse, or
    answer with --help or --version: it agrees with the parser itself."""
    from hubsvc.argv import plain_run

    assert plain_run(argv) is plain
    try:
        cli.build_parser().parse_args(argv)
        parsed = True
    except SystemExit:
        parsed = False
    if plain:
        assert parsed


class _Child:
    """Stand-in for the held child hubhold.begin left pending (process launcher)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, exited: bool) -> None:
        from types import SimpleNamespace

        self.argv, self.env, self.cwd, self.discarded = argv, env, cwd, 0
        self.handle = SimpleNamespace(returncode=1 if exited else None)
        self.sink = SimpleNamespace(close=lambda: None)

    def discard(self) -> None:
        self.discarded += 1


@pytest.mark.parametrize(("change", "kept"), [
    (None, True),
    ("argv", False), ("env", False), ("cwd", False), ("mode", False), ("exited", False),
])
def test_the_early_child_is_kept_only_when_it_runs_what_the_config_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str | None,
        kept: bool) -> None:
    cfg = config.load(SHIPPED)
    argv, env, cwd = cli._hub_command(cfg)
    mode = cli._output_mode(cfg, "process", "line")
    child = _Child(argv + (["--x"] if change == "argv" else []),
                   {**env, "X": "1"} if change == "env" else env,
                   tmp_path if change == "cwd" else cwd, change == "exited")
    monkeypatch.setattr(hubhold, "_child", (child, "journal" if change == "mode" else mode))
    monkeypatch.setattr(cli, "_hub_hold", lambda cfg, log_mode: "held-now")
    assert cli._early_hub(cfg, "line") == (child if kept else "held-now")
    assert child.discarded == (0 if kept else 1)
    assert hubhold.take_child() is None
