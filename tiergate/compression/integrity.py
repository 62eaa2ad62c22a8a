"""Seals for JSON records in the cache (artifact metadata, measurements) and the menu:
a sha256 over the record's canonical JSON always, and an HMAC-SHA256 with the menu key
(``$TIERGATE_MENU_KEY``) when one is set.

    sealer = Sealer(settings.menu_key())
    stored = {**record, "seal": sealer.seal(record)}
    problem = sealer.problem(record, stored["seal"])    # None: the seal vouches for it

A plain sha256 catches corruption and mix-ups only: whoever can write the cache can
recompute it after an edit. The HMAC is what stops a deliberate edit, since computing it
takes the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

KEY_VARIABLE = "TIERGATE_MENU_KEY"


def canonical_json(data: Any) -> bytes:
    """One byte string per JSON value: sorted keys, no whitespace, ASCII only."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def mac(key: bytes, data: Any) -> str:
    """HMAC-SHA256 (hex) of ``data``'s canonical JSON."""
    return hmac.new(key, canonical_json(data), hashlib.sha256).hexdigest()


class Sealer:
    """Seals records and checks seals, with the menu key if there is one."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key

    @property
    def keyed(self) -> bool:
        return self._key is not None

    def seal(self, data: Any) -> dict[str, str]:
        """The seal of ``data`` (a JSON-able value): its sha256, and its HMAC when keyed."""
        seal = {"sha256": hashlib.sha256(canonical_json(data)).hexdigest()}
        if self._key is not None:
            seal["hmac_sha256"] = mac(self._key, data)
        return seal

    def problem(self, data: Any, seal: object) -> str | None:
        """Why ``seal`` does not vouch for ``data``; None when it does. With a key, a seal
        without an HMAC (written with no key set) does not vouch for anything."""
        if not isinstance(seal, dict):
            return "it has no integrity seal"
        expected = self.seal(data)
        if not hmac.compare_digest(str(seal.get("sha256", "")), expected["sha256"]):
            return "its content does not match its sha256"
        if self._key is None:
            return None
        if "hmac_sha256" not in seal:
            return f"it has no HMAC (written while {KEY_VARIABLE} was not set)"
        if not hmac.compare_digest(str(seal["hmac_sha256"]), expected["hmac_sha256"]):
            return f"its HMAC does not match (edited, or sealed with another {KEY_VARIABLE})"
        return None
