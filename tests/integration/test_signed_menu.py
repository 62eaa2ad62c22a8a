"""With TIERGATE_MENU_KEY set on the replicas, Ray Serve does not start an ingress handed
a signed menu that was altered afterwards."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration
APP = "tiergate-signed"


def test_an_ingress_refuses_to_start_on_an_altered_signed_menu(digits_config):
    """A menu signed with the key, then its worst variant's accuracy raised to 0.99: the
    deployment fails, and Serve's status for the ingress names the signature and the variable."""
    from ray import serve

    from tests.support.deployments import KEYED, MENU_KEY
    from tiergate import runtime
    from tiergate.build import build_menu

    config = digits_config()
    menu = build_menu(config).signed(MENU_KEY.encode())
    worst = min(menu.variants, key=lambda entry: entry.quality).name
    variants = [e.model_copy(update={"accuracy": 0.99}) if e.name == worst else e for e in menu.variants]
    altered = menu.model_copy(update={"variants": variants})
    try:
        with pytest.raises(RuntimeError, match="Deploying application tiergate-signed failed"):
            runtime.deploy(config, name=APP, route_prefix="/signed", menu=altered, deployments=KEYED)
        message = serve.status().applications[APP].deployments["Ingress"].message
    finally:
        serve.delete(APP)
    assert "signature does not match TIERGATE_MENU_KEY" in message
