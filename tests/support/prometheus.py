"""Debian's `prometheus` and `promtool` for the tests (installed if missing, as root), and a small client for
Prometheus's HTTP API. Used by tests/controlplane/test_prometheus.py (kwok) and tests/e2e/test_prometheus.py
(a real node)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from typing import Any

import pytest


def tools() -> tuple[str, str]:
    """Debian's prometheus and promtool, installed if missing (as root)."""
    if not (shutil.which("prometheus") and shutil.which("promtool")):
        if os.geteuid() != 0:
            pytest.skip("Prometheus tests need Debian's prometheus package: run as root to install it")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True, env=env, timeout=600)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"],
            check=True,
            capture_output=True,
            env=env,
            timeout=900,
        )
    return str(shutil.which("prometheus")), str(shutil.which("promtool"))


def api(url: str, path: str, **params: str) -> Any:
    """GET /api/v1/<path>?<params> and return its `data`."""
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    with urllib.request.urlopen(f"{url}/api/v1/{path}{query}", timeout=10) as resp:
        body = json.loads(resp.read())
    assert body["status"] == "success", body
    return body["data"]
