"""Supervisor reports: which ends of a child are reported, exactly as OTP does.

The expected reports in the tables below are what OTP 25's supervisor logged
for the same cases (checked with erl: every restart type, shutdown and reason),
and the rules are the table at the top of the helpers in otpvm/supervisor.py.
"""

import logging
import random

import pytest

import otpvm
from otpvm import ANY, Down, Exit, gen_server, receive, send, supervisor, sys
from otpvm.gen_server import GenServer, NoReply, Ok, Reply, Stop
from otpvm.supervisor import ChildSpec, Supervisor, SupFlags

T = 5       # generous timeout for anything awaited
BOOM = ("boom", 1)
SHUTDOWN_X = ("shutdown", "x")
REASONS = ["normal", "shutdown", SHUTDOWN_X, BOOM, "killed"]


async def oldest_first(sup):
    """which_children in start order (OTP lists them newest first)."""
    return list(reversed(await supervisor.which_children(sup)))


def clean(reason):
    """'normal', 'shutdown' or ('shutdown', _): OTP's ends that are not failures."""
    return reason in ("normal", "shutdown") or (
        isinstance(reason, tuple) and len(reason) == 2 and reason[0] == "shutdown")


@pytest.fixture
def reports():
    """The supervisor reports logged during the test, as (context, reason, id)
    in the order they were logged (the args of otpvm.supervisor._report)."""
    got = []

    class Collect(logging.Handler):
        def emit(self, record):
            if str(record.msg).startswith("supervisor report"):
                got.append((record.args[1], record.args[2], record.args[3]))

    logger = logging.getLogger("otpvm")
    handler, level = Collect(logging.ERROR), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.ERROR)
    yield got
    logger.removeHandler(handler)
    logger.setLevel(level)


class Worker(GenServer):
    """Ends with the reason it is cast: ('end', reason)."""

    def init(self, ident):
        return Ok(ident)

    def handle_call(self, request, from_, ident):
        return Reply(("alive", ident), ident)

    def handle_cast(self, msg, ident):
        return Stop(msg[1], ident) if msg[0] == "end" else NoReply(ident)


async def start_worker(ident):
    return await gen_server.start_link(Worker, ident)


def worker(ident, restart="permanent", shutdown=None):
    return ChildSpec(ident, (start_worker, (ident,)), restart=restart, shutdown=shutdown)


class Sup(Supervisor):
    def init(self, args):
        return args


async def start_sup(strategy, specs):
    return await supervisor.start_link(Sup, (SupFlags(strategy, 1000, 1), specs))


async def child(sup, ident):
    return dict((i, pid) for i, pid, _, _ in await oldest_first(sup))[ident]


async def end(pid, reason):
    """Makes pid end with reason ('killed': exit(pid, 'kill')) and waits for it."""
    ref = otpvm.monitor(pid)
    if reason == "killed":
        otpvm.exit(pid, "kill")
    else:
        gen_server.cast(pid, ("end", reason))
    down = await receive(Down(ref, ANY, ANY), timeout=T)
    assert down.reason == reason


def run(main, schedulers=1):
    return otpvm.run(main, schedulers=schedulers)


# -- a child that ends on its own -------------------------------------------------

# (restart, reason): reported as child_terminated? (erl: every permanent end
# is; a transient or temporary child's normal, shutdown or (shutdown, _) is not)
EXITS = {(restart, reason): restart == "permanent" or not clean(reason)
         for restart in ("permanent", "transient", "temporary") for reason in REASONS}


@pytest.mark.parametrize("restart, reason", list(EXITS), ids=str)
def test_a_child_that_ends_is_reported_by_its_restart_type_and_reason(restart, reason, reports):
    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await start_sup("one_for_one", [worker("c", restart)])
        before = await child(sup, "c")
        await end(before, reason)
        return before, await oldest_first(sup)

    before, children = run(main)
    reported = EXITS[restart, reason]
    assert reports == ([("child_terminated", reason, "c")] if reported else [])
    restarted = restart == "permanent" or (restart == "transient" and reported)
    if restart == "temporary":
        assert children == []
    else:
        [(_, pid, _, _)] = children
        assert (pid is not None and pid != before) == restarted
        assert restarted or pid is None


# -- a child that had died, its Exit queued, when its supervisor shuts it down ----

def _reported_at_shutdown(restart, shutdown, reason):
    """OTP 25's shutdown_error rules, as erl logged them."""
    asked = "killed" if shutdown == "brutal_kill" else "shutdown"
    if reason == asked:
        return False
    return restart == "permanent" or not clean(reason)


QUEUED = {(restart, shutdown, reason): _reported_at_shutdown(restart, shutdown, reason)
          for restart in ("permanent", "transient", "temporary")
          for shutdown in ("brutal_kill", 5, "infinity") for reason in REASONS}


def test_the_queued_table_is_the_one_erl_logged():
    # Spelled out, the cases erl reported (all others it did not).
    reported = {key for key, yes in QUEUED.items() if yes}
    assert reported == {
        ("permanent", "brutal_kill", "normal"), ("permanent", "brutal_kill", "shutdown"),
        ("permanent", "brutal_kill", SHUTDOWN_X), ("permanent", "brutal_kill", BOOM),
        *{("permanent", s, r) for s in (5, "infinity")
          for r in ("normal", SHUTDOWN_X, BOOM, "killed")},
        *{(t, "brutal_kill", BOOM) for t in ("transient", "temporary")},
        *{(t, s, r) for t in ("transient", "temporary") for s in (5, "infinity")
          for r in (BOOM, "killed")},
    }


@pytest.mark.parametrize("restart, shutdown, reason", list(QUEUED), ids=str)
def test_a_sibling_that_died_with_its_exit_queued_is_reported_with_its_own_reason(
        restart, shutdown, reason, reports):
    # a's death makes the one_for_all supervisor shut b down, but b had died
    # too, its Exit still queued behind a's: the supervisor is suspended while
    # both die, so this is the race made certain.
    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await start_sup("one_for_all", [worker("a"), worker("b", restart, shutdown)])
        a, b = await child(sup, "a"), await child(sup, "b")
        await sys.suspend(sup)
        await end(a, BOOM)
        await end(b, reason)
        await sys.resume(sup)
        return a, b, await oldest_first(sup)

    a, b, children = run(main)
    expected = [("child_terminated", BOOM, "a")]
    if QUEUED[restart, shutdown, reason]:
        expected.append(("shutdown_error", reason, "b"))
    assert reports == expected            # and b's death is not seen a second time
    pids = {ident: pid for ident, pid, _, _ in children}
    assert pids["a"] not in (None, a)
    if restart == "temporary":
        assert "b" not in pids             # shut down by a restart: forgotten
    else:
        assert pids["b"] not in (None, b)  # restarted with a


# -- a live child shut down by its supervisor ----------------------------------------

def trapping(on_shutdown):
    """A child that traps exits and, told to shut down, ends with on_shutdown
    ('ignore': it carries on and must be killed)."""
    async def body():
        otpvm.process_flag("trap_exit", True)
        while True:
            msg = await receive()
            if isinstance(msg, Exit) and msg.reason == "shutdown" and on_shutdown != "ignore":
                otpvm.exit(on_shutdown)

    async def start():
        return otpvm.spawn_link(body)
    return start


ALIVE = {(restart, shutdown, on): _reported_at_shutdown(
            restart, shutdown, "killed" if on == "ignore" or shutdown == "brutal_kill" else on)
         for restart in ("permanent", "transient", "temporary")
         for shutdown in ("brutal_kill", 0.1, "infinity")
         for on in ("normal", "shutdown", SHUTDOWN_X, BOOM, "ignore")
         if not (shutdown == "infinity" and on == "ignore")}


@pytest.mark.parametrize("restart, shutdown, on_shutdown", list(ALIVE), ids=str)
def test_a_live_child_shut_down_is_reported_by_how_it_ended(
        restart, shutdown, on_shutdown, reports):
    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await start_sup("one_for_one", [ChildSpec(
            "b", (trapping(on_shutdown), ()), restart=restart, shutdown=shutdown)])
        b = await child(sup, "b")
        await supervisor.terminate_child(sup, "b")
        return b, otpvm.is_alive(b)

    b, alive = run(main)
    assert alive is False
    if ALIVE[restart, shutdown, on_shutdown]:
        reason = "killed" if on_shutdown == "ignore" else on_shutdown
        assert reports == [("shutdown_error", reason, "b")]
    else:
        assert reports == []


def test_a_child_that_unlinked_itself_and_died_is_reported_noproc_without_waiting(reports):
    # No Exit can come from it: the supervisor must not wait for one.
    async def naughty(sup_ref):
        await receive("go")
        otpvm.unlink(sup_ref[0])
        otpvm.exit(BOOM)

    async def start(sup_ref):
        return otpvm.spawn_link(naughty, sup_ref)

    class Naughty(Supervisor):
        def init(self, _):
            return SupFlags(), [ChildSpec("n", (start, ([otpvm.self()],)))]

    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await supervisor.start_link(Naughty)
        pid = await child(sup, "n")
        ref = otpvm.monitor(pid)
        send(pid, "go")
        await receive(Down(ref, ANY, ANY), timeout=T)
        await supervisor.terminate_child(sup, "n")
        return await oldest_first(sup)

    assert run(main) == [("n", None, "worker", (__name__,))]
    assert reports == [("shutdown_error", "noproc", "n")]


def test_an_exit_still_on_its_way_after_a_noproc_down_is_waited_for(reports, monkeypatch):
    # The window where a dying child has closed its mailbox (so a monitor
    # gives 'noproc' at once) but has not yet delivered its Exit: made
    # certain by a Down 'noproc' put in the supervisor's mailbox by hand while
    # the child is still alive and linked; the child ends only once the
    # supervisor has looked for its Exit and found none.  The supervisor must
    # wait for that Exit (its reason is the real one) rather than report noproc.
    looked = []
    real_monitor, real_info = supervisor.monitor, supervisor.process_info

    def monitor(pid):
        ref = otpvm.make_ref()
        send(otpvm.self(), Down(ref, pid, "noproc"))
        return ref

    def process_info(pid):
        info = real_info(pid)
        looked.append(sorted(info["links"]))
        send(child_pid[0], "go")
        return info

    async def stubborn():
        otpvm.process_flag("trap_exit", True)
        await receive(Exit(ANY, "shutdown"))
        await receive("go")
        otpvm.exit("shutdown")

    async def start():
        child_pid[:] = [otpvm.spawn_link(stubborn)]
        return child_pid[0]

    child_pid = []

    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await start_sup("one_for_one", [ChildSpec("s", (start, ()))])
        monkeypatch.setattr(supervisor, "monitor", monitor)
        monkeypatch.setattr(supervisor, "process_info", process_info)
        await supervisor.terminate_child(sup, "s")
        monkeypatch.setattr(supervisor, "monitor", real_monitor)
        monkeypatch.setattr(supervisor, "process_info", real_info)
        return (otpvm.is_alive(child_pid[0]), await oldest_first(sup),
                otpvm.process_info(sup)["message_queue_len"])

    alive, children, queued = run(main)
    assert len(looked) == 1 and child_pid[0] in looked[0]      # still linked: it waited
    assert alive is False and children == [("s", None, "worker", (__name__,))] and queued == 0
    assert reports == []                  # it ended with 'shutdown', as asked


def test_simple_one_for_one_shuts_its_children_down_together_one_report_per_reason(reports):
    # OTP's terminate_dynamic_children: every child is told at once, and each
    # distinct failure is one report naming all the pids that ended with it.
    async def child_body(on_shutdown, watcher):
        otpvm.process_flag("trap_exit", True)
        await receive(Exit(ANY, "shutdown"))
        send(watcher, ("told", otpvm.self()))
        if on_shutdown == "ignore":
            await receive("never")
        otpvm.exit(on_shutdown)

    async def start(on_shutdown, watcher):
        return otpvm.spawn_link(child_body, on_shutdown, watcher)

    class Dynamic(Supervisor):
        def init(self, _):
            return SupFlags("simple_one_for_one"), [ChildSpec("d", (start, ()), shutdown=0.2)]

    ons = ["normal", "normal", "ignore", "ignore", BOOM, "shutdown"]

    async def main():
        otpvm.process_flag("trap_exit", True)
        me = otpvm.self()
        sup = await supervisor.start_link(Dynamic)
        pids = [await supervisor.start_child(sup, (on, me)) for on in ons]
        refs = {otpvm.monitor(pid): pid for pid in pids}
        otpvm.exit(sup, "shutdown")
        events = []
        while len(events) < 2 * len(pids):
            msg = await receive(lambda m: (isinstance(m, tuple) and m[:1] == ("told",))
                                or (isinstance(m, Down) and m.ref in refs), timeout=T)
            events.append(("told", msg[1]) if msg[0] == "told" else ("down", refs[msg.ref]))
        await receive(Exit(sup, ANY), timeout=T)
        return pids, events

    pids, events = run(main)
    stubborn = set(pids[2:4])
    first_kill = min(i for i, (what, pid) in enumerate(events)
                     if what == "down" and pid in stubborn)
    told_before = {pid for what, pid in events[:first_kill] if what == "told"}
    assert told_before == set(pids)       # all were told before the first was killed
    by_reason = {(context, repr(reason)): ident for context, reason, ident in reports}
    assert sorted(by_reason) == sorted([("shutdown_error", repr("normal")),
                                        ("shutdown_error", repr("killed")),
                                        ("shutdown_error", repr(BOOM))])
    assert len(reports) == 3


def test_reaching_the_restart_intensity_is_one_shutdown_report(reports):
    # OTP: context shutdown, reason reached_max_restart_intensity.
    async def main():
        otpvm.process_flag("trap_exit", True)
        sup = await supervisor.start_link(Sup, (SupFlags("one_for_one", 0, 5), [worker("w")]))
        ref = otpvm.monitor(sup)
        await end(await child(sup, "w"), BOOM)
        return (await receive(Down(ref, ANY, ANY), timeout=T)).reason

    assert run(main) == "shutdown"
    assert reports == [("child_terminated", BOOM, "w"),
                       ("shutdown", "reached_max_restart_intensity", "w")]


# -- the kill storm -------------------------------------------------------------------
#
# A three-level tree: a one_for_one root, four middle supervisors (one per
# strategy mix), each with five workers and three leaf supervisors of eight
# workers: 116 workers of every restart type and shutdown.  One killer per
# middle supervisor, all at once, ends random workers of its branch with
# random reasons.  Each round suspends the workers' supervisor while 1 to 3
# of them die, so that their Exits wait in its mailbox together: the race of a
# restart that shuts down a sibling already dead, made certain.  The killer
# keeps a model of its branch and, by OTP's rules (the tables above), the
# reports each round must give, in order; the test compares them with the
# reports logged, and the model with the tree at the end.

STRATEGIES = ("one_for_one", "one_for_all", "rest_for_one")
RESTARTS = ("permanent", "transient", "temporary")
SHUTDOWNS = ("brutal_kill", 5, "infinity")
STORM_REASONS = ["killed", "normal", "shutdown", ("shutdown", "storm"), BOOM, ("boom", 2)]
GENEROUS = 1_000_000                 # restarts allowed per second: none is too many


def leaf_specs(prefix, offset):
    return [(f"{prefix}.w{i}", "worker", RESTARTS[(i + offset) % 3],
             SHUTDOWNS[(i // 3 + offset) % 3], None) for i in range(8)]


def middle_specs(m):
    """Five workers and three leaves, interleaved (order matters to rest_for_one)."""
    w = [(f"m{m}.w{i}", "worker", RESTARTS[(i + m) % 3], SHUTDOWNS[(i + 2 * m) % 3], None)
         for i in range(5)]
    leaves = [(f"m{m}.l{j}", "supervisor", "permanent", "infinity",
               (STRATEGIES[(m + j) % 3], leaf_specs(f"m{m}.l{j}", m + j))) for j in range(3)]
    return (STRATEGIES[(m + 1) % 3] if m < 3 else "rest_for_one",
            [w[0], w[1], leaves[0], w[2], leaves[1], leaves[2], w[3], w[4]])


class TreeSup(Supervisor):
    def init(self, args):
        strategy, specs = args
        return SupFlags(strategy, GENEROUS, 1), [to_childspec(s) for s in specs]


def to_childspec(spec):
    ident, kind, restart, shutdown, sub = spec
    if kind == "supervisor":
        return ChildSpec(ident, (supervisor.start_link, (TreeSup, sub)), type="supervisor")
    return ChildSpec(ident, (start_worker, (ident,)), restart=restart, shutdown=shutdown)


class Model:
    """A supervisor as OTP's rules say it must be: its children in start order,
    each [spec, alive?, Model of its subtree or None]."""

    def __init__(self, strategy, specs):
        self.strategy, self.specs = strategy, specs
        self.reset()

    def reset(self):
        self.children = [[s, True, Model(*s[4]) if s[4] else None] for s in self.specs]

    def entry(self, ident):
        return next(c for c in self.children if c[0][0] == ident)

    def view(self):
        return [(c[0][0], c[1]) for c in self.children]

    def round(self, victims):
        """victims: [(id, reason)] in the order they died.  Updates the model
        and returns the reports expected, in order."""
        expected, pending = [], dict(victims)
        for ident, reason in victims:
            if ident not in pending:
                continue                    # shut down by an earlier restart: consumed
            del pending[ident]
            entry = self.entry(ident)
            (_, _, restart, _, _) = entry[0]
            if restart == "permanent" or not clean(reason):
                expected.append(("child_terminated", reason, ident))
            if restart == "permanent" or (restart == "transient" and not clean(reason)):
                expected += self.restart(entry, pending)
            elif restart == "temporary":
                self.children.remove(entry)
            else:
                entry[1] = False
        return expected

    def restart(self, entry, pending):
        at = self.children.index(entry)
        group = {"one_for_one": [], "one_for_all": self.children[:at] + self.children[at + 1:],
                 "rest_for_one": self.children[at + 1:]}[self.strategy]
        expected = []
        for other in reversed(group):       # shut down in reverse start order
            ident, _, restart, shutdown, _ = other[0]
            if other[1] and ident in pending:
                reason = pending.pop(ident)
                if _reported_at_shutdown(restart, shutdown, reason):
                    expected.append(("shutdown_error", reason, ident))
        for other in group:
            if other[0][2] == "temporary":
                self.children.remove(other)
            else:
                other[1] = True
                if other[2] is not None:
                    other[2].reset()
        entry[1] = True
        return expected


async def actual_view(sup):
    return [(ident, pid is not None) for ident, pid, _, _ in await oldest_first(sup)]


async def killer(m, middle, rounds, seed, parent):
    rng = random.Random(seed * 10 + m)
    model = Model(*middle_specs(m))
    expected, kills = [], 0
    for _ in range(rounds):
        leaves = {ident: pid for ident, pid, kind, _ in await oldest_first(middle)
                  if kind == "supervisor"}
        target = rng.choice([None, *sorted(leaves)])
        sup, sup_model = ((middle, model) if target is None
                          else (leaves[target], model.entry(target)[2]))
        children = await oldest_first(sup)
        assert [(i, p is not None) for i, p, _, _ in children] == sup_model.view()
        alive = [(i, p) for i, p, kind, _ in children if kind == "worker" and p is not None]
        chosen = rng.sample(alive, min(len(alive), rng.choice([1, 1, 2, 3])))
        victims = [(ident, rng.choice(STORM_REASONS)) for ident, _ in chosen]
        await sys.suspend(sup)
        for (_, pid), (_, reason) in zip(chosen, victims, strict=True):
            await end(pid, reason)
        await sys.resume(sup)
        await oldest_first(sup)       # every Exit of the round handled
        expected += sup_model.round(victims)
        kills += len(victims)
    send(parent, ("done", m, expected, kills, model))


async def check_tree(sup, model):
    """The tree is whole: the model's children, alive where it says, answering."""
    assert await actual_view(sup) == model.view()
    counts = await supervisor.count_children(sup)
    assert counts == {"specs": len(model.children), "active": sum(c[1] for c in model.children),
                      "supervisors": sum(c[0][1] == "supervisor" for c in model.children),
                      "workers": sum(c[0][1] == "worker" for c in model.children)}
    children = await oldest_first(sup)
    for (ident, pid, kind, _), entry in zip(children, model.children, strict=True):
        if kind == "supervisor":
            await check_tree(pid, entry[2])
        elif pid is not None:
            assert await gen_server.call(pid, "ping", T) == ("alive", ident)


async def start_storm(killer_fn, count, seed):
    """Starts the tree (four middle supervisors under a one_for_one root) and
    one killer per middle; returns the root and the middles' pids, in order."""
    otpvm.process_flag("trap_exit", True)
    root = await supervisor.start_link(TreeSup, ("one_for_one", [
        (f"m{m}", "supervisor", "permanent", "infinity", middle_specs(m))
        for m in range(4)]))
    middles = [pid for _, pid, _, _ in await oldest_first(root)]
    me = otpvm.self()
    for m, middle in enumerate(middles):
        otpvm.spawn_link(killer_fn, m, middle, count, seed, me)
    return root, middles


@pytest.mark.parametrize("schedulers", [1, 4])
@pytest.mark.parametrize("seed", [1, 2])
def test_kill_storm_reports_exactly_what_otp_rules_predict(schedulers, seed, reports):
    rounds = 300

    async def main():
        root, middles = await start_storm(killer, rounds, seed)
        done = [await receive(("done", ANY, ANY, ANY, ANY), timeout=60) for _ in middles]
        for _, m, _, _, model in sorted(done, key=lambda d: d[1]):
            await check_tree(middles[m], model)
        assert await actual_view(root) == [(f"m{m}", True) for m in range(4)]
        assert middles == [pid for _, pid, _, _ in await oldest_first(root)]
        return {m: (expected, kills) for _, m, expected, kills, _ in done}

    results = run(main, schedulers)
    assert sum(kills for _, kills in results.values()) > 4 * rounds
    for m, (expected, _) in results.items():
        logged = [r for r in reports if r[2].startswith(f"m{m}.")]
        missing = [r for r in expected if r not in logged]
        extra = [r for r in logged if r not in expected]
        assert logged == expected, (
            f"branch m{m}: {len(logged)} reports logged, {len(expected)} expected; "
            f"missing {_by_context(missing)}, unexpected {_by_context(extra)}")
    assert all(r[2].startswith(("m0.", "m1.", "m2.", "m3.")) for r in reports)


def _by_context(reports):
    counts = {}
    for context, reason, _ in reports:
        counts[context, repr(reason)] = counts.get((context, repr(reason)), 0) + 1
    return counts


# The same tree with no suspension: each killer ends batches of 1 to 4
# workers of its branch at once, while the restarts of earlier batches are
# under way (a middle supervisor's restart shuts leaves down as their own
# workers die).  Which supervisor sees a death, and whether as an Exit or
# while shutting the child down, is then up to the schedulers; so each
# victim's reason is one whose report does not depend on that (the same in
# both tables for its restart type and shutdown), and the killer learns from
# its own monitor whether its end took (the Down has its reason) or the
# supervisor's came first (it must not be reported).  Every death that took
# is then exactly one report with its reason and id, whatever its context.

def unambiguous_reasons(restart, shutdown):
    reasons = ["normal", ("shutdown", "storm"), BOOM]
    if shutdown == "brutal_kill":
        return [*reasons, "shutdown"]       # its supervisor's end for it is 'killed'
    if restart == "permanent":
        return [*reasons, "killed"]
    return [*reasons, "killed", "shutdown"]  # 'shutdown' is reported neither way


def all_specs(specs):
    for spec in specs:
        yield spec
        if spec[4]:
            yield from all_specs(spec[4][1])


async def live_workers(sup):
    found = []
    for ident, pid, kind, _ in await oldest_first(sup):
        if kind == "supervisor":
            found += await live_workers(pid)
        elif pid is not None:
            found.append((ident, pid))
    return found


async def free_killer(m, middle, kills, seed, parent):
    rng = random.Random(seed * 10 + m)
    specs = {s[0]: s for s in all_specs(middle_specs(m)[1])}
    took, done = [], 0
    while done < kills:
        alive = await live_workers(middle)
        batch = rng.sample(alive, min(len(alive), rng.choice([1, 2, 3, 4]), kills - done))
        ends = []
        for ident, pid in batch:
            _, _, restart, shutdown, _ = specs[ident]
            reason = rng.choice(unambiguous_reasons(restart, shutdown))
            ends.append((otpvm.monitor(pid), ident, restart, reason))
            if reason == "killed":
                otpvm.exit(pid, "kill")
            else:
                gen_server.cast(pid, ("end", reason))
        for ref, ident, restart, reason in ends:
            down = await receive(Down(ref, ANY, ANY), timeout=T)
            if down.reason == reason and (restart == "permanent" or not clean(reason)):
                took.append((reason, ident))
        done += len(batch)
    send(parent, ("done", m, took))


async def check_whole(sup, specs):
    """Every permanent child there and alive, every transient one there, a
    temporary one alive if there, and every live worker answering."""
    children = await oldest_first(sup)
    by_id = {ident: (pid, kind) for ident, pid, kind, _ in children}
    for ident, kind, restart, _, sub in specs:
        if restart != "temporary":
            assert ident in by_id
        if restart == "permanent":
            assert by_id[ident][0] is not None
        if ident in by_id and by_id[ident][0] is not None:
            if kind == "supervisor":
                await check_whole(by_id[ident][0], sub[1])
            else:
                assert await gen_server.call(by_id[ident][0], "ping", T) == ("alive", ident)
    assert [i for i, _, _, _ in children] == [s[0] for s in specs if s[0] in by_id]


@pytest.mark.parametrize("schedulers", [1, 4])
@pytest.mark.parametrize("seed", [1, 2])
def test_free_running_kill_storm_reports_every_death_once(schedulers, seed, reports):
    kills = 400

    async def main():
        root, middles = await start_storm(free_killer, kills, seed)
        done = [await receive(("done", ANY, ANY), timeout=60) for _ in middles]
        for m, middle in enumerate(middles):
            await check_whole(middle, middle_specs(m)[1])
        assert middles == [pid for _, pid, _, _ in await oldest_first(root)]
        return [r for _, _, took in done for r in took]

    took = run(main, schedulers)
    assert len(took) > kills                 # most ends took, and most are reported
    logged = [(reason, ident) for _, reason, ident in reports]
    assert {context for context, _, _ in reports} <= {"child_terminated", "shutdown_error"}
    assert sorted(map(repr, logged)) == sorted(map(repr, took))
