"""Shadow sampling's choices (pure logic: a fake run in place of the engines): which ids are
sampled, when a sampled answer is skipped, dropped or compared, and what is counted."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from tests.support.shadow import sampled_ids
from tests.unit.serving.quality.test_demotion import CONFIG, _engine, _entry
from tiergate.serving.quality import Demoter, LiveFidelity, Shadow, sampled
from tiergate.serving.quality.shadow import RunBudget
from tiergate.serving.registry import MenuInfo, MenuRegistry
from tiergate.serving.trace import Trace


def test_sampling_is_deterministic_per_id_and_near_the_rate():
    """The same id gets the same answer every time; over 20,000 ids about 2% are sampled."""
    ids = [f"id-{n}" for n in range(20_000)]
    first = [sampled(i, 0.02) for i in ids]
    assert first == [sampled(i, 0.02) for i in ids]
    assert 0.017 < sum(first) / len(ids) < 0.023
    assert not any(sampled(i, 0.0) for i in ids[:100]) and all(sampled(i, 1.0) for i in ids[:100])


class Harness:
    """A Shadow over a registry of fp32 and int8 whose runs answer class ``answers[name]``."""

    def __init__(
        self, busy: str | None = None, max_pending: int = 4, budget: RunBudget | None = None
    ) -> None:
        self.registry = MenuRegistry(MenuInfo("m", "d", "accuracy", (), None), reference="fp32")
        self.registry.add(_entry("fp32", fidelity=1.0), _engine("fp32"))
        self.registry.add(_entry("int8"), _engine("int8"))
        self.answers, self.runs, self.counted = {"fp32": 3, "int8": 3}, [], []
        config = CONFIG.model_copy(update={"max_pending": max_pending})
        demoter = Demoter(self.registry, LiveFidelity(1000, 3600), config)
        self.shadow = Shadow(config, self.registry, self._run, lambda: busy, demoter,
                             lambda *outcome: self.counted.append(outcome), budget)  # fmt: skip

    async def _run(self, name: str, x: np.ndarray) -> np.ndarray:
        self.runs.append(name)
        logits = np.zeros((len(x), 10), dtype=np.float32)
        logits[:, self.answers[name]] = 1.0
        return logits

    def offer(self, request_id: str, variant: str, images: int = 1) -> Trace:
        trace = Trace(variant=variant, inputs=np.zeros((images, 1, 8, 8), dtype=np.float32))
        self.shadow.offer(request_id, trace, [3] * images)
        return trace


def test_a_sampled_answer_is_run_on_fp32_and_compared():
    """A sampled int8 answer of 2 images is run on fp32 once and counted shadowed, 2 compared
    and 2 agreed; the input leaves the trace."""

    async def go():
        harness = Harness()
        trace = harness.offer(sampled_ids(1)[0], "int8", images=2)
        await harness.shadow.drain()
        return harness, trace

    harness, trace = asyncio.run(go())
    assert harness.runs == ["fp32"] and harness.counted == [("int8", "shadowed", 2, 2)]
    assert trace.inputs is None


@pytest.mark.parametrize(
    ("variant", "chosen", "busy", "counted"),
    [("int8", False, None, [("int8", "not_sampled", 0, 0)]), ("int8", True, "busy", [("int8", "busy", 0, 0)]),
     ("fp32", True, None, [])],
)  # fmt: skip
def test_answers_not_shadowed_are_counted_by_why(variant, chosen, busy, counted):
    """An id not sampled, a busy replica, or an answer of fp32 itself (nothing demoted to
    probe): no run, and the outcome counted (nothing for fp32)."""

    async def go():
        harness = Harness(busy=busy)
        harness.offer(sampled_ids(1, chosen=chosen)[0], variant)
        await harness.shadow.drain()
        return harness

    harness = asyncio.run(go())
    assert harness.runs == [] and harness.counted == counted


def test_past_max_pending_sampled_answers_are_dropped():
    """With max_pending 2, the third sampled answer offered before any run ends is dropped."""

    async def go():
        harness = Harness(max_pending=2)
        for request_id in sampled_ids(3):
            harness.offer(request_id, "int8")
        await harness.shadow.drain()
        return harness

    outcomes = [outcome[1] for outcome in asyncio.run(go()).counted]
    assert sorted(outcomes) == ["dropped", "shadowed", "shadowed"]


def test_a_demoted_variant_is_probed_on_answers_fp32_served():
    """Once int8 is demoted, a sampled fp32 answer is run on int8 (the client's answer is the
    reference) and counted probed."""

    async def go():
        harness = Harness()
        harness.registry.demote("int8", "test")
        harness.shadow.demoter.demoted.add("int8")
        harness.answers["int8"] = 5
        harness.offer(sampled_ids(1)[0], "fp32")
        await harness.shadow.drain()
        return harness

    harness = asyncio.run(go())
    assert harness.runs == ["int8"] and harness.counted == [("int8", "probed", 1, 0)]


@pytest.mark.parametrize(
    ("in_flight", "backlog_ms", "late", "why"),
    [(8, 5.0, None, None), (9, 0.0, None, "9 requests in flight"), (1, 5.1, None, "queued work"),
     (1, 0.0, "queued work would answer late", "shedding")],
)  # fmt: skip
def test_spare_capacity_refuses_above_the_thresholds(in_flight, backlog_ms, late, why):
    """Room while in flight <= 0.25 x HAProxy's 32 per replica, queued run time <= 5 ms and
    nothing would be shed; else busy, saying which."""
    from tiergate.serving.admission import Admission
    from tiergate.serving.config import ServingConfig
    from tiergate.serving.quality import SpareCapacity

    admission = Admission()
    admission.in_flight = in_flight
    spare = SpareCapacity(ServingConfig(), admission, lambda: backlog_ms, lambda waited_ms: late)

    async def go():
        return spare.busy()

    busy = asyncio.run(go())
    assert (busy is None) if why is None else (why in busy)


def test_run_budget_holds_shadow_runs_to_their_share_of_a_core():
    """A bucket of 0.1 s refilling at 2% per second: open at first, shut once a 0.2 s run is
    spent, open again only after the 5 s that 0.1 s takes to refill at 2%."""
    now = [0.0]
    budget = RunBudget(0.02, 0.1, clock=lambda: now[0])
    assert budget.allows()
    budget.spend(0.2)
    now[0] = 4.9
    assert not budget.allows()
    now[0] = 5.1
    assert budget.allows()


def test_a_sampled_answer_over_budget_is_skipped_and_counted():
    """With the run budget spent, a sampled int8 answer is not run, and counted over_budget."""

    async def go():
        budget = RunBudget(0.02, 0.1, clock=lambda: 0.0)
        budget.spend(1.0)
        harness = Harness(budget=budget)
        harness.offer(sampled_ids(1)[0], "int8")
        await harness.shadow.drain()
        return harness

    harness = asyncio.run(go())
    assert harness.runs == [] and harness.counted == [("int8", "over_budget", 0, 0)]
