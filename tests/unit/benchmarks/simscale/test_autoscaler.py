"""The simulation's autoscaling rule against Ray Serve's own code (its policy, gain and delay)."""

from __future__ import annotations

import random

from ray.serve import autoscaling_policy as ray_policy
from ray.serve.config import AutoscalingConfig as RayAutoscalingConfig

from tests.benchmarks.simscale.autoscaler import (
    Autoscaler,
    AutoscalingConfig,
    OngoingWindow,
    apply_scaling_factors,
    desired_replicas,
)


def test_defaults_are_rays():
    """Each field's default is the default of Ray Serve's AutoscalingConfig."""
    ray, ours = RayAutoscalingConfig(), AutoscalingConfig()
    assert (ours.min_replicas, ours.max_replicas) == (ray.min_replicas, ray.max_replicas)
    assert ours.target_ongoing_requests == ray.target_ongoing_requests
    assert (ours.upscale_delay_s, ours.downscale_delay_s) == (ray.upscale_delay_s, ray.downscale_delay_s)
    assert (ours.upscaling_factor, ours.downscaling_factor) == (
        ray.get_upscaling_factor(),
        ray.get_downscaling_factor(),
    )
    assert ours.metrics_interval_s == ray.metrics_interval_s
    assert ours.look_back_period_s == ray.look_back_period_s


def test_desired_replicas_is_ongoing_over_target():
    """30 ongoing requests at a target of 2 per replica want 15 replicas, whatever runs now."""
    config = AutoscalingConfig(target_ongoing_requests=2.0)
    assert desired_replicas(30.0, 10, config) == 15.0
    assert desired_replicas(30.0, 40, config) == 15.0


def test_scaling_factors_match_ray():
    """The gain on a decision is Ray's, up and down, including its stuck-downscale step."""
    for up, down in [(1.0, 1.0), (0.5, 0.3), (2.0, 0.1)]:
        ours = AutoscalingConfig(upscaling_factor=up, downscaling_factor=down)
        ray = RayAutoscalingConfig(upscaling_factor=up, downscaling_factor=down)
        for desired in [0.0, 3.2, 9.0, 10.0, 10.5, 17.9, 60.0]:
            for current in [1, 5, 10, 20]:
                expected = ray_policy._apply_scaling_factors(desired, current, ray)
                assert apply_scaling_factors(desired, current, ours) == expected, (up, down, desired, current)


def _ray_decision(
    total: float, running: int, target: int, ray: RayAutoscalingConfig, state: dict, now: float
) -> int:
    """Ray's chain for one control-loop step: policy, gain, delay (at ``now``), bounds."""
    desired = ray_policy._core_replica_queue_length_policy(_Context(running, total, ray))[0]
    scaled = ray_policy._apply_scaling_factors(desired, running, ray)
    decided, _ = ray_policy._apply_delay_logic(max(0, scaled), target, ray, state, _now=now)
    return max(ray.min_replicas, min(ray.max_replicas, decided))


class _Context:
    """The fields of Ray's AutoscalingContext that its request-based policy reads."""

    def __init__(self, running: int, total: float, config: RayAutoscalingConfig) -> None:
        self.current_num_replicas, self.total_num_requests, self.config = running, total, config
        self.target_num_replicas = running


def test_decisions_match_ray_step_by_step():
    """Over 400 control-loop steps of random load, every target replica count is Ray's."""
    fields = dict(min_replicas=2, max_replicas=40, target_ongoing_requests=1.5, upscale_delay_s=3.0,
                  downscale_delay_s=5.0, upscaling_factor=0.7, downscaling_factor=0.5)  # fmt: skip
    ours, ray = Autoscaler(AutoscalingConfig(**fields)), RayAutoscalingConfig(**fields)
    rng, state, target, changes = random.Random(7), {}, 2, 0
    for step in range(400):
        now, total = step * 0.5, rng.choice([0.0, 2.0, 10.0, 25.0, 70.0]) if step % 12 == 0 else None
        if total is not None:
            ours.window = OngoingWindow(ours.config)  # the controller's mean is exactly ``total`` now
            ours.window.record(now, total)
            ours.window.push(now)
            level = total
        running = target  # replicas start at once here: Ray's rule, not start-up, is under test
        expected = _ray_decision(level, running, target, ray, state, now)
        decided = ours.decide(now, running, target)
        assert decided == expected, (step, level, running, target)
        changes += decided != target
        target = decided
    assert changes >= 10  # the sequence did exercise scaling both ways


def test_upscale_waits_for_its_delay():
    """A higher load scales up only once it has been seen for upscale_delay_s."""
    rule = Autoscaler(AutoscalingConfig(min_replicas=1, max_replicas=50, target_ongoing_requests=1.0))
    rule.window.record(0.0, 20.0)
    rule.window.push(0.0)
    assert rule.decide(0.0, running=4, target=4) == 4
    assert rule.decide(29.9, running=4, target=4) == 4
    assert rule.decide(30.0, running=4, target=4) == 20


def test_window_mean_is_time_weighted_over_the_look_back():
    """The controller's mean: pushed samples only, each held until the next, within the look-back."""
    window = OngoingWindow(AutoscalingConfig(look_back_period_s=30.0))
    window.record(0.0, 100.0)
    window.push(0.0)
    window.record(40.0, 10.0)
    window.record(46.0, 20.0)
    assert window.mean(50.0) == 100.0  # not pushed yet: the controller still has the old sample
    window.push(50.0)  # the sample at 0 s is older than the look-back and is dropped
    assert window.mean(52.0) == (10.0 * 6 + 20.0 * 6) / 12
