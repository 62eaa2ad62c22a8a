"""The bounded answer store: kept by request id, evicted oldest first by count and by age
(an injected clock, no sleeps), and each refusal named."""

from __future__ import annotations

from tiergate.serving.quality import Answer, AnswerStore, Found


class Clock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def _answer(store: AnswerStore, variant: str = "int8", top1: tuple[int, ...] = (3,)) -> Answer:
    return Answer(store.now(), variant, "fast", False, True, top1)


def test_a_kept_answer_is_found_and_then_a_duplicate_once_labelled():
    """find() returns the held answer; after mark_labelled the same id is a duplicate."""
    store = AnswerStore(max_answers=10, retention_s=60, clock=Clock())
    store.add("a", _answer(store, top1=(1, 2)))
    found, answer = store.find("a")
    assert found is Found.HELD and answer.top1 == (1, 2) and answer.variant == "int8"
    store.mark_labelled("a")
    assert store.find("a")[0] is Found.DUPLICATE


def test_an_id_never_served_is_unknown():
    """An id the store never held is unknown, not expired."""
    store = AnswerStore(max_answers=10, retention_s=60, clock=Clock())
    store.add("a", _answer(store))
    assert store.find("b") == (Found.UNKNOWN, None)


def test_past_max_answers_the_oldest_are_evicted_and_named_expired():
    """With max_answers 3, adding a 4th and 5th evicts the two oldest, which then read as expired."""
    store = AnswerStore(max_answers=3, retention_s=60, clock=Clock())
    for request_id in "abcde":
        store.add(request_id, _answer(store))
    assert len(store) == 3
    assert [store.find(request_id)[0] for request_id in "abcde"] == [
        Found.EXPIRED, Found.EXPIRED, Found.HELD, Found.HELD, Found.HELD,
    ]  # fmt: skip


def test_an_answer_older_than_retention_is_expired_even_when_no_add_evicted_it():
    """An answer held past retention_s reads as expired at find(), and is then dropped."""
    clock = Clock()
    store = AnswerStore(max_answers=10, retention_s=60, clock=clock)
    store.add("a", _answer(store))
    clock.now_s += 60.5
    assert store.find("a") == (Found.EXPIRED, None)
    assert len(store) == 0 and store.find("a")[0] is Found.EXPIRED


def test_adds_evict_aged_answers_a_few_at_a_time():
    """Each add evicts at most two answers past retention, oldest first: a backlog drains
    over later adds instead of on one request."""
    clock = Clock()
    store = AnswerStore(max_answers=100, retention_s=60, clock=clock)
    for request_id in "abcde":
        store.add(request_id, _answer(store))
    clock.now_s += 61
    store.add("f", _answer(store))
    assert len(store) == 4  # a and b went; c, d, e are old but still held
    store.add("g", _answer(store))
    assert len(store) == 3 and store.find("e")[0] is Found.EXPIRED


def test_a_reused_request_id_holds_the_newest_answer():
    """Adding an id twice keeps the second answer, as the newest (not evicted before older ones)."""
    store = AnswerStore(max_answers=2, retention_s=60, clock=Clock())
    store.add("a", _answer(store, "fp32"))
    store.add("b", _answer(store))
    store.add("a", _answer(store, "distilled"))
    store.add("c", _answer(store))
    assert store.find("a")[1].variant == "distilled" and store.find("b")[0] is Found.EXPIRED


def test_the_expired_ids_remembered_are_bounded_too():
    """The ids kept to say 'expired' are at most max_answers: the oldest become unknown."""
    store = AnswerStore(max_answers=2, retention_s=60, clock=Clock())
    for request_id in "abcdef":
        store.add(request_id, _answer(store))
    assert [store.find(request_id)[0] for request_id in "abcd"] == [
        Found.UNKNOWN, Found.UNKNOWN, Found.EXPIRED, Found.EXPIRED,
    ]  # fmt: skip
