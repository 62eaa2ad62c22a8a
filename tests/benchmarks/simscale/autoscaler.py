"""Ray Serve's default autoscaling rule for one deployment, on a virtual clock.

    rule = Autoscaler(AutoscalingConfig(min_replicas=10, max_replicas=100, target_ongoing_requests=1))
    rule.window.record(now, ongoing=23)   # what the replicas record (every record_interval_s)
    rule.window.push(now)                 # what reaches the controller (every metrics_interval_s)
    target = rule.decide(now, running=10, target=10)   # the controller's loop (every CONTROL_LOOP_S)

Modelled on Ray 2.60, read in its source (ray/serve/...):
- ``autoscaling_policy._core_replica_queue_length_policy``: desired = running x total /
  (target_ongoing_requests x running), i.e. total ongoing requests / target;
- ``autoscaling_policy._apply_scaling_factors``: current + factor x (desired - current),
  rounded up, and a downscale stuck by the factor still drops one replica;
- ``autoscaling_policy._apply_delay_logic``: a decision in one direction takes effect once it
  has held for upscale_delay_s (or downscale_delay_s) of clock time; the other direction or
  "no change" restarts the wait;
- ``_private/autoscaling_state.apply_bounds``: clipped to [min_replicas, max_replicas] last;
- ``_private/autoscaling_state.get_total_num_requests``: the time-weighted mean of the
  deployment's ongoing requests (queued and running in its replicas) over the samples the
  replicas pushed, each holding until the next, the last until now;
- ``_private/replica.py``: a replica records its ongoing requests every
  min(look_back_period_s x 0.2, metrics_interval_s) and pushes the samples of the last
  look_back_period_s every metrics_interval_s; ``_private/constants.CONTROL_LOOP_INTERVAL_S``
  (0.1 s) is how often the controller decides.
The simulation records the deployment's total at once where Ray merges per-replica series
recorded at the same period (the same sum when the replicas record in step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CONTROL_LOOP_S = 0.1  # ray.serve._private.constants.CONTROL_LOOP_INTERVAL_S
RECORD_INTERVAL_FACTOR = 0.2  # RAY_SERVE_AUTOSCALING_METRIC_RECORD_INTERVAL_FACTOR


@dataclass(frozen=True)
class AutoscalingConfig:
    """The fields of Ray Serve's ``autoscaling_config`` that the rule reads (Ray's defaults)."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    upscaling_factor: float = 1.0
    downscaling_factor: float = 1.0
    metrics_interval_s: float = 10.0
    look_back_period_s: float = 30.0

    @property
    def record_interval_s(self) -> float:
        return min(self.look_back_period_s * RECORD_INTERVAL_FACTOR, self.metrics_interval_s)


def desired_replicas(total_ongoing: float, running: int, config: AutoscalingConfig) -> float:
    """Ray's request-based policy: the replicas that would hold ``target_ongoing_requests`` each."""
    if running == 0:
        return 0.0
    return running * total_ongoing / (config.target_ongoing_requests * running)


def apply_scaling_factors(desired: float, current: int, config: AutoscalingConfig) -> int:
    """Ray's gain on a decision: move ``factor`` of the way from ``current`` to ``desired``."""
    if current == 0:
        return math.ceil(desired)
    delta = desired - current
    factor = config.upscaling_factor if delta > 0 else config.downscaling_factor
    scaled = math.ceil(current + factor * delta)
    if math.ceil(desired) < current and scaled == current:
        scaled -= 1
    return scaled


class DelayGate:
    """Ray's delay logic: a wanted change applies once wanted for its delay without a break."""

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config = config
        self._direction = 0  # +1 wanting up, -1 wanting down, 0 neither
        self._since: float | None = None

    def decide(self, desired: int, target: int, now: float) -> int:
        direction = (desired > target) - (desired < target)
        if direction == 0:
            self._direction, self._since = 0, None
            return target
        if direction != self._direction:
            self._direction, self._since = direction, now
        delay_s = self.config.upscale_delay_s if direction > 0 else self.config.downscale_delay_s
        if now - self._since + 1e-6 < delay_s:
            return target
        self._direction, self._since = 0, None
        # Ray keeps a downscale above 0 unless it is the 1 -> 0 step (scale to zero)
        return desired if direction > 0 or target == 1 else max(1, desired)


class OngoingWindow:
    """The ongoing-request samples the controller has, and their time-weighted mean."""

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config = config
        self._recorded: list[tuple[float, float]] = []  # (time, ongoing), recorded, not yet pushed
        self._pushed: list[tuple[float, float]] = []

    def record(self, now: float, ongoing: float) -> None:
        self._recorded.append((now, ongoing))

    def push(self, now: float) -> None:
        """The replicas send what they recorded in the last look_back_period_s."""
        since = now - self.config.look_back_period_s
        self._pushed = [sample for sample in self._pushed + self._recorded if sample[0] >= since]
        self._recorded = []

    def mean(self, now: float) -> float:
        """Mean of the pushed step function from its first sample to ``now`` (0 without samples)."""
        samples = self._pushed
        if not samples:
            return 0.0
        ends = [t for t, _ in samples[1:]] + [max(now, samples[-1][0] + 1e-3)]
        weighted = sum(value * (end - t) for (t, value), end in zip(samples, ends, strict=True))
        return weighted / (ends[-1] - samples[0][0])


class Autoscaler:
    """One deployment's controller-side rule: desired, gain, delay, then bounds."""

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config = config
        self.window = OngoingWindow(config)
        self._gate = DelayGate(config)

    def decide(self, now: float, running: int, target: int) -> int:
        """The new target replica count, given the ``running`` replicas and the current ``target``."""
        desired = desired_replicas(self.window.mean(now), running, self.config)
        if running == 0:
            return self.bounded(target)
        scaled = apply_scaling_factors(desired, running, self.config)
        return self.bounded(self._gate.decide(max(0, scaled), target, now))

    def bounded(self, replicas: int) -> int:
        return max(self.config.min_replicas, min(self.config.max_replicas, replicas))
