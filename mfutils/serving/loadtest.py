"""Latency and throughput of a running service, measured from HTTP clients on this machine.

:func:`measure_latency` sends requests one after another over one keep-alive connection
(latency per request without queueing); :func:`measure_throughput` keeps a fixed number of
client threads busy (a bounded local load) and reports requests per second. Client and server
share the machine's cores, so these are end-to-end numbers of this machine, not of the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import httpx
import numpy as np


def summarize(seconds: np.ndarray) -> dict[str, float]:
    """``requests``, ``p50_ms``, ``p99_ms`` and ``mean_ms`` of per-request times (seconds)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "requests": int(len(ms)),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }


def measure_latency(url: str, paths: Sequence[str], *, warmup: int = 20) -> np.ndarray:
    """Seconds taken by ``GET url + path`` for every path, sequentially, after a warm-up.

    Raises
    ------
    RuntimeError
        If a response is not 200 (a latency of an error page is not a latency).
    """
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for path in list(paths)[:warmup]:
            _get(client, path)
        seconds = np.empty(len(paths))
        for n, path in enumerate(paths):
            start = time.perf_counter()
            _get(client, path)
            seconds[n] = time.perf_counter() - start
    return seconds


def measure_calls(function: Callable[[object], object], inputs: Sequence[object]) -> np.ndarray:
    """Seconds taken by ``function(x)`` for every input, in this process (no HTTP): the part
    of a request's latency that is the model's own work."""
    seconds = np.empty(len(inputs))
    for n, value in enumerate(inputs):
        start = time.perf_counter()
        function(value)
        seconds[n] = time.perf_counter() - start
    return seconds


def measure_throughput(url: str, paths: Sequence[str], *, threads: int = 4) -> dict[str, float]:
    """Requests per second with ``threads`` clients splitting ``paths`` between them.

    Every client thread has its own keep-alive connection and sends its share back to back;
    the rate is all requests over the wall time from the first to the last. Also returns the
    latency summary under that load (:func:`summarize`) and ``threads``.
    """
    if not 1 <= threads <= len(paths):
        raise ValueError(f"threads={threads} must lie in [1, len(paths)={len(paths)}]")
    shares = [list(paths[n::threads]) for n in range(threads)]
    seconds: list[np.ndarray] = [np.empty(0)] * threads
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def client(n: int) -> None:
        with httpx.Client(base_url=url, timeout=60.0) as session:
            _get(session, shares[n][0])  # open the connection before the clock starts
            barrier.wait()
            times = np.empty(len(shares[n]))
            try:
                for m, path in enumerate(shares[n]):
                    start = time.perf_counter()
                    _get(session, path)
                    times[m] = time.perf_counter() - start
            except BaseException as err:  # noqa: BLE001 - reported by the caller's thread
                errors.append(err)
            seconds[n] = times

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    barrier.wait()
    start = time.perf_counter()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} client thread(s) failed: {errors[0]}")
    return {
        "threads": threads,
        "requests_per_s": len(paths) / wall,
        "wall_s": wall,
        **summarize(np.concatenate(seconds)),
    }


def _get(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}: {response.text[:200]}")
