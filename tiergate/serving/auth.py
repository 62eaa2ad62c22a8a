"""API keys: bearer tokens kept only as sha256 digests, each with the tiers it may use and
a token-bucket rate limit. Off unless ``serving.auth.enabled``.

    keys = KeyRing.load(serving.auth)            # from the keys file or $TIERGATE_API_KEYS
    grant = keys.authenticate("Bearer s3cret")   # Unauthenticated when missing or unknown
    tier = grant.allow(tier="fast", variant=None, default_tier="balanced")  # Forbidden
    grant.take()                                 # RateLimited (retry_after_s) when over its rate

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
from collections.abc import Callable
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

    def allow(self, tier: str | None, variant: str | None, default_tier: str) -> str | None:
        """The tier the request runs under; 403 for a tier or pin outside the key's allowance.
        A request that names no tier gets the default, or the key's first allowed tier."""
        if self.tiers is None:
            return tier
        if variant is not None and tier is None:
            raise Forbidden(
                f"key {self.name}: pinning a variant is not allowed (tiers: {sorted(self.tiers)})"
            )
        chosen = tier or (default_tier if default_tier in self.tiers else sorted(self.tiers)[0])
        if chosen not in self.tiers:
            raise Forbidden(
                f"key {self.name}: tier {chosen!r} is not allowed (allowed: {sorted(self.tiers)})"
            )
        return chosen

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
        if not grant.admin:
            raise Forbidden(f"key {grant.name}: admin operations need a key with `admin: true`")
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
