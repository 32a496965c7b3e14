"""The open model's hand-off: every arrival reaches exactly one user, the warmest idle one."""

import gevent
import pytest

from agentscale.engine.handoff import Handoff


def test_the_user_idle_last_takes_the_next_arrival_and_none_is_lost_or_taken_twice():
    handoff: Handoff[int | None] = Handoff()
    taken: list[tuple[str, int]] = []

    def user(name: str) -> None:
        while (item := handoff.get()) is not None:
            taken.append((name, item))
            gevent.sleep(0.001 * (item % 3))  # some answers take longer

    users = [gevent.spawn(user, f"u{k}") for k in range(5)]
    gevent.sleep(0)  # all five wait, u4 the last to begin waiting
    handoff.put(0)
    gevent.sleep(0)
    assert taken == [("u4", 0)]
    for item in range(1, 200):
        handoff.put(item)
        if item % 7 == 0:
            gevent.sleep(0.001)
    for _ in users:
        handoff.put(None)
    gevent.joinall(users, timeout=5, raise_error=True)
    assert all(u.dead for u in users)
    assert sorted(item for _, item in taken) == list(range(200))
    assert handoff.qsize() == 0 and handoff.idle == []


def test_arrivals_queue_while_every_user_is_busy_and_go_out_in_order():
    handoff: Handoff[int] = Handoff()
    for item in range(3):
        handoff.put(item)
    assert handoff.qsize() == 3
    assert [handoff.get() for _ in range(3)] == [0, 1, 2]


def test_a_user_killed_after_it_was_chosen_passes_its_arrival_on():
    handoff: Handoff[int] = Handoff()
    got: list[int] = []
    keeper = gevent.spawn(lambda: got.append(handoff.get()))
    doomed = gevent.spawn(handoff.get)
    gevent.sleep(0)  # both wait; doomed waited last, so it is chosen
    doomed.kill(block=False)  # its kill is on its way when the arrival comes
    handoff.put(7)
    keeper.join(timeout=2)
    assert got == [7] and doomed.dead and isinstance(doomed.value, gevent.GreenletExit)
    assert handoff.idle == []


def test_a_user_killed_while_idle_leaves_the_idle_list_and_the_rest_still_take_arrivals():
    handoff: Handoff[int] = Handoff()
    idle = [gevent.spawn(handoff.get) for _ in range(3)]
    gevent.sleep(0)
    idle[1].kill()
    assert len(handoff.idle) == 2
    handoff.put(1)
    handoff.put(2)
    gevent.joinall([idle[0], idle[2]], timeout=2)
    assert sorted([idle[0].value, idle[2].value]) == [1, 2]
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.05):
        handoff.get()  # nothing left: a user waits
    assert handoff.idle == []
