"""Run the service on loopback: in a background thread (tests) or as a fresh process.

:class:`BackgroundServer` runs uvicorn on a thread of this process (the model object is
shared with the caller); :class:`ServerProcess` starts ``python -m mfutils.cli serve ARTIFACT``
in a new process -- what a deployment does -- and waits until ``/health`` answers.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_healthy(
    url: str, *, timeout: float = 60.0, process: subprocess.Popen | None = None
) -> dict:
    """Poll ``url/health`` until it answers 200; raise if ``process`` dies or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            response = httpx.get(f"{url}/health", timeout=2.0)
            if response.status_code == 200:
                return response.json()
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url}/health did not answer within {timeout:.0f} s")
        time.sleep(0.1)


class BackgroundServer:
    """Uvicorn serving ``app`` on ``host:port`` from a daemon thread; a context manager.

    Parameters
    ----------
    app : FastAPI
    host : str
    port : int, optional
        Default: a free port.
    """

    def __init__(self, app, *, host: str = "127.0.0.1", port: int | None = None) -> None:
        import uvicorn

        self.host, self.port = host, port or free_port(host)
        config = uvicorn.Config(
            app, host=self.host, port=self.port, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ServerProcess:
    """``python -m mfutils.cli serve ARTIFACT`` in a fresh process; a context manager, or
    :meth:`start` / :meth:`stop` (a notebook).

    Parameters
    ----------
    artifact : str or Path
    host : str
    port : int, optional
        Default: a free port.
    args : list of str
        Extra ``serve`` options, e.g. ``["--workers", "2"]``.
    env : dict, optional
        Extra environment variables (``OMP_NUM_THREADS``, ``MFUTILS_DEVICE``).
    timeout : float
        Seconds to wait for ``/health``.
    """

    def __init__(
        self,
        artifact: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.host, self.port = host, port or free_port(host)
        self.command = [
            sys.executable,
            "-m",
            "mfutils.cli",
            "serve",
            str(artifact),
            "--host",
            host,
            "--port",
            str(self.port),
            *(args or []),
        ]
        self.env = {**os.environ, **(env or {})}
        self.timeout = timeout
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ServerProcess:
        """Start the process and wait for ``/health``; it is stopped at interpreter exit at
        the latest."""
        self.log = tempfile.TemporaryFile(mode="w+")  # a pipe would fill up and block the server
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )
        atexit.register(self.stop)
        try:
            wait_healthy(self.url, timeout=self.timeout, process=self.process)
        except (RuntimeError, TimeoutError) as err:
            self.stop()
            raise RuntimeError(f"{' '.join(self.command)} failed: {err}\n{self.output()}") from err
        return self

    def stop(self) -> None:
        """Terminate the process (kill it if it does not exit within 15 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def output(self) -> str:
        """What the server printed so far (stdout and stderr)."""
        self.log.seek(0)
        return self.log.read()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
