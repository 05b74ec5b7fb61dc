"""OpenStack Placement's WSGI application, with authmw in place of keystonemiddleware.

Placement builds its auth middleware in one place, ``placement.deploy.deploy``:
``auth.filter_factory({}, oslo_config_config=conf)``, keystonemiddleware's
``AuthProtocol`` plus "``/`` needs no token". Point that name at authmw's
filter factory before the application is built; authmw then reads the same
``[keystone_authtoken]`` section of placement.conf. Serve this module instead
of ``placement.wsgi.api`` (``gunicorn authmw_wsgi:application``, uWSGI's
``module = authmw_wsgi:application``...). Placement's code is not changed.
"""

import functools

from placement import auth

import authmw.paste

auth.filter_factory = functools.partial(authmw.paste.filter_factory, public_routes="/")

from placement.wsgi.api import application  # noqa: E402  (built with authmw in place)

__all__ = ["application"]
