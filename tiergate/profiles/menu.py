"""The menu: one measured entry per variant, its JSON manifest and the Pareto front.

entries = mark_pareto(entries)
Menu(model="m", ..., variants=entries).signed(key).write(Path("manifest.json"))
Menu.read(path).verify(key, source=str(path))    # raises MenuSignatureError

With a menu key (``$TIERGATE_MENU_KEY``), the menu carries ``signature``: an HMAC-SHA256
over the canonical JSON of everything else in it (every measurement, every artifact's
path and sha256), so an edit to the manifest, or a menu written without the key, is
refused by ``verify``.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from tiergate.compression.integrity import KEY_VARIABLE, mac


class MenuSignatureError(ValueError):
    """A menu key is set and the menu is unsigned, or its signature does not match it."""


class LatencyStats(BaseModel):
    p50: float
    p95: float
    p99: float
    runs: int


class MenuEntry(BaseModel):
    """Everything measured about one variant (milliseconds, bytes, fractions in [0, 1])."""

    model_config = ConfigDict(extra="forbid")

    name: str
    recipe: list[str]
    path: str  # the ONNX file
    sha256: str
    accuracy: float | None  # top-1 on the test split; None without labels
    accuracy_ci95: tuple[float, float] | None
    fidelity: float  # top-1 agreement with fp32 on the test split
    test_samples: int
    latency_ms: dict[str, LatencyStats]  # keyed by batch size
    threads: int
    throughput_per_s: float  # images/s at the largest profiled batch, one stream
    speedup: float  # fp32 p50 / this p50 at batch 1, same run
    size_bytes: int
    params: int
    flops: int  # per image
    pareto: bool = False
    build_s: float
    cache_hit: bool
    details: dict[str, object] = Field(default_factory=dict)

    @property
    def quality(self) -> float:
        """What the menu ranks by: accuracy when labelled, else fidelity."""
        return self.accuracy if self.accuracy is not None else self.fidelity

    def p95_ms(self, batch_size: int = 1) -> float:
        return self.latency_ms[str(batch_size)].p95


class Menu(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    dataset: str
    labelled: bool
    quality_metric: str  # "accuracy" or "fidelity"
    classes: list[str] = Field(default_factory=list)  # label names, by output index
    input_shape: tuple[int, int, int] | None = None  # (C, H, W) the variants take
    variants: list[MenuEntry]
    skipped: dict[str, str] = Field(default_factory=dict)  # name -> why it was not built
    signature: str | None = None  # HMAC-SHA256 of the rest, with the menu key (when one is set)

    def signed(self, key: bytes | None) -> Menu:
        """This menu signed with ``key``; unchanged (unsigned) without one."""
        return self if key is None else self.model_copy(update={"signature": mac(key, self._signed_part())})

    def verify(self, key: bytes | None, source: str) -> None:
        """With a key, refuse (MenuSignatureError) an unsigned menu or one whose signature
        does not match; ``source`` names where the menu came from. Without one, any menu
        (signed or not) passes."""
        if key is None:
            return
        if self.signature is None:
            raise MenuSignatureError(f"{source}: the menu is unsigned and {KEY_VARIABLE} is set: refused")
        if not hmac.compare_digest(self.signature, mac(key, self._signed_part())):
            raise MenuSignatureError(
                f"{source}: the menu's signature does not match {KEY_VARIABLE} (the menu was altered "
                "after it was signed, or signed with another key): refused"
            )

    def _signed_part(self) -> object:
        """Everything but the signature, as JSON (so a menu read back from its file, or
        handed to a replica as JSON, signs to the same bytes)."""
        return json.loads(self.model_dump_json(exclude={"signature"}))

    def write(self, path: Path) -> None:
        """Replace ``path`` in one step: a serving replica reading it never sees half a menu."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        partial.write_text(self.model_dump_json(indent=2))
        os.replace(partial, path)

    @classmethod
    def read(cls, path: Path) -> Menu:
        return cls.model_validate(json.loads(path.read_text()))


def mark_pareto(entries: list[MenuEntry]) -> list[MenuEntry]:
    """Flag entries that no other entry beats on both quality and batch-1 p95 latency."""

    def dominated(entry: MenuEntry) -> bool:
        return any(
            other.quality >= entry.quality
            and other.p95_ms() <= entry.p95_ms()
            and (other.quality > entry.quality or other.p95_ms() < entry.p95_ms())
            for other in entries
        )

    return [entry.model_copy(update={"pareto": not dominated(entry)}) for entry in entries]
