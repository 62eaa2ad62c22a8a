"""Deployments for tests: the production replica classes plus hooks reachable only through
a Serve handle from inside the cluster (fault injection, a look at ``sys.modules``).

    runtime.deploy(config, name, prefix, deployments=HOOKED)
    serve.get_deployment_handle("Ingress", app_name=name).set_fault.remote("int8", 1.0).result()
"""

from __future__ import annotations

import logging
import os
import sys

from tests.support.chaos import inject_fault
from tiergate.serving.deployments import (
    IngressReplica,
    VariantReplica,
    ingress_deployment,
    variant_deployment,
)


class HookedIngress(IngressReplica):
    def set_fault(self, variant: str, rate: float, delay_s: float = 0.0) -> None:
        """Make ``rate`` of ``variant``'s runs fail and every run take ``delay_s`` longer, in
        this replica (colocated topology); routing sees the slower profile."""
        engine = self.replica.registry.loaded()[variant]
        if not engine.local:
            raise TypeError(f"{variant} runs in its own deployment: set the fault there")
        inject_fault(engine, rate, delay_s)

    def log_files(self) -> list[str]:
        """The files this replica's log lines go to (Ray Serve's handlers)."""
        files = []
        for handler in logging.getLogger("ray.serve").handlers:
            target = getattr(handler, "target", None)  # Serve buffers in a MemoryHandler
            for candidate in (handler, target):
                if isinstance(candidate, logging.FileHandler):
                    files.append(candidate.baseFilename)
        return files

    def modules(self) -> list[str]:
        """The top-level modules this replica's process has imported."""
        return sorted({name.partition(".")[0] for name in sys.modules})


class HookedVariant(VariantReplica):
    def set_fault(self, rate: float, delay_s: float = 0.0) -> None:
        inject_fault(self.engine, rate, delay_s)


HOOKED = {"ingress": ingress_deployment(HookedIngress), "variant": variant_deployment(HookedVariant)}


MENU_KEY = "integration-menu-key-0123456789"


class KeyedIngress(IngressReplica):
    """The ingress replica with TIERGATE_MENU_KEY set in its own process (as every node of
    a signed deployment has it), leaving the driver's environment alone."""

    async def __init__(self, spec, variants=None) -> None:
        os.environ["TIERGATE_MENU_KEY"] = MENU_KEY
        await super().__init__(spec, variants)


KEYED = {"ingress": ingress_deployment(KeyedIngress)}
