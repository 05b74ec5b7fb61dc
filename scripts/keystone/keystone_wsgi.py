"""Gunicorn entry point for Keystone (used by start.sh).

Keystone's app factory calls oslo.config's CONF() with args=None, which parses
sys.argv. Under gunicorn, sys.argv holds gunicorn's own flags, oslo.config
rejects them and every worker exits with status 2 in a silent restart loop.
Clearing argv before the import avoids that. The config file comes from
$OS_KEYSTONE_CONFIG_FILES.
"""

import sys

sys.argv = sys.argv[:1]

from keystone.wsgi.api import application  # noqa: E402

__all__ = ["application"]
