"""Command line: `hubsvc run | check-config | status | reload | probe-spawn | doctor`. Thin: each
subcommand parses its arguments and calls the module that does the work."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING, Any

from . import __version__, config, host, preflight
from .argv import command_word as _command_word
from .commands import resolve_command
from .config import Config, ConfigError, Problem
from .doctor.finding import problems_text

if TYPE_CHECKING:
    from pathlib import Path

    from .launch.process import HeadStart
    from .launch.systemd import UnitHeadStart
    from .secrets import SecretFiles

EX_OK = 0
EX_FAIL = 1
EX_NOT_RUNNING = 3  # as `systemctl status` for an inactive unit
EX_USAGE = 64
EX_SOFTWARE = 70
EX_CONFIG = 78


def _print_problems(problems: list[Problem], source: str) -> None:
    sys.stderr.write(problems_text(source, problems))  # lossy: see main()


def _load(args: argparse.Namespace) -> Config | None:
    """The config, or None after printing every problem (the caller exits 78)."""
    try:
        return config.load(args.config)
    except ConfigError as e:
        _print_problems(e.problems, str(config.resolve_path(args.config)))
        return None


# ---- run ------------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    """Everything is checked before anything runs (CHP's node and the held hub started
    by hubsvc.__main__ only load their modules and wait; they are stopped if a check
    fails); then CHP is executed at once, and the supervisor (its event loop, probes,
    watches) is loaded while CHP starts."""
    import faulthandler

    from . import logs
    from . import secrets as secrets_mod

    faulthandler.enable()  # a watchdog abort (SIGABRT) leaves the stack in the journal
    cfg = _load(args)
    if cfg is None:
        return EX_CONFIG
    launcher = _choose_launcher(cfg)
    if isinstance(launcher, Problem):
        _print_problems([launcher], str(cfg.source))
        return EX_CONFIG
    launcher_name, fallback_reason = launcher
    from . import hubhold

    early_hub = hubhold.held_unit()  # this run's own: binds no port, not a leftover to stop
    hubhold.discard(launcher_name)  # held for the launcher the config does not use
    log_mode = logs.choose_mode()
    configured = False
    skip: set[str] = set()
    if host.started_by_systemd():
        # component units still running (the proxy kept across `systemctl restart hubsvc`)
        from .launch.systemd import units_at_start

        logs.configure(args.log_level, mode=log_mode)  # it may log what it stops
        configured = True
        skip = units_at_start(launcher_name, held=("hub",) if early_hub else ())
    from . import tls

    problems = preflight.run_problems(cfg) + tls.preflight_problems(cfg)
    problems = [p for p in problems if p.field not in skip]
    if problems:
        _print_problems(problems, str(cfg.source))
        return EX_CONFIG
    try:
        files, created = secrets_mod.ensure(cfg.paths.state_dir)
    except secrets_mod.SecretRefused as e:
        _print_problems([Problem("paths.state_dir", f"{e.path} {e.message}", e.fix)],
                        str(cfg.source))
        return EX_CONFIG
    except OSError as e:
        _print_problems([Problem("paths.state_dir", f"cannot create secrets: {e}",
                                 "give the account that runs hubsvc ownership of the state "
                                 "directory")], str(cfg.source))
        return EX_CONFIG
    heads: list[HeadStart] | list[UnitHeadStart]
    if launcher_name != "process":
        from . import warm

        warm.discard()  # systemd runs CHP in its unit
    try:
        heads = (_head_start(cfg, files, log_mode) if launcher_name == "process"
                 else _unit_head_start(cfg, files))
    except ConfigError as e:
        _print_problems(e.problems, str(cfg.source))
        return EX_CONFIG
    import asyncio

    if not configured:
        logs.configure(args.log_level, mode=log_mode)
    return asyncio.run(_run(cfg, launcher_name, log_mode, files, created, heads,
                            fallback_reason))


def _choose_launcher(cfg: Config) -> tuple[str, str | None] | Problem:
    """The launcher, and why "process" was chosen where "auto" looked for systemd."""
    wanted = cfg.supervisor.launcher
    if wanted == "process":
        return "process", None
    if wanted == "auto" and not host.started_by_systemd():
        return "process", None  # not started by systemd
    from .launch.systemd import usable

    why = usable(cfg.paths.state_dir, cfg.paths.runtime_dir)
    if why is None:
        return "systemd", None
    if wanted == "systemd":
        return Problem("supervisor.launcher", f"\"systemd\" cannot be used: {why}",
                       "install the hubsvc package's units and run as root under systemd, "
                       "or set launcher = \"process\"")
    return "process", why


def _output_mode(cfg: Config, launcher_name: str, log_mode: str) -> str:
    """Where the components' output goes (hubsvc.output)."""
    if launcher_name == "systemd":
        return "unit"
    # the hub's output is inherited by users' servers: it must outlive hubsvc
    return "journal" if log_mode == "journal" else f"file:{cfg.paths.state_dir / 'log'}"


def _head_start(cfg: Config, files: SecretFiles, log_mode: str) -> list[HeadStart]:
    """Execute CHP now, with the command line, environment and output the supervisor's
    first start of it would use (launch.process.HeadStart), then the hub held
    (`_early_hub`: since hubsvc.hubhold, or now); what could not be started is left to
    the supervisor's start, which then reports why."""
    from . import components
    from . import secrets as secrets_mod
    from .launch.process import head_start
    from .output import Sink
    from .warm import take

    warm = take(log_mode)  # node already loading CHP, if hubsvc.__main__ started one
    # with it, the output it was given: CHP's, which the supervisor then reads
    sink = warm.sink if warm is not None else Sink("proxy")
    head = None
    try:
        argv, _digest = components.proxy_command(cfg)
        if warm is None:
            sink.prepare(_output_mode(cfg, "process", log_mode))
        env = components.proxy_env(secrets_mod.read(files.proxy_token))
        head = head_start("proxy", argv, env, components.PROXY_CWD, sink, warm)
        warm = None  # handed its command line, or stopped
    except OSError:
        pass  # the supervisor's own start of CHP meets it again, and says why
    finally:
        if warm is not None:
            warm.stop()
        if head is None:
            sink.close()
    return [h for h in (head, _early_hub(cfg, log_mode)) if h is not None]


def _early_hub(cfg: Config, log_mode: str) -> HeadStart | None:
    """The hub held since hubsvc.hubhold started it, before the config was validated,
    when it runs what this config gives (command line, environment, directory, output);
    else it is stopped, and the hub held now (`_hub_hold`)."""
    from . import hubhold

    early = hubhold.take_child()
    if early is not None:
        held, mode = early
        argv, env, cwd = _hub_command(cfg)
        if (held.argv, held.env, held.cwd, mode) == (argv, env, cwd,
                                                     _output_mode(cfg, "process", log_mode)) \
                and held.handle.returncode is None:
            return held
        held.discard()
        held.sink.close()
    return _hub_hold(cfg, log_mode)


def _hub_command(cfg: Config) -> tuple[list[str], dict[str, str], Path]:
    """The hub's command line, environment and working directory (components.hub_spec)."""
    from . import components, hubconfig

    return (components.hub_command(cfg, hubconfig.generated_path(cfg)), host.child_env(),
            cfg.paths.state_dir)


def _hub_hold(cfg: Config, log_mode: str) -> HeadStart | None:
    """The hub's own command line, held (hubsvc.hold): JupyterHub's modules load while CHP
    starts; the supervisor's start of the hub, once CHP is ready, lets it run."""
    from .launch.process import hold_start
    from .output import Sink

    argv, env, cwd = _hub_command(cfg)
    sink = Sink("hub")
    try:
        sink.prepare(_output_mode(cfg, "process", log_mode))
        hold = hold_start("hub", argv, env, cwd, sink)
    except OSError:
        hold = None
    if hold is None:
        sink.close()
    return hold


def _unit_head_start(cfg: Config, files: SecretFiles) -> list[UnitHeadStart]:
    """Start hubsvc-proxy.service now, with the launch file the supervisor's first start
    of it would write (launch.systemd.head_start), then hubsvc-hub.service held: the one
    hubsvc.hubhold started before the config was validated when it runs what this config
    gives (else stopped, and the hub is not held), or held now when hubhold did not start
    it. What was not started is left to the supervisor."""
    from . import components, hubhold
    from . import secrets as secrets_mod
    from .launch.systemd import head_start, log

    proxy = None
    argv, _digest = components.proxy_command(cfg)
    try:
        env = components.proxy_env(secrets_mod.read(files.proxy_token))
    except OSError:
        pass  # the supervisor's own start of CHP meets it again, and says why
    else:
        proxy = head_start("proxy", argv, components.PROXY_CWD, env, cfg.paths.runtime_dir)
    hub_argv, hub_env, hub_cwd = _hub_command(cfg)
    # taken only now: if anything above raised, __main__'s hubhold.discard stops it
    early = hubhold.take_unit()
    if early is not None:
        # not without CHP's head start (a proxy kept running: its hub starts after the
        # adopt), nor with another command line, environment or directory
        differs = ["proxy"] if proxy is None else early.differs_from(hub_argv, hub_cwd, hub_env)
        if not differs:
            return [proxy, early]
        # stopped without waiting for the job: the supervisor starts the hub when CHP is
        # ready, with the launch file of this config
        error = early.stop()
        log.warning("head_start_discarded", component="hub", unit=early.unit, differs=differs,
                    action="stopped", **({"error": error} if error else {}))
        return [proxy] if proxy is not None else []
    if proxy is None:
        return []
    hub = head_start("hub", hub_argv, hub_cwd, hub_env, cfg.paths.runtime_dir, hold=True)
    return [h for h in (proxy, hub) if h is not None]


async def _run(cfg: Config, launcher_name: str, log_mode: str, files: SecretFiles,
               created: list[str], heads: list[HeadStart] | list[UnitHeadStart],
               fallback_reason: str | None) -> int:
    import asyncio
    import contextlib

    import structlog

    from . import components, hubconfig, loopback, probes, routewatch, tls
    from . import secrets as secrets_mod
    from .hubapi import HubAPI
    from .notify import Notifier
    from .slurm import SchedulerWatch
    from .supervisor import HubChecks, Supervisor
    from .watch import Watch

    log = structlog.get_logger("hubsvc")
    notifier = Notifier()  # strips NOTIFY_SOCKET & co from the environment children get
    log.info("starting", version=__version__, config=str(cfg.source), pid=os.getpid(),
             systemd=notifier.enabled, watchdog_s=notifier.watchdog_interval_s)
    if fallback_reason is not None:
        log.info("launcher_chosen", launcher="process", reason=fallback_reason)
    for path in created:
        log.info("secret_created", path=path)
    keep = cfg.hub.user_servers_on_stop == "keep" or (
        cfg.hub.user_servers_on_stop == "auto" and host.started_by_systemd())
    # liveness probes get connections of their own (kept open, through the loopback client:
    # they run every health interval for as long as hubsvc runs): nothing else hubsvc asks
    # of the hub or CHP can queue in front of them
    probe_client = loopback.Client()
    answers = probes.ApiAnswers()  # the drift watch's table reads: CHP's API answers
    async with probes.LazyClient() as client, contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(probe_client.aclose)

        def build(c: Config) -> list[components.ComponentSpec]:
            generated = hubconfig.write(c, files)
            return [components.proxy_spec(c, files, probe_client, answers),
                    components.hub_spec(c, generated, probe_client)]

        async def reload() -> tuple[Config, list[components.ComponentSpec]]:
            """Validate everything before anything is touched; then render the new specs."""
            from .reload import check_admin_config

            new = config.load(cfg.source)
            problems = preflight.static_problems(new)
            if new.paths != cfg.paths:
                problems.append(Problem("paths", "cannot change while hubsvc runs",
                                        "restart hubsvc (systemctl restart hubsvc) to move its state"))
            problems += preflight.port_problems(new, only_changed_from=sup.cfg)
            try:  # a secret file changed since the start is refused here, not at exec
                secrets_mod.check(new.paths.state_dir)
            except secrets_mod.SecretRefused as e:
                problems.append(Problem("paths.state_dir", f"{e.path} {e.message}", e.fix))
            if not problems:
                # the hub's own Python loads the admin's file in a child (seconds): off the loop
                admin = await asyncio.to_thread(check_admin_config, new)
                if admin is not None:
                    problems.append(admin)
            if problems:
                raise ConfigError(problems)
            return new, build(new)

        def rollback(old: Config, admin_text: str | None) -> list[components.ComponentSpec]:
            """The last good configuration again. The admin's file has changed since the
            running hub read it, so the hub gets the text it last started with (a 0600
            copy: it may hold secrets)."""
            if admin_text is not None and old.hub.config_file is not None:
                snap = old.paths.runtime_dir / "jupyterhub_config.last_good.py"
                tls.write_private(snap, admin_text.encode())
                old = old.model_copy(update={"hub": old.hub.model_copy(update={"config_file": snap})})
            return build(old)

        output = _output_mode(cfg, launcher_name, log_mode)
        if launcher_name == "systemd":
            from .launch.systemd import SystemdLauncher

            launcher: Any = SystemdLauncher(cfg.paths.runtime_dir, heads)  # type: ignore[arg-type]
        else:
            from .launch.process import ProcessLauncher

            launcher = ProcessLauncher(heads)  # type: ignore[arg-type]
        stack.callback(launcher.discard_head_starts)  # never taken: a stop came first
        log.info("launcher", launcher=launcher_name, output=output)
        sup = Supervisor(
            cfg, build(cfg), launcher, notifier,
            HubAPI(client, cfg, secrets_mod.read(files.hub_api_token)),
            proxy_token=secrets_mod.read(files.proxy_token),
            keep_user_servers=keep,
            output_mode=output,
            reloader=reload,
            rollback=rollback,
            probe_client=probe_client,
            sinks={h.name: h.sink for h in heads} if launcher_name == "process"
            else None,  # type: ignore[union-attr]
        )
        # whether users' servers outlive hubsvc's actions (another Python loading the
        # admin's config): once ready, not while CHP and the hub start
        sup.on_ready.append(lambda: _survival_check(cfg, launcher_name))
        if heads:  # a stop before the bring-up took them: stopped before the sinks close
            sup.on_stop.append(launcher.discard_head_starts)
        sup.periodic.append(_overrides_reporter(cfg))
        sup.periodic.append(_lost_lines_reporter(sup))
        tls.attach(sup)  # certificate expiry in status; renewed/changed certificates reload
        hub_token = secrets_mod.read(files.hub_api_token)
        watch = Watch(sup, client, hub_token, answers)
        watch.attach()
        if isinstance(sup.checks, HubChecks):  # a replaced CHP gets the table the watch read
            sup.checks.snapshot = lambda: routewatch.watch_for(sup.cfg).last_table
        # users' servers running as batch jobs: queued jobs show in `hubsvc status`
        sup.periodic.append(SchedulerWatch(client, cfg, hub_token, sup.extra_status,
                                           on_change=sup.publish,
                                           count_client=watch.local_client))
        import gc

        gc.enable()  # off while the modules loaded (hubsvc.__main__)
        return await sup.run()


def _survival_check(cfg: Config, launcher_name: str) -> None:
    from . import survival

    survival.warn_in_background(cfg, launcher_name)


def _lost_lines_reporter(sup: Any) -> Any:
    """Status again when hubsvc's stderr lost more lines (its reader gone: the journal's
    stream, a pipe) while nothing else changed; every status carries the count
    (`log_lines_lost`, Supervisor.publish)."""
    from .logs import lost_lines

    published = [0]

    async def lost_log_lines() -> None:
        n = lost_lines()
        if n != published[0]:
            published[0] = n
            sup.publish()

    return lost_log_lines


def _overrides_reporter(cfg: Config) -> Any:
    """Warn once about each owned setting the admin's JupyterHub config tried to set."""
    import structlog

    from . import hubconfig

    log = structlog.get_logger("hubsvc")
    seen: set[str] = set()
    last: list[object] = [None]  # the report file's (mtime, size) when last read

    async def owned_settings() -> None:
        # the hub writes the report when it loads its config: read it again only then
        try:
            st = os.stat(cfg.paths.runtime_dir / hubconfig.OVERRIDES_NAME)
        except OSError:
            return
        if (st.st_mtime_ns, st.st_size) == last[0]:
            return
        last[0] = (st.st_mtime_ns, st.st_size)
        for key in hubconfig.read_overrides(cfg) or []:
            if key not in seen:
                seen.add(key)
                log.warning("owned_setting_ignored", key=key, file=str(cfg.hub.config_file),
                            reason="hubsvc sets this itself from hubsvc.toml; remove it from "
                                   "the JupyterHub config")

    return owned_settings


# ---- check-config -----------------------------------------------------------------------
def effective(cfg: Config) -> dict[str, Any]:
    from . import status

    base = cfg.source.parent if cfg.source else None
    proxy_cmd = resolve_command(cfg.proxy.command, base)
    hub_cmd = resolve_command(cfg.hub.command, base)
    doc = cfg.model_dump(mode="json")
    doc["restart"]["max_restarts_total"] = cfg.restart.total_budget  # the effective budget
    doc["source"] = str(cfg.source)
    doc["resolved"] = {
        "proxy.command": str(proxy_cmd) if proxy_cmd else None,
        "hub.command": str(hub_cmd) if hub_cmd else None,
        "users_open": cfg.public.origin + cfg.public.path,
        "proxy_api": cfg.api.origin,
        "hub_private": cfg.hub_bind.origin + cfg.public.path + "hub/",
        "generated_hub_config": str(cfg.paths.runtime_dir / "jupyterhub_config.py"),
        "status_file": str(cfg.paths.runtime_dir / status.FILE),
    }
    return doc


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = _load(args)
    if cfg is None:
        return EX_CONFIG
    from .tls import file_problems

    problems = preflight.static_problems(cfg) + file_problems(cfg)
    if problems:
        _print_problems(problems, str(cfg.source))
        return EX_CONFIG
    doc = effective(cfg)
    if args.json:
        print(json.dumps(doc, indent=1))
        return EX_OK
    print(f"{cfg.source}: OK\n")
    for section in ("paths", "proxy", "hub", "health", "restart", "tls"):
        print(f"[{section}]")
        for k, v in doc[section].items():
            print(f"  {k} = {json.dumps(v)}")
    print("\n[resolved]")
    for k, v in doc["resolved"].items():
        print(f"  {k} = {v}")
    return EX_OK


# ---- status -------------------------------------------------------------------------
def cmd_status(args: argparse.Namespace) -> int:
    from . import status

    # The status must stay readable while the config file is being edited (or broken):
    # it only needs runtime_dir.
    try:
        runtime_dir = config.load(args.config).paths.runtime_dir
    except ConfigError as e:
        runtime_dir = config.runtime_dir_hint(args.config)
        print(f"hubsvc: warning: {config.resolve_path(args.config)} has problems "
              f"({e.problems[0].field}: {e.problems[0].message}); reading the status in "
              f"{runtime_dir}", file=sys.stderr)
    doc = status.read(runtime_dir)
    if doc is None:
        print(f"hubsvc is not running (no {runtime_dir / status.FILE}).\n"
              "  start it: systemctl start hubsvc   (or: hubsvc run)", file=sys.stderr)
        return EX_NOT_RUNNING
    running = status.supervisor_running(doc)
    running = running and doc.get("state") not in ("stopped", "failed")
    doc["running"] = running
    if running and doc.get("launcher") == "systemd":
        status.add_unit_views(doc)
    if args.json:
        print(json.dumps(doc, indent=1, sort_keys=True))
    else:
        print(status.render_table(doc, running))
    if not running:
        if not args.json:
            print(f"\nhubsvc is not running (status file left by pid {doc.get('pid')}).",
                  file=sys.stderr)
        return EX_NOT_RUNNING
    return EX_OK


# ---- reload -------------------------------------------------------------------------
def cmd_reload(args: argparse.Namespace) -> int:
    from . import reload

    if args.timeout <= 0:
        print("hubsvc reload: --timeout must be more than 0 seconds", file=sys.stderr)
        return EX_USAGE
    # like `status`: the file being reloaded may be broken; the supervisor says why
    try:
        runtime_dir = config.load(args.config).paths.runtime_dir
    except ConfigError:
        runtime_dir = config.runtime_dir_hint(args.config)
    return reload.request(runtime_dir, args.timeout)


# ---- probe-spawn / doctor ---------------------------------------------------------------
def cmd_probe_spawn(args: argparse.Namespace) -> int:
    import asyncio

    from . import probe

    cfg = _load(args)
    if cfg is None:
        return EX_CONFIG
    return asyncio.run(probe.run_cli(cfg, args))


def cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    return doctor.run_doctor(args.config, as_json=args.json, out=sys.stdout, url=args.url)


# ---- parser --------------------------------------------------------------------------
def build_parser(probe_options: bool = True) -> argparse.ArgumentParser:
    """The whole command line. `probe_options=False` leaves out probe-spawn's own options,
    which need the (large) loop-probe module: `hubsvc run` starts faster without it."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help=f"hubsvc.toml (default: ${config.ENV_VAR}, else {config.DEFAULT_PATH})")
    p = argparse.ArgumentParser(prog="hubsvc", parents=[common],
                                description="JupyterHub + configurable-http-proxy, supervised.")
    p.add_argument("--version", action="version", version=f"hubsvc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    r = sub.add_parser("run", parents=[common], help="run the supervisor in the foreground")
    r.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("check-config", parents=[common],
                       help="validate the config and print the effective settings")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check_config)

    s = sub.add_parser("status", parents=[common], help="what the running supervisor reports")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    rl = sub.add_parser("reload", parents=[common],
                        help="re-read the config in the running supervisor and wait for the "
                             "outcome (0 applied, 1 refused or rolled back, 3 not running)")
    rl.add_argument("--timeout", type=float, default=300.0, metavar="S",
                    help="seconds to wait for the outcome (default 300)")
    rl.set_defaults(func=cmd_reload)

    ps = sub.add_parser("probe-spawn", parents=[common],
                        help="walk login -> spawn like a browser; detect and explain redirect loops")
    if probe_options:
        from . import probe

        probe.add_arguments(ps)
    ps.set_defaults(func=cmd_probe_spawn)

    d = sub.add_parser("doctor", parents=[common],
                       help="find what would break this installation, and how to fix it")
    d.add_argument("--json", action="store_true")
    d.add_argument("--url", metavar="URL",
                   help="a URL users open: is it the public entry point or the hub's private port?")
    d.set_defaults(func=cmd_doctor)
    return p


def main(argv: list[str] | None = None) -> int:
    from .logs import lossy

    # what hubsvc tells a person on stderr must never turn into a different exit code
    # when nobody reads it any more (only stdout's reader leaving is a normal end, below)
    sys.stderr = lossy(sys.stderr)
    args_in = sys.argv[1:] if argv is None else argv
    parser = build_parser(probe_options=_command_word(args_in) not in
                          ("run", "status", "check-config", "doctor"))
    try:
        args = parser.parse_args(args_in)
    except SystemExit as e:
        return EX_USAGE if e.code not in (0, None) else EX_OK
    if not hasattr(args, "config"):
        args.config = None
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout's reader left (`hubsvc status | head`)
        return EX_OK


if __name__ == "__main__":
    sys.exit(main())


