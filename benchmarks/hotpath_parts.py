"""Where a cached token's instructions go, part by part, in-process (callgrind).

    python benchmarks/hotpath_parts.py            # both forms, every part
    python benchmarks/hotpath_parts.py --form wsgi

The request is the one ``realserver.py`` sends (a gunicorn-shaped environ or
a uvicorn-shaped scope, a 183-character token), the identity memory.py's
Keystone project token, already cached. Each part runs 1,000 and then 3,000 times
in its own process under valgrind's callgrind (``PYTHONHASHSEED=0``); the
difference over 2,000 calls, less the same for an empty call, is the part's
instructions per call. Parts overlap: ``middleware`` is the whole call of
the middleware minus the bare app, the others are pieces of it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _support import REPO
from memory import BODY  # the Keystone project token body memory.py caches

TOKEN = "gAAAAABnXYZ" + "k" * 172
ENVIRON: dict[str, Any] = {
    **{key: "x" for key in ("wsgi.errors", "wsgi.input", "wsgi.file_wrapper", "gunicorn.socket")},
    "wsgi.version": (1, 0),
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.input_terminated": True,
    "wsgi.url_scheme": "http",
    "SERVER_SOFTWARE": "gunicorn/23.0.0",
    "REQUEST_METHOD": "GET",
    "QUERY_STRING": "",
    "RAW_URI": "/",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "HTTP_HOST": "127.0.0.1:8000",
    "HTTP_ACCEPT": "*/*",
    "HTTP_ACCEPT_ENCODING": "gzip, deflate",
    "HTTP_CONNECTION": "keep-alive",
    "HTTP_USER_AGENT": "python-httpx/0.28.1",
    "HTTP_X_AUTH_TOKEN": TOKEN,
    "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "5555",
    "SERVER_NAME": "127.0.0.1",
    "SERVER_PORT": "8000",
    "PATH_INFO": "/",
    "SCRIPT_NAME": "",
}
SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0", "spec_version": "2.3"},
    "http_version": "1.1",
    "server": ("127.0.0.1", 8000),
    "client": ("127.0.0.1", 5555),
    "scheme": "http",
    "method": "GET",
    "root_path": "",
    "path": "/",
    "raw_path": b"/",
    "query_string": b"",
    "headers": [
        (b"host", b"127.0.0.1:8000"),
        (b"accept", b"*/*"),
        (b"accept-encoding", b"gzip, deflate"),
        (b"connection", b"keep-alive"),
        (b"user-agent", b"python-httpx/0.28.1"),
        (b"x-auth-token", TOKEN.encode()),
    ],
    "state": {},
}
PARTS = {
    "wsgi": ("empty", "middleware", "bare", "cache", "sha256", "strip", "inject", "copy"),
    "asgi": ("empty", "middleware", "bare", "cache", "sha256", "scan", "inject", "copy"),
}


def _wsgi_parts() -> dict[str, Callable[[], object]]:
    from authmw import InMemoryValidator, WSGIAuthMiddleware
    from authmw import headers as _headers
    from authmw.validators._keystone_v3 import identity_from_token

    def hello(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"Hello world\n"]

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        return None

    validator = InMemoryValidator({TOKEN: identity_from_token(BODY)})
    middleware = WSGIAuthMiddleware(hello, validator=validator)
    pipeline, core = middleware.pipeline, middleware.pipeline.core
    middleware(dict(ENVIRON), start_response)  # validated once: cached from now on
    decision = core.cached(TOKEN)
    assert decision is not None
    return {
        "middleware": lambda: middleware(dict(ENVIRON), start_response),
        "bare": lambda: hello(dict(ENVIRON), start_response),
        "cache": lambda: core.cached(TOKEN),
        "sha256": lambda: hashlib.sha256(TOKEN.encode()).digest(),
        "strip": lambda: _headers.strip_environ(dict(ENVIRON)),
        "inject": lambda: pipeline.inject_environ(dict(ENVIRON), decision),
        "copy": lambda: dict(ENVIRON),
    }


def _asgi_parts() -> dict[str, Callable[[], object]]:
    from authmw import ASGIAuthMiddleware, InMemoryValidator
    from authmw.validators._keystone_v3 import identity_from_token

    async def hello(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"Hello world\n"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    validator = InMemoryValidator({TOKEN: identity_from_token(BODY)})
    middleware = ASGIAuthMiddleware(hello, validator=validator)
    pipeline, core = middleware.pipeline, middleware.pipeline.core
    loop = asyncio.new_event_loop()
    loop.run_until_complete(middleware(dict(SCOPE), receive, send))
    decision = core.cached(TOKEN)
    assert decision is not None
    return {
        "middleware": lambda: loop.run_until_complete(middleware(dict(SCOPE), receive, send)),
        "bare": lambda: loop.run_until_complete(hello(dict(SCOPE), receive, send)),
        "cache": lambda: core.cached(TOKEN),
        "sha256": lambda: hashlib.sha256(TOKEN.encode()).digest(),
        "scan": lambda: pipeline.scanner.scope_token(SCOPE["headers"]),
        "inject": lambda: pipeline.inject_scope({"headers": []}, decision),
        "copy": lambda: dict(SCOPE),
    }


def _run_part(form: str, part: str, count: int) -> None:
    """The child: call one part ``count`` times."""
    import logging

    logging.disable(logging.CRITICAL)
    parts = _wsgi_parts() if form == "wsgi" else _asgi_parts()
    call = parts.get(part, lambda: None)
    for _ in range(count):
        call()


def _instructions(form: str, part: str, count: int) -> int:
    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={out}/callgrind.out",
                sys.executable,
                __file__,
                "--child",
                form,
                part,
                str(count),
            ],
            env={**os.environ, "PYTHONHASHSEED": "0", "PYTHONPATH": str(REPO)},
            check=True,
            capture_output=True,
        )
        for line in Path(out, "callgrind.out").read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError("callgrind wrote no total")


def _per_call(form: str, part: str) -> float:
    return (_instructions(form, part, 3000) - _instructions(form, part, 1000)) / 2000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--form", choices=("wsgi", "asgi", "both"), default="both")
    parser.add_argument(
        "--child", nargs=3, metavar=("FORM", "PART", "COUNT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        form, part, count = args.child
        _run_part(form, part, int(count))
        return 0
    for form in ("wsgi", "asgi") if args.form == "both" else (args.form,):
        empty = _per_call(form, "empty")
        figures = {part: _per_call(form, part) - empty for part in PARTS[form][1:]}
        print(f"\n{form}: instructions per call (callgrind, PYTHONHASHSEED=0)\n")
        print("| part | instructions |\n| --- | --- |")
        print(f"| middleware minus bare app | {figures['middleware'] - figures['bare']:,.0f} |")
        for part, value in figures.items():
            print(f"| {part} | {value:,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
