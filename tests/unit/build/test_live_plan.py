"""The pure parts of serving while compressing: the build order, measurements on part of
the test split, build progress as the board gets it, and why a task failed."""

from __future__ import annotations

import numpy as np

from tiergate.build.plan import build_order, to_build, waits_for
from tiergate.build.tasks import Reporter, failure_reason
from tiergate.compression import default_recipes, parse_variants
from tiergate.compression.progress import observed, progress
from tiergate.profiles import Candidate, Measurement, ProfileConfig, menu_entries
from tiergate.profiles.profiler import evaluation_indices
from tiergate.serving.board import BuildProgress, BuildState


def test_cheap_variants_come_first_and_a_composition_follows_its_parent():
    """fp32 first, int8 next, fine-tunes by their training passes, pruned+int8 right after pruned."""
    names = ["distilled+int8", "pruned+int8", "lowrank", "distilled", "int8", "pruned", "fp32"]
    order = [spec.name for spec in build_order(parse_variants(names, default_recipes()), 12000)]
    assert order[:2] == ["fp32", "int8"]
    assert order.index("pruned+int8") == order.index("pruned") + 1
    assert order.index("distilled+int8") == order.index("distilled") + 1


def test_a_config_change_rebuilds_what_changed_or_came_back_and_nothing_busy():
    """After a config change: a changed recipe and a variant added back are built again; an
    unchanged one is not, nor one still building; every one when the profile changed."""
    specs = parse_variants(["fp32", "int8", "pruned", "distilled"], default_recipes())
    planned = {spec.name: spec.steps for spec in specs}
    planned["int8"] = ()  # int8's recipe was something else before
    have = {"fp32", "int8", "pruned"}  # distilled was removed, and is listed again
    assert to_build(specs, planned, have, busy=set(), remeasure=False) == ["int8", "distilled"]
    assert to_build(specs, planned, have, busy={"int8"}, remeasure=False) == ["distilled"]
    assert to_build(specs, planned, have | {"distilled"}, busy=set(), remeasure=True) == [
        "fp32",
        "int8",
        "pruned",
        "distilled",
    ]


def test_a_composition_waits_for_its_parent():
    """pruned+int8 waits while pruned builds; int8 does not, nor pruned for pruned+int8."""
    assert waits_for("pruned+int8", {"pruned"}) and not waits_for("int8", {"pruned"})
    assert not waits_for("pruned", {"pruned+int8"})


def test_a_quick_estimate_uses_a_fixed_subset_that_a_larger_one_contains():
    """The 100 images of a quick estimate are the same each time and among the 500 of a larger one."""
    small, large = evaluation_indices(1000, 100), evaluation_indices(1000, 500)
    assert len(small) == 100 and np.array_equal(small, evaluation_indices(1000, 100))
    assert set(small) <= set(large) and np.array_equal(evaluation_indices(1000, None), np.arange(1000))


class _Splits:
    """Just what menu_entries reads: the test labels and the data's fingerprint."""

    def __init__(self, labels: np.ndarray) -> None:
        self.test = type("Test", (), {"y": labels, "__len__": lambda self: len(labels)})()


def _measurement(name: str, labels: np.ndarray, samples: int | None) -> Measurement:
    stats = {"p50": 1.0, "p95": 1.0, "p99": 1.0, "runs": 10}
    record = {"latency_ms": {"1": stats}, "params": 1, "flops": 1, "size_bytes": 1}
    candidate = Candidate(name, (), __import__("pathlib").Path(f"{name}.onnx"), "0" * 64, 0.0, False, {})
    return Measurement(candidate, record, labels, samples)


def test_a_quick_reference_scores_on_its_subset_and_fidelity_counts_the_images_both_saw():
    """fp32 estimated on 100 of 1000 images scores on those 100; a full variant's fidelity is
    counted on those 100 images only."""
    truth = np.arange(1000) % 10
    subset = evaluation_indices(1000, 100)
    fp32 = _measurement("fp32", truth[subset], 100)
    full = truth.copy()
    full[np.setdiff1d(np.arange(1000), subset)] = -1  # wrong wherever fp32 did not look
    entries = menu_entries(
        [fp32, _measurement("int8", full, None)], _Splits(truth), ProfileConfig(batch_sizes=(1,))
    )
    assert entries[0].accuracy == 1.0 and entries[0].test_samples == 100
    assert entries[1].fidelity == 1.0 and entries[1].accuracy == 0.1


class _Board:
    def __init__(self) -> None:
        self.reported: list[dict] = []
        self.report = type("Remote", (), {"remote": lambda _, progress: self.reported.append(progress)})()


def test_progress_bars_reach_the_board_at_most_once_a_second_and_states_at_once():
    """Inside ``observed``, a training bar's steps reach the board as building percent (90% for
    the build) no more than once per second; a state change is sent at once."""
    board, now = _Board(), [0.0]
    reporter = Reporter(board, "pruned", clock=lambda: now[0])
    with observed(reporter.observe):
        bar = progress(total=10, desc="fine-tune")
        for step in range(10):
            now[0] = step * 0.4
            bar.update()
        bar.close()
    reporter.state(BuildState.MEASURING, "accuracy and latency", percent=90.0)
    sent = [BuildProgress.from_json(p) for p in board.reported]
    assert [p.percent for p in sent[:-1]] == [9.0, 36.0, 63.0, 90.0]
    assert sent[0].step == "fine-tune" and sent[-1].state is BuildState.MEASURING


def test_a_task_failure_is_told_in_one_line_with_the_builds_own_error():
    """A build's error wrapped by Ray (``cause``) is named by its own type and first line."""
    wrapped = RuntimeError("ray task failed\nlong traceback")
    wrapped.cause = ValueError("prune: ratio 1.5 is not in (0, 1)\nmore")
    assert failure_reason(wrapped) == "ValueError: prune: ratio 1.5 is not in (0, 1)"
