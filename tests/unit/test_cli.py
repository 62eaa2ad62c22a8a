"""The ``tiergate`` command run as a user runs it (a subprocess), for what it does before
anything is built: protected mode's refusal and the Ray environment it prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def tiergate(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m tiergate.cli ARGS`` from this checkout, with no TIERGATE_* variables inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERGATE_", "RAY_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "tiergate.cli", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)  # fmt: skip


def test_serve_on_all_interfaces_without_keys_exits_non_zero_and_says_how_to_fix_it():
    """`tiergate serve --host 0.0.0.0` with the shipped config (keys off) exits 2 before
    building anything, with no traceback and a message naming the keys settings and the opt-out."""
    result = tiergate("serve", "--host", "0.0.0.0")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "building" not in result.stderr.lower() and "starting Ray" not in result.stderr
    needles = ("'0.0.0.0'", "serving.auth.enabled", "$TIERGATE_API_KEYS", "--set serving.auth.enabled=true")
    for needle in (*needles, "serving.http.allow_unauthenticated_remote: true"):
        assert needle in result.stderr


def test_ray_env_exports_token_auth_and_prints_no_token():
    """`tiergate ray-env` exports RAY_AUTH_MODE=token (required) and says where the token goes,
    without printing or exporting a token itself."""
    result = tiergate("ray-env")
    assert result.returncode == 0, result.stderr
    assert "export RAY_AUTH_MODE=token  # tiergate: required" in result.stdout
    assert "RAY_AUTH_TOKEN=" not in result.stdout
    assert "ray get-auth-token --generate" in result.stdout


def test_ray_env_runs_haproxy_through_the_wrapper_or_says_why_not():
    """`tiergate ray-env` exports RAY_SERVE_HAPROXY_BINARY_PATH as tiergate-haproxy where that
    console script is installed, and otherwise exports no such path and warns on stderr (what
    an operator sees under eval) that HAProxy's side ports stay on all interfaces."""
    from tiergate.serving.ray_env import HAPROXY_WRAPPER

    result = tiergate("ray-env")
    assert result.returncode == 0, result.stderr
    if HAPROXY_WRAPPER.is_file():
        assert f"export RAY_SERVE_HAPROXY_BINARY_PATH={HAPROXY_WRAPPER}  # tiergate" in result.stdout
        assert "WARNING" not in result.stderr
    else:
        assert "RAY_SERVE_HAPROXY_BINARY_PATH" not in result.stdout
        assert str(HAPROXY_WRAPPER) in result.stderr and "all interfaces" in result.stderr
