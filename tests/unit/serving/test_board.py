"""The build board as a plain object (injected clock), and a replica's link to it over an
in-process handle: status, numbered commands per role, answers, members, and each command
run once per replica."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.board import LocalBoardHandle
from tiergate.serving.board import Board, BuildProgress, BuildState
from tiergate.serving.boardlink import BoardLink


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def test_the_latest_report_per_variant_wins_and_forget_drops_it():
    """report() keeps the last progress per variant, status() gives it back as JSON, forget() drops it."""
    board = Board()
    board.report(BuildProgress("int8", BuildState.QUEUED).to_json())
    board.report(BuildProgress("int8", BuildState.BUILDING, "calibrate", 40.0, 12.0).to_json())
    board.report(BuildProgress("lowrank", BuildState.FAILED, reason="rank 0").to_json())
    status = board.status()
    assert BuildProgress.from_json(status["int8"]) == BuildProgress(
        "int8", BuildState.BUILDING, "calibrate", 40, 12
    )
    assert status["lowrank"]["state"] == "failed" and status["lowrank"]["reason"] == "rank 0"
    board.forget("lowrank")
    assert set(board.status()) == {"int8"}


@pytest.mark.parametrize(
    ("field", "value"), [("state", "cooking"), ("percent", "40"), ("eta_s", float("nan")), ("percent", True)]
)
def test_a_report_with_a_bad_field_is_refused_naming_it(field, value):
    """A state that is no BuildState, or a figure that is not a finite number, raises naming the field."""
    progress = {**BuildProgress("int8", BuildState.BUILDING).to_json(), field: value}
    with pytest.raises(ValueError, match=field):
        Board().report(progress)


def test_commands_are_numbered_and_reach_only_their_role():
    """post() numbers commands 1, 2, ...; poll() gives a role the ones after ``after``, not another role's."""
    board = Board()
    assert board.post("reprofile") == 1
    assert board.post("rebuild", {"variant": "int8", "force": False}, to="coordinator") == 2
    assert board.post("reload-keys") == 3
    replicas = board.poll("r1", after=0)
    assert [(c["seq"], c["kind"]) for c in replicas["commands"]] == [(1, "reprofile"), (3, "reload-keys")]
    assert [c["seq"] for c in board.poll("r1", after=1)["commands"]] == [3]
    coordinator = board.poll("driver", after=0, role="coordinator")
    assert coordinator["commands"] == [
        {"seq": 2, "kind": "rebuild", "args": {"variant": "int8", "force": False}}
    ]


def test_a_new_member_polling_from_minus_one_replays_nothing():
    """poll(after=-1) returns no old command and the current seq, where the member's next poll starts."""
    board = Board()
    board.post("reprofile")
    board.post("reload-keys")
    polled = board.poll("late", after=-1)
    assert polled["commands"] == [] and polled["seq"] == 2 == board.seq()


def test_answers_are_kept_per_command_and_member():
    """answer() files a member's result under the command's seq; answers() gives them by member."""
    board = Board()
    seq = board.post("reprofile")
    board.answer("r1", seq, {"ok": True})
    board.answer("r2", seq, {"ok": False, "status": 429, "error": "too soon"})
    assert board.answers(seq) == {"r1": {"ok": True}, "r2": {"ok": False, "status": 429, "error": "too soon"}}
    assert board.answers(seq + 1) == {}


def test_members_are_those_that_polled_recently_per_role():
    """members() lists who polled within within_s by the injected clock, per role."""
    clock = Clock()
    board = Board(clock)
    board.poll("r1", -1)
    clock.now += 8
    board.poll("r2", -1)
    board.poll("driver", -1, role="coordinator")
    assert board.members() == ["r1", "r2"]
    clock.now += 5
    assert board.members() == ["r2"] and board.members(within_s=20) == ["r1", "r2"]
    assert board.members("coordinator") == ["driver"]


def _link(board: Board, member: str, **options) -> BoardLink:
    return BoardLink(member, find=lambda: LocalBoardHandle(board), poll_s=0.0, **options)


def test_a_replica_applies_the_status_and_runs_each_command_once_not_its_own():
    """BoardLink.turn applies the status, runs a command posted after it joined once (none
    from before it joined, none it posted itself) and answers it on the board."""
    board = Board()
    board.report(BuildProgress("int8", BuildState.BUILDING, percent=40.0).to_json())
    board.post("reprofile")  # before r1 joined: not replayed
    r1, r2 = _link(board, "r1"), _link(board, "r2")
    applied, ran = [], []

    async def run(kind, args):
        ran.append(kind)
        return {"ok": True, "kind": kind}

    async def scenario():
        await r1.turn(applied.append, run)
        await r2.turn(applied.append, run)
        own = await r2.post("reload-keys")
        for _ in range(2):
            await r1.turn(applied.append, run)
            await r2.turn(applied.append, run)
        return own

    own = asyncio.run(scenario())
    assert ran == ["reload-keys"]  # r1 ran r2's command once; r2 ran neither its own nor the old one
    assert board.answers(own) == {"r1": {"ok": True, "kind": "reload-keys"}}
    assert applied[0] == {"int8": BuildProgress("int8", BuildState.BUILDING, percent=40.0)}


def test_gather_lists_every_other_member_and_who_did_not_answer():
    """gather() waits for every other member seen lately; one that never answers is listed as such."""
    board, clock = Board(), Clock()
    link = _link(board, "r1", answer_timeout_s=2.0, clock=lambda: clock.tick(0.5))
    board.poll("r2", -1)
    board.poll("r3", -1)

    async def scenario():
        seq = await link.post("reprofile")
        board.answer("r2", seq, {"ok": True})
        return await link.gather(seq)  # r3 never answers; each look at the clock is half a second later

    assert asyncio.run(scenario()) == {"r2": {"ok": True}, "r3": {"ok": False, "error": "no answer in 2 s"}}


def test_without_a_board_the_link_does_nothing():
    """With no board actor, turn() applies nothing and post() returns None (today's behaviour)."""
    link, applied = BoardLink("r1", find=lambda: None), []

    async def scenario():
        await link.turn(applied.append, None)
        return await link.post("reprofile")

    assert asyncio.run(scenario()) is None and applied == []
