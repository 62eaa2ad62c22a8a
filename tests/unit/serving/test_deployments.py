"""The ingress deployment's plain class, without Ray running."""

from __future__ import annotations

import gc

from tests.support.replicas import replica_for
from tiergate.profiles.tiers import Tier
from tiergate.serving.deployments import IngressReplica


def test_the_http_app_is_frozen_out_of_the_collectors_scans(tiny_menu):
    """Serve builds the HTTP app after the constructor; building it freezes what is alive
    then (the app included), so full collections do not scan start-up objects."""
    shell = IngressReplica.__new__(IngressReplica)  # the constructor needs a Serve replica
    shell.replica = replica_for(tiny_menu, {"any": Tier()})
    gc.unfreeze()
    try:
        app = shell.__serve_build_asgi_app__()
        assert app is not None and gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
