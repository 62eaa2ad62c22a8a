"""API keys: bearer tokens kept only as sha256 digests, each with the tiers it may use and
a token-bucket rate limit. Off unless ``serving.auth.enabled``.

    keys = KeyRing.load(serving.auth)            # from the keys file or $TIERGATE_API_KEYS
    grant = keys.authenticate("Bearer s3cret")   # Unauthenticated when missing or unknown
    target = Target.named("fast", None, grant.default_tier("balanced"))  # what the request reaches
    grant.authorize(target)                      # Forbidden outside the key's tiers, or a pin
    grant.take()                                 # RateLimited (retry_after_s) when over its rate

Authorization resolves the target first, then checks it: whatever form a request takes (a
tier, a pin, both, a v2 model name), the check sees what will actually run, and the routing
after it runs exactly that target.

Keys file (YAML or JSON; ``sha256`` of the key, or the key itself, which is hashed on load
and not kept):

    keys:
      - {name: free-app, sha256: 9f86d08..., tiers: [fast], rate_per_s: 5, burst: 10}
      - {name: internal, key: "long random string"}          # every tier, no rate limit
      - {name: ops, sha256: 2c26b46..., admin: true}         # may also call /v1/admin/*
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tiergate.serving.errors import Forbidden, RateLimited, Unauthenticated


class KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    key: str | None = Field(None, min_length=16, description="hashed on load; prefer sha256 in files")
    tiers: list[str] | None = Field(None, description="allowed tiers; None = all, and pins")
    rate_per_s: float | None = Field(None, gt=0)
    burst: int | None = Field(None, ge=1)
    admin: bool = Field(False, description="may call /v1/admin/* (re-profile, reload keys)")

    @model_validator(mode="after")
    def _one_secret(self) -> KeySpec:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError(f"key {self.name!r}: give exactly one of sha256 or key")
        return self


class AuthConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="require a bearer API key on inference and catalog routes")
    keys_file: Path | None = Field(None, description="YAML/JSON with `keys:`; else $TIERGATE_API_KEYS")
    watch_interval_s: float = Field(
        5.0,
        ge=0,
        description="every replica re-reads keys_file this often and reloads when its content "
        "changed, so a revoked key stops working on all of them (/v1/admin/reload-keys reaches "
        "one); 0: only on that call",
    )


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    """What a request reaches, resolved from its form before any check: the tier it runs
    under (None only for a pin without a tier) and the variant it pins. ``name`` is the v2
    model name when that name itself chose the target (a variant, a tier, or one nothing
    answers to: ``known`` False)."""

    tier: str | None
    variant: str | None = None
    name: str | None = None
    known: bool = True

    @classmethod
    def named(cls, tier: str | None, variant: str | None, default_tier: str) -> Target:
        """From a tier and a pin as a request names them (/v1 bodies, v2 ``parameters``):
        the tier named, else ``default_tier`` unless the request pins a variant. An empty
        tier is none; any other value stays, for routing to refuse if it is no tier name."""
        tier = None if tier == "" else tier
        return cls(tier if tier is not None or variant is not None else default_tier, variant)

    @classmethod
    def of_model(
        cls,
        name: str,
        tier: str | None,
        default_tier: str,
        *,
        model: str,
        tiers: Collection[str],
        variants: Collection[str],
    ) -> Target:
        """From a v2 model name: a variant is a pin, a tier is that tier, the model's own
        name runs under ``tier`` (its ``parameters.tier``) or the default."""
        if name in variants:
            return cls(None, name, name=name)
        if name in tiers:
            return cls(name, name=name)
        if name == model:
            return cls.named(tier, None, default_tier)
        return cls(None, name=name, known=False)

    def routing(self) -> dict[str, str | None]:
        """The routing fields that run this target (a request's tier and variant replaced)."""
        return {"tier": self.tier, "variant": self.variant}

    def within(self, tiers: frozenset[str]) -> bool:
        """Whether a key limited to ``tiers`` may reach this: a known tier of them, no pin."""
        return self.known and self.variant is None and isinstance(self.tier, str) and self.tier in tiers


@dataclass
class Grant:
    name: str
    tiers: frozenset[str] | None
    rate_per_s: float | None
    burst: int
    admin: bool = False
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    refilled: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.refilled = float(self.burst), self.clock()

    def default_tier(self, default_tier: str) -> str:
        """The tier a request that names none runs under: the default, or the key's first
        allowed tier when the default is not one of them."""
        if self.tiers is None or default_tier in self.tiers:
            return default_tier
        return sorted(self.tiers)[0]

    def authorize(self, target: Target) -> None:
        """403 unless the key may use what ``target`` reaches. A tier-limited key runs only
        under its tiers and never pins a variant (a pin is beyond any tier's routing); a v2
        model name it may not use is refused in one wording, known or not, so the answer
        tells it no names. A key with every tier may reach anything (admin is separate)."""
        if self.tiers is None or target.within(self.tiers):
            return
        allowed = sorted(self.tiers)
        if target.name is not None:
            message, field = f"model {target.name!r} is not allowed (tiers: {allowed})", "model"
        elif target.variant is not None:
            message, field = f"pinning a variant is not allowed (tiers: {allowed})", "variant"
        else:
            message, field = f"tier {target.tier!r} is not allowed (allowed: {allowed})", "tier"
        raise Forbidden(f"key {self.name}: {message}", field=field)

    def check_admin(self) -> None:
        """403 for a key that is not an admin key."""
        if not self.admin:
            raise Forbidden(f"key {self.name}: admin operations need a key with `admin: true`")

    def take(self) -> None:
        """One request from the token bucket; 429 with the seconds until the next token."""
        if self.rate_per_s is None:
            return
        now = self.clock()
        self.tokens = min(float(self.burst), self.tokens + (now - self.refilled) * self.rate_per_s)
        self.refilled = now
        if self.tokens < 1.0:
            wait_s = math.ceil((1.0 - self.tokens) / self.rate_per_s)
            raise RateLimited(f"key {self.name}: over its rate of {self.rate_per_s}/s", retry_after_s=wait_s)
        self.tokens -= 1.0


class KeyRing:
    def __init__(self, specs: list[KeySpec], clock: Callable[[], float] = time.monotonic) -> None:
        self._grants: dict[str, Grant] = {}
        for spec in specs:
            rate = spec.rate_per_s
            burst = spec.burst or (max(1, math.ceil(rate)) if rate else 1)
            tiers = frozenset(spec.tiers) if spec.tiers is not None else None
            self._grants[spec.sha256 or digest(spec.key)] = Grant(
                spec.name, tiers, rate, burst, spec.admin, clock
            )

    @classmethod
    def load(
        cls, config: AuthConfig, env_value: str | None = None, clock: Callable[[], float] = time.monotonic
    ) -> KeyRing:
        """From ``config.keys_file``, else from ``env_value`` (the $TIERGATE_API_KEYS text)."""
        if config.keys_file is not None:
            text, source = Path(config.keys_file).read_text(), str(config.keys_file)
        elif env_value:
            text, source = env_value, "$TIERGATE_API_KEYS"
        else:
            raise ValueError("serving.auth.enabled needs serving.auth.keys_file or $TIERGATE_API_KEYS")
        try:
            raw = yaml.safe_load(text) if not text.lstrip().startswith(("{", "[")) else json.loads(text)
        except (yaml.YAMLError, ValueError) as error:
            raise ValueError(f"{source}: not valid YAML or JSON: {error}") from None
        entries = raw.get("keys") if isinstance(raw, dict) else raw
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{source}: expected a non-empty list under `keys:`")
        return cls([KeySpec.model_validate(entry) for entry in entries], clock)

    def authenticate(self, authorization: str | None) -> Grant:
        if not authorization or not authorization.lower().startswith("bearer "):
            raise Unauthenticated("missing API key: send `Authorization: Bearer <key>`")
        offered = digest(authorization[7:].strip())
        grant = self._grants.get(offered)
        # the lookup is by digest; compare_digest keeps the final check constant-time
        if grant is None or not any(hmac.compare_digest(offered, known) for known in self._grants):
            raise Unauthenticated("invalid API key")
        return grant

    def authenticate_admin(self, authorization: str | None) -> Grant:
        """401 without a valid key, 403 for a key that is not an admin key."""
        grant = self.authenticate(authorization)
        grant.check_admin()
        return grant

    def keep_buckets_from(self, previous: KeyRing) -> None:
        """After a reload, a key that is still there keeps its token bucket (a reload must
        not reset anyone's rate limit)."""
        for key_digest, grant in self._grants.items():
            old = previous._grants.get(key_digest)
            if old is not None and old.rate_per_s == grant.rate_per_s:
                grant.tokens, grant.refilled = min(old.tokens, float(grant.burst)), old.refilled

    def __len__(self) -> int:
        return len(self._grants)
