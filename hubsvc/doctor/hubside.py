"""Runs inside the hub's own Python (`PYTHON hubside.py ARGS_JSON`), never imported by
hubsvc: it loads the admin's JupyterHub config the way JupyterHub does and prints one
JSON object (the only thing on its stdout) with what the doctor, the reload check and
the Slurm checks need:

- `version` / `error`: JupyterHub's version, or why it cannot be imported;
- `load_error`: the config file's exception with its line, when it fails to load;
- `owned_set`: the settings hubsvc owns that the file sets anyway;
- `authenticator`, `spawner`: the resolved classes (`class`, `mro`) or the import `error`;
- `spawner_cmd`, `config_users`: the single-user command, users named in the config;
- `spawner_settings`: the effective spawner traits that decide whether a batch job can
  start (`values`: value and the config section that set it, `ip_class_default`);
- `flow`: the settings that decide where a browser goes (hubsvc.probe.model.FlowSettings),
  None when the file does not load.

With `"only": "flow"` in ARGS_JSON it loads the file and answers `flow` and `load_error`
alone, without importing JupyterHub (the supervisor's periodic probe and probe-spawn).

Only the standard library, traitlets and JupyterHub are imported here.
"""

import os  # os and sys are loaded before any script runs: nothing can shadow them
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Python puts the script's folder first on sys.path; hubsvc's modules there (jupyterhub.py,
# systemd.py, http.py …) must not shadow what this probe or the admin's config imports,
# so the folder goes before anything else is imported.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != HERE]

import json  # noqa: E402
import traceback  # noqa: E402

BATCH_KEYS = ("cmd", "batchspawner_singleuser_cmd", "req_prologue", "exec_prefix", "ip",
              "req_srun", "start_timeout")


def load_config(path):
    """(config, load_error) for the admin's file ("" → an empty config)."""
    from traitlets.config import Config

    if not path:
        return Config(), None
    try:
        from traitlets.config.loader import PyFileConfigLoader

        loader = PyFileConfigLoader(os.path.basename(path), path=os.path.dirname(path))
        return loader.load_config(), None
    except BaseException as e:  # the admin's code may raise anything, even SystemExit
        line = None
        for fr in traceback.extract_tb(e.__traceback__):
            if os.path.abspath(fr.filename) == os.path.abspath(path):
                line = fr.lineno
        cause = e.__cause__ or e.__context__ if type(e).__name__ == "ConfigFileNotFound" else None
        if isinstance(e, SyntaxError):
            line = e.lineno
        return Config(), {"type": type(e).__name__, "message": str(e)[:500], "line": line,
                          "cause": repr(cause)[:300] if cause else None}


def dotted(cls):
    return cls.__module__ + "." + cls.__qualname__


def resolve(value, group, default):
    """A `*_class` setting (a class, an entry-point name or a dotted name) as a class."""
    name = value if value is not None else default
    if isinstance(name, type):
        return {"name": dotted(name)}, name
    try:
        from importlib.metadata import entry_points

        eps = [ep for ep in entry_points(group=group) if ep.name == name]
        if eps:
            return {"name": name}, eps[0].load()
        from traitlets.utils.importstring import import_item

        return {"name": name}, import_item(name)
    except BaseException as e:
        return {"name": str(name), "error": f"{type(e).__name__}: {e}"}, None


def setting(cfg, sections, key, default):
    """The value of `key` in the first of `sections` (most derived first) that sets it."""
    for s in sections:
        if s in cfg and key in cfg[s]:
            return cfg[s][key], s
    return default, None


def jsonable(v):
    try:
        json.dumps(v)
    except TypeError:
        return repr(v)
    return v


def batch_settings(cfg, cls):
    """The spawner traits a batch job depends on: the config's value, else the class's."""
    sections = [k.__name__ for k in cls.__mro__]
    traits = cls.class_traits()
    values = {}
    for key in BATCH_KEYS:
        t = traits.get(key)
        v, where = setting(cfg, sections, key, t.default_value if t is not None else None)
        if key == "cmd" and isinstance(v, str):
            v = [v]
        values[key] = {"value": jsonable(v), "set_in": where}
    t = traits.get("ip")
    return {"values": values, "ip_class_default": t.default_value if t is not None else None}


def flow_settings(cfg):
    """Where a browser goes: default URLs, public_url, the cookie settings."""
    jh = ("JupyterHub",)
    tornado, _ = setting(cfg, jh, "tornado_settings", {})
    opts = tornado.get("cookie_options", {}) if isinstance(tornado, dict) else {}
    du, _ = setting(cfg, jh, "default_url", None)
    sdu, _ = setting(cfg, ("Spawner", "LocalProcessSpawner", "SimpleLocalProcessSpawner"),
                     "default_url", None)
    ma, _ = setting(cfg, jh, "cookie_max_age_days", None)
    return {
        "default_url": du if isinstance(du, str) and du else None,
        "public_url": setting(cfg, jh, "public_url", None)[0] or None,
        "cookie_options": {str(k): v for k, v in opts.items()
                           if isinstance(v, (str, int, float, bool, type(None)))}
                          if isinstance(opts, dict) else {},
        "spawner_default_url": sdu if isinstance(sdu, str) else None,
        "redirect_to_server": bool(setting(cfg, jh, "redirect_to_server", True)[0]),
        "cookie_host_prefix": bool(setting(cfg, jh, "cookie_host_prefix_enabled", False)[0]),
        "cookie_max_age_days": float(ma) if isinstance(ma, (int, float)) else None,
    }


def probe(args):
    if args.get("only") == "flow":
        cfg, load_error = load_config(args["config_file"])
        return {"load_error": load_error,
                "flow": None if load_error else flow_settings(cfg)}
    out = {"python": sys.executable, "version": None, "error": None}
    try:
        from jupyterhub._version import __version__
    except Exception as e:
        out["error"] = f"cannot import jupyterhub: {type(e).__name__}: {e}"
        return out
    out["version"] = __version__
    cfg, out["load_error"] = load_config(args["config_file"])
    out["flow"] = None if out["load_error"] else flow_settings(cfg)
    out["owned_set"] = [[s, k, repr(cfg[s][k])[:200]] for s, k in args["owned"]
                        if s in cfg and k in cfg[s]]
    jh = cfg["JupyterHub"] if "JupyterHub" in cfg else {}
    classes = {}
    for kind, key, group, default in (
            ("authenticator", "authenticator_class", "jupyterhub.authenticators", "pam"),
            ("spawner", "spawner_class", "jupyterhub.spawners", "localprocess")):
        info, cls = resolve(jh.get(key) if key in jh else None, group, default)
        if cls is not None:
            info["class"] = dotted(cls)
            info["mro"] = [dotted(c) for c in cls.__mro__]
        out[kind] = info
        classes[kind] = cls
    spawner_sections = [c.__name__ for c in classes["spawner"].__mro__] \
        if classes["spawner"] is not None else ["Spawner"]
    cmd, _ = setting(cfg, spawner_sections, "cmd", ["jupyterhub-singleuser"])
    if isinstance(cmd, str):
        cmd = [cmd]
    out["spawner_cmd"] = list(cmd) if cmd else ["jupyterhub-singleuser"]
    auth_sections = [c.__name__ for c in classes["authenticator"].__mro__] \
        if classes["authenticator"] is not None else ["Authenticator"]
    users = set()
    for key in ("allowed_users", "admin_users"):
        v, _ = setting(cfg, auth_sections, key, set())
        try:
            users.update(str(u) for u in v)
        except TypeError:
            pass
    out["config_users"] = sorted(users)
    if classes["spawner"] is not None:
        try:
            out["spawner_settings"] = batch_settings(cfg, classes["spawner"])
        except Exception as e:
            out["spawner_settings"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def main(argv):
    # stdout carries the answer alone: whatever the admin's config or the classes it
    # imports print (from Python, C or a child process) goes to stderr instead.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    result = probe(json.loads(argv[1]))
    sys.stdout.flush()
    answer.write(json.dumps(result) + "\n")
    answer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
