# JupyterHub options for the hubsvc demo (`make run`): any user name, password "demo";
# each user's server runs as the account that runs hubsvc, with its home in ./demo-state.
# hubsvc itself sets the proxy wiring, addresses, database and cookie secret.
import os

c = get_config()  # noqa: F821

c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "demo"
c.Authenticator.allow_all = True
c.Authenticator.admin_users = {"admin"}

c.JupyterHub.spawner_class = "simple"
_homes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "demo-state", "homes")
c.SimpleLocalProcessSpawner.home_dir_template = os.path.abspath(_homes) + "/{username}"
c.Spawner.default_url = "/lab"
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]
