"""``[core] hostname_callable`` of the deployment test: each Celery worker stands in for a host of its own.

Every Airflow process of the deployment gets ``OCEAN_DEPLOY_HOSTNAME`` (``host1``... for the workers,
``control`` for the rest), so that a task instance's ``hostname`` tells which "host" ran it.
"""

from __future__ import annotations

import os
import socket

HOSTNAME_ENV = "OCEAN_DEPLOY_HOSTNAME"


def get_hostname() -> str:
    """The stand-in host's name, else this machine's."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()
