"""Share-nothing messages: what is copied, what travels by reference."""

import dataclasses
import enum
import threading

import pytest

import otpvm
from otpvm import receive, self, send


class Color(enum.Enum):
    RED = 1


@dataclasses.dataclass
class Point:
    x: int
    y: list


def roundtrip(msg):
    """Sends msg to a child that sends back what it received (by identity)."""
    box = {}

    async def child(parent):
        got = await receive()
        box["received"] = got
        send(parent, "done")

    async def main():
        pid = otpvm.spawn(child, self())
        send(pid, msg)
        await receive("done", timeout=5)

    otpvm.run(main)
    return box["received"]


@pytest.mark.parametrize("value", [None, True, 7, 2**100, 1.5, 1j, "text", b"x" * 1_000_000,
                                   (1, "a", (2, b"b")), frozenset({1, 2}), Color.RED,
                                   range(10)])
def test_immutable_values_travel_by_reference(value):
    assert roundtrip(value) is value


def test_large_bytes_are_never_copied():
    big = bytes(50_000_000)
    assert roundtrip(big) is big


@pytest.mark.parametrize("value", [[1, [2, 3]], {"a": [1]}, {1, 2}, bytearray(b"abc"),
                                   (1, [2]), frozenset({(1, 2)})])
def test_containers_are_copied(value):
    got = roundtrip(value)
    assert got == value
    if not isinstance(value, frozenset):
        assert got is not value


def test_receiver_mutating_a_list_does_not_change_the_senders():
    async def mutator(parent):
        msg = await receive()
        msg["items"].append("receiver was here")
        msg["items"][0][0] = "changed"
        send(parent, msg)

    async def main():
        original = {"items": [["nested"], 2]}
        pid = otpvm.spawn(mutator, self())
        send(pid, original)
        changed = await receive(timeout=5)
        return original, changed

    original, changed = otpvm.run(main)
    assert original == {"items": [["nested"], 2]}
    assert changed == {"items": [["changed"], 2, "receiver was here"]}


def test_tuple_holding_a_list_is_copied_but_keeps_immutable_parts():
    inner = (1, 2, 3)
    msg = (inner, [4])
    got = roundtrip(msg)
    assert got == msg and got is not msg
    assert got[0] is inner and got[1] is not msg[1]


def test_other_objects_are_pickled():
    point = Point(1, [2])
    got = roundtrip(point)
    assert got == point and got is not point and got.y is not point.y


def test_pids_and_refs_inside_pickled_objects_still_work():
    async def child(parent):
        holder = await receive()
        send(holder.y[0], "reached")

    async def main():
        pid = otpvm.spawn(child, self())
        send(pid, Point(0, [self()]))
        return await receive(timeout=5)

    assert otpvm.run(main) == "reached"


def test_unpicklable_message_is_a_clear_error_and_nothing_is_sent():
    async def main():
        me = self()
        with pytest.raises(TypeError, match="cannot send a lock"):
            send(me, threading.Lock())
        with pytest.raises(TimeoutError):
            await receive(timeout=0)
        return "ok"

    assert otpvm.run(main) == "ok"


def test_spawn_arguments_are_copied_too():
    async def child(parent, items):
        items.append("child")
        send(parent, "done")

    async def main():
        items = ["parent"]
        otpvm.spawn(child, self(), items)
        await receive("done", timeout=5)
        return items

    assert otpvm.run(main) == ["parent"]


def test_order_between_two_processes_is_preserved():
    async def producer(to, n):
        for i in range(n):
            send(to, i)

    async def main(n):
        otpvm.spawn(producer, self(), n)
        return [await receive(timeout=5) for _ in range(n)]

    assert otpvm.run(main, 20_000) == list(range(20_000))


def test_shared_parts_stay_shared_and_cycles_are_safe():
    shared = [1, 2]
    msg = {"a": shared, "b": shared}
    got = roundtrip(msg)
    assert got == msg and got["a"] is got["b"] and got["a"] is not shared
    loop = [1]
    loop.append(loop)
    got = roundtrip(loop)
    assert got[1] is got and got is not loop


@dataclasses.dataclass(frozen=True)
class Node:
    children: list


def test_a_cycle_through_an_immutable_object_or_a_very_deep_message_is_still_copied():
    node = Node([])
    node.children.append(node)               # a cycle through a frozen dataclass
    got = roundtrip(node)
    assert got.children[0] is got and got is not node
    deep = []
    for _ in range(200):                     # deeper than the copier recurses
        deep = [deep]
    got = roundtrip(deep)
    assert got == deep and got is not deep


def test_a_message_too_deep_for_pickle_is_a_clear_error_not_a_crash():
    deep = []
    for _ in range(100_000):
        deep = [deep]

    async def main():
        with pytest.raises(TypeError, match="cannot send"):
            send(self(), deep)
        return "still running"

    assert otpvm.run(main) == "still running"


def test_dag_with_many_shared_references_copies_in_linear_time():
    level = {"leaf": [0]}
    for _ in range(60):                      # 2**60 paths, 60 distinct dicts
        level = {"left": level, "right": level}
    got = roundtrip(level)
    assert got["left"] is got["right"]
