"""Hello-world apps for the throughput benchmark, served by gunicorn / uvicorn.

``wsgi_bare``/``asgi_bare`` answer "Hello world"; ``wsgi_authmw``/``asgi_authmw``
are the same behind authmw validating against the Keystone at
``AUTHMW_BENCH_AUTH_URL`` (its service user, see benchmarks/_support.py).
"""

from __future__ import annotations

import os

from _support import authmw_asgi, authmw_wsgi, hello_asgi, hello_wsgi

_AUTH_URL = os.environ.get("AUTHMW_BENCH_AUTH_URL", "http://127.0.0.1:5000/v3")

wsgi_bare = hello_wsgi
asgi_bare = hello_asgi
wsgi_authmw = authmw_wsgi(_AUTH_URL)
asgi_authmw = authmw_asgi(_AUTH_URL)
