"""A replica with API keys on, for HTTP tests of who may reach what (real ORT, no Ray).

    replica = keyed_replica(menu, tiers, keys_file)    # serving.auth.enabled, KEYS in keys_file
    with AppClient(create_app(replica)) as client:     # tests.support.asgi
        client.request("POST", "/v1/predict", headers=bearer(LIMITED), json=...)

The keys: LIMITED (tiers [fast]), ALL_TIERS (every tier and pins), ADMIN; UNKNOWN is in none.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.replicas import replica_for
from tiergate.serving.auth import AuthConfig, digest
from tiergate.serving.config import ServingConfig

LIMITED = "limited-key-0123456789abcdef"  # tiers: [fast]
ALL_TIERS = "all-tiers-key-0123456789abcdef"  # every tier, pins, no admin
ADMIN = "admin-key-0123456789abcdef"  # admin: true
UNKNOWN = "unknown-key-0123456789abcdef"  # in no keys file

KEYS = (
    f"keys:\n  - {{name: limited, sha256: {digest(LIMITED)}, tiers: [fast]}}\n"
    f"  - {{name: all-tiers, sha256: {digest(ALL_TIERS)}}}\n"
    f"  - {{name: ops, sha256: {digest(ADMIN)}, admin: true}}\n"
)


def keyed_replica(menu, tiers, keys_file: Path, variants: list[str] | None = None):
    """A replica built with ``serving.auth`` on and ``KEYS`` written to ``keys_file``. Its
    loop-lag limit is lifted: these tests are about keys, and a busy test machine's stalls
    would otherwise turn some answers into 503s."""
    keys_file.write_text(KEYS)
    serving = ServingConfig(
        auth=AuthConfig(enabled=True, keys_file=keys_file, watch_interval_s=0),
        admission={"max_loop_lag_ms": 60_000},
    )
    return replica_for(menu, tiers, variants=variants, serving=serving)


def bearer(key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``key``; none for None."""
    return {} if key is None else {"Authorization": f"Bearer {key}"}
