# JupyterHub options for hubsvc when users' servers run as Slurm jobs (batchspawner).
# hubsvc owns the proxy wiring, addresses, database and cleanup_servers (False: jobs
# survive hub restarts); this file holds what is Slurm-specific. Edit the SITE block.
#
# Requirements, each checked by `hubsvc doctor`:
# - batchspawner (1.3.0 tested) in the hub's environment, and the Slurm client commands
#   (sbatch, squeue, scancel, scontrol) on the head node, with munge running and the
#   controller answering `scontrol ping`.
# - every hub user is a Unix account known on the compute nodes (the job runs as that user;
#   batchspawner submits with `sudo -E -u NAME sbatch`, so `sudo` must be installed).
# - USER_ENV: a Python environment every user can read on every node, holding
#   jupyterhub (the hub's exact version), jupyterlab and batchspawner. Not a venv on a
#   Python under /root (mode 0700): the job fails with "Permission denied" (exit 13).

from batchspawner import SlurmSpawner  # importing it also adds /hub/api/batchspawner
from traitlets import Unicode

c = get_config()  # noqa: F821

# ---- SITE: edit these lines -------------------------------------------------------------
USER_ENV = "/opt/jupyterhub-user"  # prefix of the users' environment (absolute path)
SERVER_IP = "0.0.0.0"  # where servers listen on the compute node; CHP must reach it
PARTITION = ""  # Slurm partition; "" = the cluster's default
RUNTIME = "08:00:00"  # job time limit; the server ends with the job
MEMORY = "2G"
NPROCS = "1"
START_TIMEOUT = 300  # seconds for queue wait + server start before the hub gives up
POLL_INTERVAL = 30  # seconds between the hub's checks that each job still runs
# ------------------------------------------------------------------------------------------


class SiteSlurmSpawner(SlurmSpawner):
    """SlurmSpawner listening on SERVER_IP.

    batchspawner's start() resets `ip` to the class default, so `c.SlurmSpawner.ip = ...`
    alone is silently ignored: the default itself has to change.
    """

    ip = Unicode(SERVER_IP).tag(config=True)


c.JupyterHub.spawner_class = SiteSlurmSpawner

# Absolute paths: sudo's secure_path drops the environment's bin/ from PATH, and the job
# runs with the user's login environment, not the hub's.
c.SlurmSpawner.batchspawner_singleuser_cmd = f"{USER_ENV}/bin/batchspawner-singleuser"
c.Spawner.cmd = [f"{USER_ENV}/bin/jupyterhub-singleuser"]
c.SlurmSpawner.req_prologue = f'export PATH="{USER_ENV}/bin:$PATH"'

c.SlurmSpawner.req_partition = PARTITION
c.SlurmSpawner.req_runtime = RUNTIME
c.SlurmSpawner.req_memory = MEMORY
c.SlurmSpawner.req_nprocs = NPROCS

c.Spawner.start_timeout = START_TIMEOUT
c.Spawner.http_timeout = 120
c.Spawner.poll_interval = POLL_INTERVAL
c.Spawner.default_url = "/lab"
