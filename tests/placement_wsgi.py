"""Placement for tests/test_placement.py: keystonemiddleware's or authmw's, recorded.

``AUTHMW_PLACEMENT_MIDDLEWARE`` = ``keystonemiddleware`` (Placement as
shipped) or ``authmw`` (scripts/placement/authmw_wsgi.py, the deployer's
swap). Around it, only an observer: after each request it appends what
Placement's oslo.policy checks saw (the request context's policy values,
built by oslo.context from the injected headers) to ``AUTHMW_PLACEMENT_RECORD``.
"""

import json
import os
import threading

if os.environ["AUTHMW_PLACEMENT_MIDDLEWARE"] == "authmw":
    from authmw_wsgi import application as placement
else:
    from placement.wsgi.api import application as placement

_lock = threading.Lock()


def application(environ, start_response):  # type: ignore[no-untyped-def]
    result = placement(environ, start_response)
    context = environ.get("placement.context")
    values = None
    if context is not None:
        values = dict(context.to_policy_values())
        values["roles"] = sorted(values.get("roles") or ())
        values["service_roles"] = sorted(values.get("service_roles") or ())
    line = {"request": environ.get("HTTP_X_TEST_STEP"), "credentials": values}
    with _lock, open(os.environ["AUTHMW_PLACEMENT_RECORD"], "a") as record:
        record.write(json.dumps(line, sort_keys=True) + "\n")
    return result
