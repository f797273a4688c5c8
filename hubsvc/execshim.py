"""`hubsvc exec proxy|hub`: the ExecStart of the component units.
(`hubsvc exec stop-post` is hubsvc.service's ExecStopPost: see launch.systemd.stop_post.)

Executes the command line the supervisor built (same `ComponentSpec.argv` as the process
launcher), read from the systemd credential `launch`; CHP's token comes from the
credential `proxy_token` into its environment. Imports almost nothing: it runs before
every component start.
"""

from __future__ import annotations

import json
import os
import sys

EX_USAGE = 64
EX_CONFIG = 78
# hubsvc.secrets.MIN_LENGTH (a unit test keeps them equal): importing that module would
# cost ~30 ms (dataclasses, the stdlib's secrets and OpenSSL) at every component start
MIN_LENGTH = 32
# hubsvc writes the certificate and key CHP reads here (hubsvc.tls); the proxy unit loads
# the directory as credentials named tls_<file> (LoadCredential=tls:/run/hubsvc/tls).
TLS_DIR = "/run/hubsvc/tls/"


def credential_paths(argv: list[str], creds: str) -> list[str]:
    """Point CHP at its credential copies of the TLS files: it cannot read /run/hubsvc."""
    return [os.path.join(creds, "tls_" + a[len(TLS_DIR):])
            if a.startswith(TLS_DIR) and "/" not in a[len(TLS_DIR):] else a for a in argv]


def main(argv: list[str]) -> int:
    if argv == ["stop-post"]:
        from .launch.systemd import stop_post

        return stop_post(os.environ)
    if len(argv) != 1 or argv[0] not in ("proxy", "hub"):
        print("usage: hubsvc exec proxy|hub|stop-post  (the ExecStart of hubsvc-proxy/"
              "hubsvc-hub.service, the ExecStopPost of hubsvc.service)",
              file=sys.stderr)
        return EX_USAGE
    component = argv[0]
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not creds:
        print(f"hubsvc exec {component}: no $CREDENTIALS_DIRECTORY; this runs only inside "
              f"hubsvc-{component}.service, started by hubsvc", file=sys.stderr)
        return EX_CONFIG
    try:
        with open(os.path.join(creds, "launch")) as f:
            launch = json.load(f)
        env = dict(os.environ)
        env.update(launch.get("env", {}))
        if component == "proxy":
            with open(os.path.join(creds, "proxy_token")) as f:
                env["CONFIGPROXY_AUTH_TOKEN"] = f.read().strip()
            # CHP with an empty token serves its REST API to anyone on the host
            if len(env["CONFIGPROXY_AUTH_TOKEN"]) < MIN_LENGTH:
                print("hubsvc exec proxy: the proxy_token credential is empty or short; CHP is "
                      "never started without a token (fix: remove /var/lib/hubsvc/proxy_auth_token "
                      "and restart hubsvc, which creates a fresh one)", file=sys.stderr)
                return EX_CONFIG
        argv_child = [str(a) for a in launch["argv"]]
        if component == "proxy":
            argv_child = credential_paths(argv_child, creds)
        os.chdir(launch.get("cwd") or "/")
    except (OSError, ValueError, KeyError) as e:
        print(f"hubsvc exec {component}: cannot read the launch credential: {e}", file=sys.stderr)
        return EX_CONFIG
    for var in ("CREDENTIALS_DIRECTORY",):
        env.pop(var, None)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(argv_child[0], argv_child, env)
    return 0  # not reached
