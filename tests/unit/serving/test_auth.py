"""API keys as pure logic: hashing, tiers, token buckets, loading."""

from __future__ import annotations

import json

import pytest

from tests.support.engines import FakeClock
from tiergate.serving.auth import AuthConfig, KeyRing, KeySpec, Target, digest
from tiergate.serving.errors import Forbidden, RateLimited, Unauthenticated

FREE = "free-key-0123456789abcdef"
ADMIN = "internal-key-0123456789abcdef"
NAMES = {"model": "digits", "tiers": ["fast", "balanced", "accurate"], "variants": ["fp32", "int8"]}


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


def test_a_limited_key_runs_under_its_own_tier_when_the_default_is_not_one_of_them():
    """A fast-only key's requests that name no tier run under fast; the default otherwise."""
    ring = _ring()
    assert ring.authenticate(f"Bearer {FREE}").default_tier("balanced") == "fast"
    assert ring.authenticate(f"Bearer {FREE}").default_tier("fast") == "fast"
    assert ring.authenticate(f"Bearer {ADMIN}").default_tier("balanced") == "balanced"


@pytest.mark.parametrize(
    ("target", "field"),
    [
        (Target.named("accurate", None, "fast"), "tier"),
        (Target.named(None, "fp32", "fast"), "variant"),
        (Target.named("fast", "fp32", "fast"), "variant"),  # its own tier does not make a pin allowed
        (Target.of_model("fp32", None, "fast", **NAMES), "model"),
        (Target.of_model("accurate", None, "fast", **NAMES), "model"),
        (Target.of_model("nope", None, "fast", **NAMES), "model"),
        (Target.of_model("digits", "accurate", "fast", **NAMES), "tier"),
        (Target.named(["fast"], None, "fast"), "tier"),  # not a string (v2 parameters are free-form)
    ],
)
def test_a_limited_key_is_refused_any_target_beyond_its_tiers(target, field):
    """A fast-only key gets 403, naming the field at fault, for another tier, any pin (with
    its own tier too), a v2 name that is a variant, another tier or unknown."""
    with pytest.raises(Forbidden, match="free") as error:
        _ring().authenticate(f"Bearer {FREE}").authorize(target)
    assert error.value.field == field


def test_a_limited_key_may_reach_its_tiers_and_an_all_tiers_key_anything():
    """A fast-only key passes for fast however it is named; a key with every tier passes pins."""
    free, internal = _ring().authenticate(f"Bearer {FREE}"), _ring().authenticate(f"Bearer {ADMIN}")
    for target in (
        Target.named("fast", None, "balanced"),
        Target.named(None, None, "fast"),
        Target.of_model("fast", None, "fast", **NAMES),
        Target.of_model("digits", None, "fast", **NAMES),
        Target.of_model("digits", "fast", "balanced", **NAMES),
    ):
        free.authorize(target)
    for target in (Target.named("accurate", "fp32", "balanced"), Target.of_model("int8", None, "x", **NAMES)):
        internal.authorize(target)


def test_targets_resolve_every_request_form():
    """A tier, a pin, both, none (the default) and each kind of v2 name resolve to what runs."""
    assert Target.named(None, None, "balanced") == Target("balanced")
    assert Target.named("", None, "balanced") == Target("balanced")
    assert Target.named(0, None, "balanced") == Target(0)  # v2 parameters are free-form: 422 later
    assert Target.named(None, "fp32", "balanced") == Target(None, "fp32")
    assert Target.named("fast", "fp32", "balanced") == Target("fast", "fp32")
    assert Target.of_model("int8", "fast", "balanced", **NAMES) == Target(None, "int8", name="int8")
    assert Target.of_model("fast", "accurate", "balanced", **NAMES) == Target("fast", name="fast")
    assert Target.of_model("digits", "accurate", "balanced", **NAMES) == Target("accurate")
    assert Target.of_model("digits", None, "balanced", **NAMES) == Target("balanced")
    assert not Target.of_model("nope", None, "balanced", **NAMES).known


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
