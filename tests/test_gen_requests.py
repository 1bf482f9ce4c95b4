"""Asynchronous requests (OTP 25's send_request family) and multi_call/abcast.

Each expectation follows OTP's gen.erl (send_request/wait_response/
receive_response/check_response and the reqids_* collections) and was
checked on erl (OTP 25) where OTP leaves it implicit.
"""

import pickle
import time

import pytest

import otpvm
from otpvm import ANY, gen, gen_server, gen_statem, registry, send
from otpvm.gen import (
    NO_REPLY,
    NO_REQUEST,
    CallError,
    RequestId,
    RequestIdCollection,
    Response,
    check_response,
    receive_response,
    reqids_add,
    reqids_new,
    reqids_size,
    reqids_to_list,
    send_request,
    wait_response,
)
from otpvm.gen_server import GenServer, NoReply, Ok, Reply, Stop

SCHEDULERS = pytest.mark.parametrize("schedulers", [1, 4])


class Echo(GenServer):
    """Answers ('echo', x) with (tag, x); holds ('hold', x) until a
    ('release', watcher) cast, then tells the watcher it replied (and
    ('again', watcher) replies to them all once more)."""

    def init(self, tag):
        self.released = []
        return Ok((tag, []))

    def handle_call(self, request, from_, state):
        tag, held = state
        match request:
            case ("echo", x):
                return Reply((tag, x), state)
            case ("hold", x):
                held.append((from_, x))
                return NoReply(state)
            case "crash":
                raise ZeroDivisionError("crashed on request")
            case ("stop", reason):
                return Stop(reason, state)
        return Reply(("unknown", request), state)

    def handle_cast(self, msg, state):
        tag, held = state
        match msg:
            case ("release", watcher):
                for from_, x in held:
                    gen_server.reply(from_, (tag, x))
                self.released += held
                send(watcher, ("released", tag, len(held)))
                return NoReply((tag, []))
            case ("again", watcher):
                for from_, x in self.released:
                    gen_server.reply(from_, ("again", x))
                send(watcher, ("released", tag, len(self.released)))
            case ("note", watcher, x):
                send(watcher, ("noted", tag, x))
        return NoReply(state)


class Registered(Echo):
    """An Echo that registers itself in a registry under a key."""

    async def init(self, args):
        reg, key = args
        await registry.register(reg, key)
        return Ok((key, []))


class Door(gen_statem.GenStatem):
    """A gen_statem answering calls in its one state."""

    def init(self, _):
        return "open", 0

    def open(self, event_type, content, data):
        if isinstance(event_type, tuple) and event_type[0] == "call":
            return gen_statem.KeepState(data + 1, [gen_statem.Reply(event_type[1],
                                                                    ("door", content))])
        return gen_statem.KeepStateAndData


def run(main, schedulers=1):
    return otpvm.run(main, schedulers=schedulers)


async def mailbox():
    """What is left in the caller's mailbox (taken out)."""
    left = []
    while True:
        try:
            left.append(await otpvm.receive(timeout=0))
        except TimeoutError:
            return left


async def release(pid, expect):
    """Makes a holding Echo reply to what it holds, and waits until it has."""
    gen_server.cast(pid, ("release", otpvm.self()))
    _, _, count = await otpvm.receive(("released", ANY, ANY), timeout=5)
    assert count == expect


# -- single requests ------------------------------------------------------------


@SCHEDULERS
def test_replies_are_matched_to_their_requests_in_any_order(schedulers):
    async def main():
        a = await gen_server.start(Echo, "a")
        b = await gen_server.start(Echo, "b")
        ra = send_request(a, ("echo", 1))
        rb = send_request(b, ("echo", 2))
        ra2 = send_request(a, ("echo", 3))
        assert isinstance(ra, RequestId) and len({ra, rb, ra2}) == 3
        # Waited for in another order than sent: each gets its own reply.
        got = [await wait_response(ra2, 5), await wait_response(rb, 5),
               await receive_response(ra, 5)]
        return got, await mailbox()

    assert run(main, schedulers) == ([("a", 3), ("b", 2), ("a", 1)], [])


def test_a_gen_statem_and_every_kind_of_name_answer_requests():
    async def main():
        door = await gen_statem.start(Door, None, name="door")
        reg = await registry.start()
        await gen_server.start(Registered, (reg, "e"))
        reqs = [send_request(door, "knock"), send_request("door", "ring"),
                send_request(registry.via(reg, "e"), ("echo", "via"))]
        return [await receive_response(r, 5) for r in reqs], await mailbox()

    assert run(main) == ([("door", "knock"), ("door", "ring"), ("e", "via")], [])


def test_the_request_functions_are_exported_by_gen_server_and_gen_statem():
    names = ["send_request", "wait_response", "receive_response", "check_response",
             "reqids_new", "reqids_add", "reqids_size", "reqids_to_list", "RequestId",
             "RequestIdCollection", "Response", "NO_REPLY", "NO_REQUEST"]
    for module in (gen_server, gen_statem):
        for name in names:
            assert name in module.__all__ and getattr(module, name) is getattr(gen, name)
    assert gen_server.multi_call is gen.multi_call and gen_server.abcast is gen.abcast
    assert "multi_call" in gen_server.__all__ and "abcast" in gen_server.__all__


def test_wait_response_timeout_keeps_the_request():
    async def main():
        pid = await gen_server.start(Echo, "s")
        req = send_request(pid, ("hold", 7))
        with pytest.raises(TimeoutError):
            await wait_response(req, 0.05)
        await release(pid, 1)
        # erl: ReqId = gen_server:send_request(P, hold), timeout =
        # gen_server:wait_response(ReqId, 10), ..., {reply, _} =
        # gen_server:wait_response(ReqId, 1000).
        return await wait_response(req, 5), await mailbox()

    assert run(main) == (("s", 7), [])


@SCHEDULERS
def test_receive_response_timeout_abandons_the_request(schedulers):
    async def main():
        pid = await gen_server.start(Echo, "s")
        req = send_request(pid, ("hold", 7))
        with pytest.raises(TimeoutError):
            await receive_response(req, 0.05)
        await release(pid, 1)       # it replied before telling us so
        # The late reply was dropped on arrival: never in the mailbox.
        left = await mailbox()
        with pytest.raises(TimeoutError):
            await wait_response(req, 0.05)
        return left

    assert run(main, schedulers) == []


def test_a_second_reply_to_a_request_already_answered_is_dropped():
    async def main():
        pid = await gen_server.start(Echo, "s")
        single = send_request(pid, ("hold", 1))
        coll = send_request(pid, ("hold", 2), "two", reqids_new())
        await release(pid, 2)
        first = await wait_response(single, 5)
        response, _, _ = await receive_response(coll, 5)
        gen_server.cast(pid, ("again", otpvm.self()))
        await otpvm.receive(("released", ANY, 2), timeout=5)
        # Taking the reply gave the request up: the alias no longer takes
        # messages (OTP: the monitor's {alias, demonitor} option).
        return first, response.result(), await mailbox()

    assert run(main) == (("s", 1), ("s", 2), [])


class Handing(GenServer):
    """Hands each call's From to a helper that answers it once the server
    has died (as a server handing work to another process may)."""

    def init(self, _):
        return Ok(None)

    def handle_call(self, request, from_, state):
        server = otpvm.self()
        caller = from_.pid

        async def helper():
            ref = otpvm.monitor(server)
            await otpvm.receive(otpvm.Down(ref, ANY, ANY))
            gen_server.reply(from_, "answer from the helper")
            send(caller, "helper replied")

        otpvm.spawn(helper)
        return Stop("normal", state)


@pytest.mark.parametrize("form", ["wait", "receive", "collection"])
def test_a_reply_sent_after_the_server_died_never_stays_in_the_mailbox(form):
    async def main():
        pid = await gen_server.start(Handing, None)
        if form == "collection":
            req = send_request(pid, "work", "label", reqids_new())
        else:
            req = send_request(pid, "work")
        await otpvm.receive("helper replied", timeout=5)
        # The Down and the helper's reply come from two processes: either may
        # be first (as in OTP).  The Down first, the alias dies with it.
        try:
            if form == "collection":
                response, _, _ = await receive_response(req, 5)
                got = response.result()
            elif form == "wait":
                got = await wait_response(req, 5)
            else:
                got = await receive_response(req, 5)
        except CallError as exc:
            got = exc.reason
        return got, await mailbox()

    got, left = run(main)
    assert got in ("normal", "answer from the helper") and left == []


def test_check_response_on_received_messages():
    async def main():
        pid = await gen_server.start(Echo, "s")
        req = send_request(pid, ("echo", 1))
        send(otpvm.self(), "unrelated")
        results = []
        for _ in range(2):
            msg = await otpvm.receive(timeout=5)
            results.append(check_response(msg, req))
        dead = send_request(pid, "crash")
        down = await otpvm.receive(otpvm.Down, timeout=5)
        with pytest.raises(CallError) as failed:
            check_response(down, dead)
        assert check_response(down, req) is NO_REPLY
        return results, failed.value.reason, await mailbox()

    results, reason, left = run(main)
    # The reply and the message to itself may come in either order.
    assert sorted(results, key=repr) == [("s", 1), NO_REPLY]
    assert isinstance(reason, ZeroDivisionError) and left == []


def test_a_missing_server_fails_when_waited_for_as_a_call_would():
    async def main():
        gone = otpvm.spawn(lambda: None)
        ref = otpvm.monitor(gone)
        await otpvm.receive(otpvm.Down(ref, ANY, ANY), timeout=5)
        reasons = []
        # As OTP: send_request never fails; the error comes with the wait.
        for dest in ("nobody", gone):
            req = send_request(dest, ("echo", 1))
            try:
                await wait_response(req, 5)
            except CallError as exc:
                reasons.append((exc.reason, exc.dest == dest, exc.request))
        return reasons, await mailbox()

    assert run(main) == ([("noproc", True, ("echo", 1)), ("noproc", True, ("echo", 1))], [])


def test_a_missing_name_is_a_message_that_check_response_recognises():
    async def main():
        req = send_request("nobody", "hello")
        msg = await otpvm.receive(timeout=5)
        with pytest.raises(CallError) as failed:
            check_response(msg, req)
        return failed.value.reason, failed.value.dest

    assert run(main) == ("noproc", "nobody")


@SCHEDULERS
def test_server_death_gives_its_exit_reason(schedulers):
    async def main():
        out = []
        for request, trigger in ((("stop", "normal"), None), (("stop", "shutdown"), None),
                                 ("crash", None), (("hold", 1), "kill")):
            pid = await gen_server.start(Echo, "s")
            req = send_request(pid, request)
            if trigger:
                otpvm.exit(pid, trigger)
            with pytest.raises(CallError) as failed:
                await receive_response(req, 5)
            out.append(failed.value.reason)
        return out, await mailbox()

    out, left = run(main, schedulers)
    assert out[:2] == ["normal", "shutdown"] and out[3] == "killed"
    assert isinstance(out[2], ZeroDivisionError) and left == []


def test_absolute_deadlines():
    async def main():
        pid = await gen_server.start(Echo, "s")
        req = send_request(pid, ("hold", 1))
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await wait_response(req, ("abs", start + 0.05))
        waited = time.monotonic() - start
        with pytest.raises(TimeoutError):      # a deadline already past: a poll
            await wait_response(req, ("abs", start - 10))
        await release(pid, 1)
        return waited >= 0.04, await receive_response(req, ("abs", time.monotonic() + 5))

    assert run(main) == (True, ("s", 1))


def test_bad_arguments_are_named():
    async def main():
        pid = await gen_server.start(Echo, "s")
        req = send_request(pid, ("echo", 1))
        errors = []
        for bad in (lambda: send_request(pid, 1, "label"),
                    lambda: send_request(pid, 1, collection=reqids_new()),
                    lambda: send_request(42, 1),
                    lambda: wait_response(req, -1),
                    lambda: wait_response(req, "soon"),
                    lambda: wait_response(req, 1, True),
                    lambda: wait_response("req", 1),
                    lambda: check_response("msg", "req"),
                    lambda: reqids_add("ref", 1, reqids_new()),
                    lambda: reqids_size({}),
                    lambda: reqids_add(req, 1, reqids_add(req, 0, reqids_new()))):
            try:
                result = bad()
                if hasattr(result, "__await__"):
                    await result
            except (TypeError, ValueError) as exc:
                errors.append(type(exc).__name__)
        await wait_response(req, 5)
        return errors

    assert run(main) == ["TypeError", "TypeError", "TypeError", "ValueError", "TypeError",
                         "TypeError", "TypeError", "TypeError", "TypeError", "TypeError",
                         "ValueError"]


def test_sentinels_keep_their_identity():
    assert pickle.loads(pickle.dumps(NO_REPLY)) is NO_REPLY
    assert pickle.loads(pickle.dumps(NO_REQUEST)) is NO_REQUEST
    assert repr(NO_REPLY) == "NO_REPLY" and repr(NO_REQUEST) == "NO_REQUEST"


# -- collections --------------------------------------------------------------------


def test_collections_are_values():
    async def main():
        pid = await gen_server.start(Echo, "s")
        empty = reqids_new()
        r1, r2 = send_request(pid, ("echo", 1)), send_request(pid, ("echo", 2))
        one = reqids_add(r1, "one", empty)
        two = reqids_add(r2, "two", one)
        shapes = (reqids_size(empty), reqids_size(one), reqids_size(two), len(two),
                  reqids_to_list(two) == [(r1, "one"), (r2, "two")], r1 in two, r2 in one,
                  list(two) == reqids_to_list(two))
        with pytest.raises(ValueError):
            reqids_add(r1, "again", two)
        await wait_response(r1, 5)
        await wait_response(r2, 5)
        return shapes

    assert run(main) == (0, 1, 2, 2, True, True, False, True)


@SCHEDULERS
def test_a_hundred_requests_to_many_servers_each_answered_once(schedulers):
    async def main():
        servers = [await gen_server.start(Echo, n) for n in range(10)]
        statem = await gen_statem.start(Door, None)
        coll = reqids_new()
        expected = {}
        for i in range(100):
            if i % 10 == 9:
                coll = send_request(statem, i, ("label", i), coll)
                expected[("label", i)] = ("door", i)
            else:
                n = i % 10
                coll = send_request(servers[n], ("echo", i), ("label", i), coll)
                expected[("label", i)] = (n, i)
        assert reqids_size(coll) == 100
        got = {}
        while coll:
            response, label, coll = await receive_response(coll, 5)
            assert label not in got
            got[label] = response.result()
        return got == expected, await receive_response(coll, 5), await mailbox()

    assert run(main, schedulers) == (True, NO_REQUEST, [])


def test_wait_response_on_a_collection_without_delete_keeps_the_request():
    async def main():
        pid = await gen_server.start(Echo, "s")
        coll = send_request(pid, ("echo", 1), "L", reqids_new())
        response, label, same = await wait_response(coll, 5, False)
        # The request stays in the collection, done: nothing more comes for it.
        with pytest.raises(TimeoutError):
            await wait_response(same, 0.05, False)
        return response, label, same is coll, reqids_size(same)

    assert run(main) == (Response(("s", 1)), "L", True, 1)


def test_collection_errors_come_with_their_label():
    async def main():
        pid = await gen_server.start(Echo, "s")
        coll = send_request("nobody", "x", "missing", reqids_new())
        coll = send_request(pid, "crash", "crash", coll)
        out = {}
        while coll:
            response, label, coll = await wait_response(coll, 5)
            assert response.value is None
            with pytest.raises(CallError):
                response.result()
            out[label] = response.error.reason
        return out["missing"], type(out["crash"]), await mailbox()

    assert run(main) == ("noproc", ZeroDivisionError, [])


def test_empty_collections_answer_no_request():
    async def main():
        empty = reqids_new()
        with pytest.raises(ValueError):       # the timeout is still checked, as OTP does
            await wait_response(empty, -1)
        return (await wait_response(empty, 0), await receive_response(empty, None),
                check_response("msg", empty))

    assert run(main) == (NO_REQUEST, NO_REQUEST, NO_REQUEST)


def test_check_response_on_a_collection():
    async def main():
        pid = await gen_server.start(Echo, "s")
        coll = send_request(pid, ("echo", 1), "first", reqids_new())
        coll = send_request(pid, ("echo", 2), "second", coll)
        results = []
        for _ in range(2):
            msg = await otpvm.receive(timeout=5)
            assert check_response("unrelated", coll) is NO_REPLY
            response, label, coll = check_response(msg, coll)
            results.append((response.result(), label))
        return results, reqids_size(coll), check_response("x", coll)

    assert run(main) == ([(("s", 1), "first"), (("s", 2), "second")], 0, NO_REQUEST)


@SCHEDULERS
def test_receive_response_timeout_on_a_collection_abandons_every_request(schedulers):
    async def main():
        a = await gen_server.start(Echo, "a")
        b = await gen_server.start(Echo, "b")
        coll = reqids_new()
        for i in range(5):
            coll = send_request(a if i % 2 else b, ("hold", i), i, coll)
        with pytest.raises(TimeoutError):
            await receive_response(coll, 0.05)
        await release(a, 2)
        await release(b, 3)
        left = await mailbox()
        with pytest.raises(TimeoutError):   # nothing comes for them any more
            await wait_response(coll, 0.05)
        return left

    assert run(main, schedulers) == []


def test_wait_response_timeout_on_a_collection_gives_nothing_up():
    async def main():
        pid = await gen_server.start(Echo, "s")
        coll = send_request(pid, ("hold", 1), "held", reqids_new())
        with pytest.raises(TimeoutError):
            await wait_response(coll, 0.05)
        await release(pid, 1)
        response, label, coll = await wait_response(coll, 5)
        return response.result(), label, reqids_size(coll)

    assert run(main) == (("s", 1), "held", 0)


# -- multi_call and abcast ------------------------------------------------------------


@SCHEDULERS
def test_multi_call_on_the_local_node(schedulers):
    async def main():
        node = otpvm.self().node
        await gen_server.start(Echo, "s", name="echo")
        ok = await gen_server.multi_call("echo", ("echo", 1))
        missing = await gen_server.multi_call("nobody", ("echo", 1), timeout=5)
        # Any other node is unreachable: a bad node, as a node that is down.
        other = await gen_server.multi_call("echo", ("echo", 2), nodes=[node, node + 7])
        return node, ok, missing, other, await mailbox()

    node, ok, missing, other, left = run(main, schedulers)
    assert ok == ([(node, ("s", 1))], [])
    assert missing == ([], [node])
    assert other == ([(node, ("s", 2))], [node + 7]) and left == []


def test_multi_call_timeout_and_death_make_bad_nodes_and_late_replies_are_dropped():
    async def main():
        node = otpvm.self().node
        pid = await gen_server.start(Echo, "s", name="echo")
        late = await gen_server.multi_call("echo", ("hold", 1), timeout=0.05)
        await release(pid, 1)
        crashed = await gen_server.multi_call("echo", "crash")
        return node, late, crashed, await mailbox()

    node, late, crashed, left = run(main)
    assert late == ([], [node]) and crashed == ([], [node]) and left == []


def test_multi_call_bad_arguments():
    async def main():
        pid = await gen_server.start(Echo, "s")
        errors = []
        for args, kwargs in (((pid, 1), {}), (("echo", 1), {"nodes": "node"}),
                             (("echo", 1), {"timeout": -1})):
            try:
                await gen_server.multi_call(*args, **kwargs)
            except (TypeError, ValueError) as exc:
                errors.append(type(exc).__name__)
        try:
            gen_server.abcast(pid, 1)
        except TypeError:
            errors.append("TypeError")
        return errors

    assert run(main) == ["TypeError", "TypeError", "ValueError", "TypeError"]


def test_abcast_casts_to_the_local_server_and_never_fails():
    async def main():
        node = otpvm.self().node
        await gen_server.start(Echo, "s", name="echo")
        me = otpvm.self()
        assert gen_server.abcast("echo", ("note", me, 1)) is None
        gen_server.abcast("nobody", ("note", me, 2))
        gen_server.abcast("echo", ("note", me, 3), nodes=[node + 7])
        gen_server.abcast("echo", ("note", me, 4), nodes=[node])
        return [await otpvm.receive(("noted", ANY, ANY), timeout=5) for _ in range(2)]

    assert run(main) == [("noted", "s", 1), ("noted", "s", 4)]


def test_collection_repr_and_type():
    assert repr(RequestIdCollection()) == "RequestIdCollection([])"
    assert not reqids_new()
