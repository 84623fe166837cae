"""Talking to a Triton server with tritonclient: loopback URLs only, readiness, one v2 request, statistics."""
from __future__ import annotations

import ipaddress
import socket
import time
from urllib.parse import urlsplit

import numpy as np

from pipeline.serve.contract import INPUT, LABEL, PROBABILITIES, ServeError


def loopback_hostport(url: str) -> str:
    """"http://localhost:8000" or "localhost:8000" -> "localhost:8000"; a host that is not loopback is refused
    (bilm's load tests never leave this machine)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme not in ("http", "grpc") or not parts.hostname:
        raise ServeError(f"cannot read a host from {url!r}; give e.g. http://127.0.0.1:8000")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, None)}
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve {parts.hostname!r} ({exc.strerror})") from None
    outside = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if outside:
        raise ServeError(f"{parts.hostname} resolves to {', '.join(outside)}, which is not this machine's loopback; "
                         f"bilm loadtest only targets a server on this machine (127.0.0.1, ::1, localhost)")
    return f"{parts.hostname}:{parts.port or 8000}"


def http_client(url: str, **kwargs):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(loopback_hostport(url), **kwargs)


def wait_ready(client, models: list[str], timeout_s: float = 120.0, alive=lambda: True) -> float:
    """Seconds until every model answers ready (the server's /v2/health/ready is true before PyTriton has
    loaded any model: check the models). Raises ServeError after `timeout_s` or once `alive()` is false."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if not alive():
            raise ServeError("the server exited before its models were ready (see its log)")
        try:
            if all(client.is_model_ready(m) for m in models):
                return time.monotonic() - start
        except Exception:  # noqa: BLE001  connection refused while the server starts
            pass
        time.sleep(0.2)
    raise ServeError(f"models {models} not ready after {timeout_s:.0f} s")


def text_input(texts: list[str] | np.ndarray, module=None):
    """The contract's input: BYTES [n, 1], as an object array (numpy's `bytes_` would drop trailing NULs)."""
    import tritonclient.http as httpclient

    module = module or httpclient
    data = texts if isinstance(texts, np.ndarray) else np.array(
        [t.encode("utf-8") if isinstance(t, str) else t for t in texts], dtype=object).reshape(-1, 1)
    item = module.InferInput(INPUT, list(data.shape), "BYTES")
    item.set_data_from_numpy(data)
    return item


def classify(client, model: str, texts: list[str]) -> tuple[list[str], np.ndarray]:
    """(labels, [n, n_labels] probabilities) for `texts` from one v2 request."""
    result = client.infer(model, [text_input(texts)])
    labels = [b.decode("utf-8") for b in result.as_numpy(LABEL).reshape(-1)]
    return labels, result.as_numpy(PROBABILITIES)


def failure_counts(client, model: str) -> dict[str, int]:
    """Triton's own counters for `model`: successful and failed requests, and executions (batches run)."""
    stats = client.get_inference_statistics(model)["model_stats"][0]
    return {"success": int(stats["inference_stats"]["success"]["count"]),
            "fail": int(stats["inference_stats"]["fail"]["count"]),
            "executions": int(stats.get("execution_count", 0)), "inferences": int(stats.get("inference_count", 0))}
