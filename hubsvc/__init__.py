"""hubsvc: JupyterHub and configurable-http-proxy as one supervised, systemd-native service."""

__version__ = "0.1.0"
