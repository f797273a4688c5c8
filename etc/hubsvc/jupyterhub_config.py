# /etc/hubsvc/jupyterhub_config.py: your JupyterHub options, loaded by hubsvc.
#
# hubsvc generates the rest of JupyterHub's configuration at each start (the proxy wiring,
# listen addresses from /etc/hubsvc/hubsvc.toml, the database and cookie secret in
# /var/lib/hubsvc, cleanup_servers = False) and warns in the journal about any of those
# settings this file tries to change. See `journalctl -u hubsvc`.
#
# The packaged default, for a fresh host:
#   - local Unix users log in with their password (PAM, service "login");
#   - each user's server runs as that user in its own systemd unit,
#     jupyter-USERNAME-singleuser.service in hubsvc-users.slice. These units are not part of
#     hubsvc.service, so `systemctl restart hubsvc` and package upgrades leave users'
#     servers running; the restarted hub re-adopts them.

c = get_config()  # noqa: F821

# PAM reports (e.g. "authentication failure") through syslog from inside the hub process;
# name them like the hub's own lines in the journal instead of "python".
import syslog  # noqa: E402

syslog.openlog("hubsvc-hub", syslog.LOG_PID)

# --- Login ----------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "pam"
# Who may log in. By default nobody but the admins below: list users, or allow everyone
# with a local account by setting allow_all = True.
# c.Authenticator.allowed_users = {"alice", "bob"}
c.Authenticator.allow_all = True
# Never log in as root through the web.
c.Authenticator.blocked_users = {"root"}
# c.Authenticator.admin_users = {"alice"}
# Only members of these Unix groups (instead of allow_all):
# c.PAMAuthenticator.allowed_groups = {"jupyter"}

# --- Users' servers ---------------------------------------------------------------------
c.JupyterHub.spawner_class = "systemdspawner.SystemdSpawner"
# The single-user server bundled with hubsvc (absolute: systemd-run does not use the hub's PATH).
c.Spawner.cmd = ["/opt/hubsvc/bin/jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"
c.SystemdSpawner.slice = "hubsvc-users.slice"
# Put the bundled environment first on the servers' PATH (jupyter, python for kernels).
c.SystemdSpawner.extra_paths = ["/opt/hubsvc/bin"]
c.SystemdSpawner.isolate_tmp = True
c.SystemdSpawner.isolate_devices = True
c.SystemdSpawner.disable_user_sudo = True
# Per-user limits (systemd MemoryMax= / CPUQuota=):
# c.Spawner.mem_limit = "2G"
# c.Spawner.cpu_limit = 1.0
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
