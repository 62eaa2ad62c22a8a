"""API keys as pure logic: hashing, tiers, token buckets, loading."""

from __future__ import annotations

import json

import pytest

from tests.support.engines import FakeClock
from tiergate.serving.auth import AuthConfig, KeyRing, KeySpec, digest
from tiergate.serving.errors import Forbidden, RateLimited, Unauthenticated

FREE = "free-key-0123456789abcdef"
ADMIN = "internal-key-0123456789abcdef"


def _ring(clock=None) -> KeyRing:
    specs = [
        KeySpec(name="free", sha256=digest(FREE), tiers=["fast"], rate_per_s=2, burst=2),
        KeySpec(name="internal", key=ADMIN),
    ]
    return KeyRing(specs, clock) if clock is not None else KeyRing(specs)


@pytest.mark.parametrize("header", [None, "", "Basic abc", "Bearer nope-not-a-key-at-all"])
def test_missing_or_unknown_key_is_401(header):
    """No header, another scheme, or an unknown key: 401."""
    with pytest.raises(Unauthenticated):
        _ring().authenticate(header)


def test_tier_allowance_is_enforced_and_fills_in_the_tier():
    """A fast-only key gets fast when it names no tier, 403 for another tier or a pin; an
    unrestricted key passes anything through."""
    ring = _ring()
    free = ring.authenticate(f"Bearer {FREE}")
    assert free.allow(None, None, default_tier="balanced") == "fast"
    for tier, variant in (("accurate", None), (None, "fp32")):
        with pytest.raises(Forbidden, match="free"):
            free.allow(tier, variant, default_tier="balanced")
    assert ring.authenticate(f"bearer {ADMIN}").allow(None, "fp32", "balanced") is None


def test_token_bucket_answers_429_with_retry_after_then_refills():
    """Past its burst a key gets 429 with a Retry-After of whole seconds; tokens come back."""
    clock = FakeClock()
    grant = _ring(clock).authenticate(f"Bearer {FREE}")
    grant.take()
    grant.take()
    with pytest.raises(RateLimited) as error:
        grant.take()
    assert error.value.retry_after_s >= 1
    clock.advance(1.0)  # one second later: two tokens at 2/s
    grant.take()
    grant.take()


def test_keys_load_from_env_text_and_secrets_are_not_kept(tmp_path):
    """Keys load from $TIERGATE_API_KEYS-style JSON or a YAML file; the ring holds digests only."""
    text = json.dumps({"keys": [{"name": "a", "key": FREE, "tiers": ["fast"]}]})
    ring = KeyRing.load(AuthConfig(enabled=True), env_value=text)
    assert ring.authenticate(f"Bearer {FREE}").name == "a"
    assert FREE not in repr(vars(ring))
    path = tmp_path / "keys.yaml"
    path.write_text(f"keys:\n  - {{name: b, sha256: {digest(ADMIN)}}}\n")
    assert KeyRing.load(AuthConfig(enabled=True, keys_file=path)).authenticate(f"Bearer {ADMIN}").name == "b"
    with pytest.raises(ValueError, match="TIERGATE_API_KEYS"):
        KeyRing.load(AuthConfig(enabled=True))


def test_only_admin_keys_pass_the_admin_check():
    """authenticate_admin: 401 for no key, 403 naming a non-admin key, the grant for an admin key."""
    ring = KeyRing([KeySpec(name="app", key=FREE), KeySpec(name="ops", key=ADMIN, admin=True)])
    with pytest.raises(Unauthenticated):
        ring.authenticate_admin(None)
    with pytest.raises(Forbidden, match="app"):
        ring.authenticate_admin(f"Bearer {FREE}")
    assert ring.authenticate_admin(f"Bearer {ADMIN}").name == "ops"


def test_a_reload_keeps_each_remaining_keys_token_bucket():
    """A key spent to zero stays limited after a reload; a key new in the reload starts full."""
    before = _ring()
    grant = before.authenticate(f"Bearer {FREE}")
    grant.take(), grant.take()
    after = KeyRing([
        KeySpec(name="free", sha256=digest(FREE), tiers=["fast"], rate_per_s=2, burst=2),
        KeySpec(name="new", key=ADMIN, rate_per_s=2, burst=2),
    ])  # fmt: skip
    after.keep_buckets_from(before)
    with pytest.raises(RateLimited):
        after.authenticate(f"Bearer {FREE}").take()
    after.authenticate(f"Bearer {ADMIN}").take()  # the new key's bucket is full


def test_a_keys_file_that_does_not_parse_is_named_in_the_error(tmp_path):
    """Invalid YAML is a ValueError that names the file (so a reload can keep the old keys)."""
    path = tmp_path / "keys.yaml"
    path.write_text("keys: [unclosed")
    with pytest.raises(ValueError, match=str(path)):
        KeyRing.load(AuthConfig(enabled=True, keys_file=path))
