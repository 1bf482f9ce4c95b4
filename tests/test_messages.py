"""Share-nothing messages: what is copied, what travels by reference."""

import dataclasses
import enum
import pickle
import re
import sys
import threading
from dataclasses import InitVar, field

import pytest

import otpvm
from otpvm import ANY, Shared, receive, self, send


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


def test_a_shared_box_carries_its_object_by_reference():
    """Shared(obj) is the explicit way to send what cannot be copied (a lock)
    or must not be (a list both sides append to): the receiver gets the very
    object; everything else in the message is still copied; the box itself
    cannot be changed or pickled."""
    lock, items = threading.Lock(), ["sender"]

    async def child(parent, box, plain):
        with box.value[0]:
            box.value[1].append("receiver")
        plain.append("lost")
        send(parent, ("done", box, Shared(plain)))

    async def main():
        plain = ["copied"]
        otpvm.spawn(child, self(), Shared((lock, items)), plain)
        _, box, theirs = await receive(("done", ANY, ANY), timeout=5)
        return box.value[0] is lock, box.value[1] is items, plain, theirs.value

    assert otpvm.run(main) == (True, True, ["copied"], ["copied", "lost"])
    assert items == ["sender", "receiver"]
    box = Shared(items)
    assert box == Shared(items) and box != Shared(list(items)) and repr(box) == f"Shared({items!r})"
    with pytest.raises(AttributeError, match="a Shared box cannot be changed"):
        box.value = []
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(box)


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


def test_dag_with_many_shared_references_copies_in_linear_time():
    level = {"leaf": [0]}
    for _ in range(60):                      # 2**60 paths, 60 distinct dicts
        level = {"left": level, "right": level}
    got = roundtrip(level)
    assert got["left"] is got["right"]


def assert_copied_alike(original, copy):
    """copy equals original and shares exactly what original shares: two
    places hold one object in the copy iff they hold one in the original;
    no list, dict, set or plain object of the copy is the original's."""
    copy_of, original_of, keep = {}, {}, []
    todo = [(original, copy)]
    while todo:
        a, b = todo.pop()
        if isinstance(a, (int, float, str, bytes, type(None))):
            assert a == b
            continue
        assert type(a) is type(b)
        if id(a) in copy_of:
            assert copy_of[id(a)] is b, f"a shared {type(a).__name__} was copied twice"
            continue
        assert id(b) not in original_of, f"two {type(a).__name__}s became one"
        copy_of[id(a)], original_of[id(b)] = b, a
        keep.append((a, b))
        if isinstance(a, (list, dict, set, Point)):
            assert a is not b
        if isinstance(a, (list, tuple)):
            todo.extend(zip(a, b, strict=True))
        elif isinstance(a, dict):
            assert a.keys() == b.keys()
            todo.extend((a[k], b[k]) for k in a)
        elif dataclasses.is_dataclass(a):
            todo.extend((getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))


@pytest.mark.parametrize("make", [
    lambda s: [s, Point(0, s)],                        # copied first, then pickled
    lambda s: [Point(0, s), s],                        # pickled first, then copied
    lambda s: [Point(0, s), Point(1, s)],              # in two pickled objects
    lambda s: {"t": (s, Point(0, [s])), "u": [[s]]},   # deeper on both sides
], ids=["copied-pickled", "pickled-copied", "pickled-pickled", "nested"])
def test_sharing_is_kept_between_pickled_and_copied_parts(make):
    shared = [1, {"x": [2]}]
    msg = make(shared)
    msg = {"shared": msg, "alike": [list(shared), Point(2, list(shared))]}
    assert_copied_alike(msg, roundtrip(msg))


def test_an_object_shared_by_pickled_objects_and_a_cycle_through_them_stay_so():
    point = Point(0, [])
    point.y.append(point)                              # a cycle through a pickled object
    msg = [point, Point(1, point), point.y, (point, [point.y])]
    got = roundtrip(msg)
    assert_copied_alike(msg, got)
    assert got[1].y is got[0] and got[2] is got[0].y and got[0].y[0] is got[0]


POST_INITS = []


@dataclasses.dataclass(frozen=True)
class Counted:
    """Its __post_init__ is not idempotent and counts its calls."""
    items: list
    seed: InitVar[int]                                 # an InitVar without a default
    label: list = field(init=False)

    def __post_init__(self, seed):
        POST_INITS.append(seed)
        object.__setattr__(self, "items", self.items + ["post_init"])
        object.__setattr__(self, "label", [seed])


@dataclasses.dataclass(frozen=True)
class Stamped:
    items: list

    def __post_init__(self):
        POST_INITS.append("stamped")
        object.__setattr__(self, "items", self.items + ["post_init"])


@dataclasses.dataclass(frozen=True, slots=True)
class CountedSlots:
    items: list
    cache: dict = field(init=False, default_factory=dict)

    def __post_init__(self):
        POST_INITS.append("slots")
        self.cache["made"] = True


@dataclasses.dataclass(frozen=True)
class CountedChild(Counted):
    extra: list = field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class FrozenPoint:
    x: int
    name: str = "origin"


@pytest.mark.parametrize("make", [
    lambda: Stamped([["a"]]),
    lambda: Counted(["a"], 7),
    lambda: CountedSlots(["b"]),
    lambda: CountedChild(["c"], 8, [{"d": 1}]),
], ids=["post_init", "initvar", "slots", "inherited"])
def test_a_frozen_dataclass_is_copied_without_calling_its_init(make):
    original = make()
    calls = len(POST_INITS)
    got = roundtrip(original)
    assert len(POST_INITS) == calls                    # neither __init__ nor __post_init__
    assert got == original and got is not original
    assert_copied_alike(original, got)
    assert not hasattr(got, "seed")                    # an InitVar is not stored


def test_a_frozen_dataclass_keeps_an_init_false_field_set_after_init():
    original = CountedSlots(["b"])
    object.__setattr__(original, "cache", {"set": ["later"]})
    got = roundtrip(original)
    assert got.cache == {"set": ["later"]} and got.cache is not original.cache
    immutable = FrozenPoint(1)
    assert roundtrip((immutable, [immutable]))[1][0] is immutable    # still by reference


@dataclasses.dataclass(frozen=True)
class Box:
    inner: object


def deep_message(depth, bottom):
    """depth levels of lists, dicts, tuples and frozen dataclasses around bottom."""
    msg = bottom
    for i in range(depth):
        msg = [msg] if i % 4 == 0 else {"k": msg} if i % 4 == 1 else (msg, i) if i % 4 == 2 \
            else Box(msg)
    return msg


def test_a_message_nested_at_any_depth_is_copied():
    shared = ["shared"]
    msg = [shared, deep_message(100_000, Point(0, shared))]
    got = roundtrip(msg)
    a, b = msg[1], got[1]
    for i in reversed(range(100_000)):                 # walked by hand: == would recurse
        assert type(a) is type(b) and a is not b
        a, b = (a[0], b[0]) if i % 4 in (0, 2) else (a["k"], b["k"]) if i % 4 == 1 \
            else (a.inner, b.inner)
    assert b == a and b is not a and b.y is got[0] and got[0] is not shared


def test_an_object_graph_too_deep_for_pickle_is_a_clear_error_in_the_sender():
    chain = None
    for i in range(20_000):                            # only pickle copies Points
        chain = Point(i, chain)

    async def main():
        with pytest.raises(TypeError, match=re.escape(
                "cannot send a Point: it is nested too deeply for pickle, which copies it "
                f"(Python's recursion limit, sys.getrecursionlimit(), is "
                f"{sys.getrecursionlimit()}; lists, dicts, sets, tuples and frozen "
                "dataclasses are copied at any depth)")):
            send(self(), ["wrapped", chain])
        with pytest.raises(TimeoutError):
            await receive(timeout=0)                   # nothing was sent
        return "still running"

    assert otpvm.run(main) == "still running"
