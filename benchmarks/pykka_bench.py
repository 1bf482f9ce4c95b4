"""pykka's ``pykka.ThreadingActor`` against ``otpvm.pykka.ThreadingActor``.

Usage::

    python benchmarks/pykka_bench.py [--quick] [--actors N] [--thread-actors N]
                                     [--runs N] [--json FILE]

Both actor classes (pykka 4.5's own, a thread per actor; otpvm's, a process
per actor on ``otpvm.default_vm()``) in this one process, one after the other,
and prints a Markdown table: measure | n | otpvm.pykka | pykka | ratio.

* ``start``: ``--actors`` actors (default 10,000) started one by one, µs
  per ``start()`` call (pykka's returns once its thread runs; otpvm's once
  its process is spawned).  Then each is asked once, 100 asks in flight at a
  time, µs per actor: after it every actor has run and waits for messages.
  Then, with all of them alive, the RSS growth per actor
  (``/proc/self/statm``; the peak ``ru_maxrss`` where there is none) and the
  OS threads alive.  Then each is stopped (``stop(block=False)``, in start
  order, 100 in flight), µs per actor, and all are checked gone (pykka's
  threads joined, otpvm's processes ended, the registry empty) before the
  next class is measured.  One pass, not a best of.  otpvm's goes first, in
  a fresh heap, so the memory it frees can only flatter pykka's figure.
  ``--thread-actors`` sets pykka's count apart (default: the same N); if
  the OS refuses a thread, pykka's rows say how many it got.
* ``ask``: ``ref.ask(i)`` from the main thread (a plain thread) to an echo
  actor, one at a time, 10,000 times: µs per round trip.
* ``tell``: ``ref.tell(...)`` M times (100,000), then one ``ask`` that returns once the
  M have been handled: messages/s, the ask included.
* ``actor→actor ask``: an actor asks another in a loop inside one handler,
  pykka's way (a plain handler, ``ref.ask(i)`` blocking it), 5,000 times,
  µs per round trip; on otpvm also an ``async def`` handler that does
  ``await ref.ask(i, block=False)`` (only that actor waits), whose ratio is
  against pykka's blocking ask (pykka has no such handler).

``ask``, ``tell`` and ``actor→actor`` are the best of ``--runs`` (default 3).
``--quick`` uses small counts (a smoke run, a few seconds).  The figures are
one machine's, noisy where its cores are shared.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pykka

import otpvm
import otpvm.pykka

INC = "inc"          # tell: count it
COUNT = "count"      # ask: the count so far, and start again from 0


class Echo:
    """An actor that answers an ask with the message, and counts tells."""

    count = 0

    def on_receive(self, message: Any) -> Any:
        if message is INC:
            self.count += 1
            return None
        if message is COUNT:
            count, self.count = self.count, 0
            return count
        return message


class AskLoop:
    """An actor that, asked ``(target, n)``, asks target ``0..n-1`` in turn,
    blocking on each answer (pykka's way), and returns the answers' sum."""

    def on_receive(self, message: tuple[Any, int]) -> int:
        target, n = message
        total = 0
        for i in range(n):
            total += target.ask(i)
        return total


class OtpvmAsyncAskLoop(otpvm.pykka.ThreadingActor):
    """AskLoop with an ``async def`` handler: awaits each answer, so only
    this actor waits."""

    async def on_receive(self, message: tuple[Any, int]) -> int:
        target, n = message
        total = 0
        for i in range(n):
            total += await target.ask(i, block=False)
        return total


class PykkaEcho(Echo, pykka.ThreadingActor):
    pass


class OtpvmEcho(Echo, otpvm.pykka.ThreadingActor):
    pass


class PykkaAskLoop(AskLoop, pykka.ThreadingActor):
    pass


class OtpvmAskLoop(AskLoop, otpvm.pykka.ThreadingActor):
    pass


RUNTIMES: dict[str, dict[str, type[pykka.Actor]]] = {
    "otpvm": {"echo": OtpvmEcho, "ask_loop": OtpvmAskLoop},
    "pykka": {"echo": PykkaEcho, "ask_loop": PykkaAskLoop},
}


def rss_bytes() -> int:
    """The process's resident set now (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        scale = 1 if sys.platform == "darwin" else 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def wait_gone(classes: tuple[type[pykka.Actor], ...], threads_before: set[threading.Thread],
              procs_before: int, timeout: float = 60.0) -> None:
    """Return once no actor of classes is left: out of pykka's registry,
    pykka's actor threads joined, the VM back to procs_before processes."""
    deadline = time.monotonic() + timeout
    for t in threading.enumerate():
        if t not in threads_before and t.name.startswith(tuple(c.__name__ for c in classes)):
            t.join(max(deadline - time.monotonic(), 0.0))
            if t.is_alive():
                raise RuntimeError(f"{t.name} still running after its actor stopped")
    vm = otpvm.default_vm()
    while True:
        left = [r for c in classes for r in pykka.ActorRegistry.get_by_class(c)]
        procs = len(vm.processes())
        if not left and procs <= procs_before:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"actors left after stop: {len(left)} registered, "
                               f"{procs - procs_before} processes")
        time.sleep(0.01)


IN_FLIGHT = 100      # asks or stops outstanding at once, over many actors


def in_batches(refs: list[Any], call: Callable[[Any, int], Any]) -> list[Any]:
    """call(ref, i) (an ask or a stop with block=False) on every ref, IN_FLIGHT
    at a time, each batch's answers awaited before the next; the answers.

    Not all at once: 10,000 pykka threads woken together thrash the GIL,
    and the figure would be that thrashing, seconds of it, noisy."""
    answers: list[Any] = []
    for j in range(0, len(refs), IN_FLIGHT):
        futures = [call(r, i) for i, r in enumerate(refs[j:j + IN_FLIGHT], j)]
        answers.extend(f.get() for f in futures)
    return answers


def stop_refs(refs: list[Any]) -> None:
    """Stop every ref, in start order, IN_FLIGHT at a time."""
    in_batches(refs, lambda r, _: r.stop(block=False))


def bench_start(cls: type[pykka.Actor], n: int) -> dict[str, Any]:
    """Start n actors, measure, stop them all, check they are gone."""
    gc.collect()
    threads_before = set(threading.enumerate())
    procs_before = len(otpvm.default_vm().processes())
    rss0 = rss_bytes()
    refs: list[Any] = []
    error = None
    t0 = time.perf_counter()
    try:
        for _ in range(n):
            refs.append(cls.start())
    except Exception as e:      # the OS refused a thread (RuntimeError), or memory ran out
        error = f"{type(e).__name__}: {e}"
        # pykka registers an actor before it starts its thread: the one whose
        # thread failed is left registered, with no loop to stop it.
        for ref in pykka.ActorRegistry.get_by_class(cls):
            if ref not in refs:
                pykka.ActorRegistry.unregister(ref)
    t1 = time.perf_counter()
    # Every actor has run and waits for messages: the memory is all there.
    answers = in_batches(refs, lambda r, i: r.ask(i, block=False))
    t2 = time.perf_counter()
    assert answers == list(range(len(refs)))
    del answers
    gc.collect()
    rss1 = rss_bytes()
    threads = threading.active_count()
    started = len(refs)
    t3 = time.perf_counter()
    stop_refs(refs)
    t4 = time.perf_counter()
    del refs
    wait_gone((cls,), threads_before, procs_before)
    per = max(started, 1)
    return {"n": started, "error": error,
            "start_us": (t1 - t0) / per * 1e6, "first_ask_us": (t2 - t1) / per * 1e6,
            "rss_kib": (rss1 - rss0) / per / 1024, "threads": threads,
            "stop_us": (t4 - t3) / per * 1e6}


def bench_ask(echo: Any, iterations: int) -> float:
    """µs per ``ask`` round trip from this (plain) thread."""
    echo.ask(-1)
    t0 = time.perf_counter()
    for i in range(iterations):
        echo.ask(i)
    return (time.perf_counter() - t0) / iterations * 1e6


def bench_tell(echo: Any, messages: int) -> float:
    """Messages/s: tell messages, then an ask that answers once all are handled."""
    echo.ask(COUNT)
    t0 = time.perf_counter()
    for _ in range(messages):
        echo.tell(INC)
    handled = echo.ask(COUNT)
    elapsed = time.perf_counter() - t0
    assert handled == messages, (handled, messages)
    return messages / elapsed


def bench_actor_ask(loop: Any, echo: Any, iterations: int) -> float:
    """µs per round trip of loop asking echo, iterations times in one handler."""
    loop.ask((echo, 10))
    t0 = time.perf_counter()
    total = loop.ask((echo, iterations))
    elapsed = time.perf_counter() - t0
    assert total == iterations * (iterations - 1) // 2, total
    return elapsed / iterations * 1e6


def best(runs: int, fn: Callable[..., float], *args: Any, higher: bool = False) -> float:
    values = [fn(*args) for _ in range(runs)]
    return max(values) if higher else min(values)


def bench_messaging(rt: str, sizes: dict[str, int], runs: int) -> dict[str, float]:
    """The ask, tell and actor-to-actor figures of one runtime."""
    classes = RUNTIMES[rt]
    threads_before = set(threading.enumerate())
    procs_before = len(otpvm.default_vm().processes())
    echo = classes["echo"].start()
    loop = classes["ask_loop"].start()
    refs = [echo, loop]
    out = {"ask_us": best(runs, bench_ask, echo, sizes["asks"]),
           "tell_per_s": best(runs, bench_tell, echo, sizes["tells"], higher=True),
           "actor_ask_us": best(runs, bench_actor_ask, loop, echo, sizes["actor_asks"])}
    if rt == "otpvm":
        aloop = OtpvmAsyncAskLoop.start()
        refs.append(aloop)
        out["actor_await_us"] = best(runs, bench_actor_ask, aloop, echo, sizes["actor_asks"])
    stop_refs(refs)
    wait_gone((*classes.values(), OtpvmAsyncAskLoop), threads_before, procs_before)
    return out


def fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    """Measure both actor classes and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    p.add_argument("--actors", type=int, default=None,
                   help="actors started at once (default 10,000; --quick 500)")
    p.add_argument("--thread-actors", type=int, default=None,
                   help="pykka's count for the start test (default: --actors)")
    p.add_argument("--runs", type=int, default=None,
                   help="best of N for ask/tell/actor→actor (default 3; --quick 1)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures to FILE")
    args = p.parse_args(argv)
    quick = args.quick
    actors = args.actors if args.actors is not None else (500 if quick else 10_000)
    thread_actors = args.thread_actors if args.thread_actors is not None else actors
    runs = args.runs if args.runs is not None else (1 if quick else 3)
    sizes = ({"asks": 1_000, "tells": 5_000, "actor_asks": 500} if quick else
             {"asks": 10_000, "tells": 100_000, "actor_asks": 5_000})

    vm = otpvm.default_vm()                     # started once, outside the timings
    results: dict[str, dict[str, Any]] = {"otpvm": {}, "pykka": {}}
    # Start first (the heap is fresh), otpvm before pykka (see the docstring).
    results["otpvm"].update(bench_start(OtpvmEcho, actors))
    results["pykka"].update(bench_start(PykkaEcho, thread_actors))
    for rt in ("otpvm", "pykka"):
        results[rt].update(bench_messaging(rt, sizes, runs))

    o, k = results["otpvm"], results["pykka"]
    print(f"Python {platform.python_version()} ({platform.python_implementation()}) "
          f"on {platform.machine()}, {os.cpu_count()} CPUs; pykka {version('pykka')}, "
          f"otpvm {version('otpvm')} ({vm.schedulers} scheduler(s)); "
          f"ask/tell/actor→actor: best of {runs}, start: one pass\n")
    if o["n"] != k["n"]:
        print(f"Note: the start rows started {o['n']:,} otpvm actors but {k['n']:,} "
              f"pykka threads" + (f" (the OS refused more: {k['error']})" if k["error"] else
                                 " (--thread-actors)") + ".\n")
    if o["error"]:
        print(f"Note: otpvm started only {o['n']:,} actors: {o['error']}.\n")
    n_start = f"{o['n']:,}" if o["n"] == k["n"] else f"{o['n']:,} / {k['n']:,}"
    rows: list[tuple[str, str, float | None, float | None, int]] = [
        ("start: `start()` call, µs/actor ↓", n_start, o["start_us"], k["start_us"], 1),
        (f"then ask each once ({IN_FLIGHT} in flight), µs/actor ↓", n_start,
         o["first_ask_us"], k["first_ask_us"], 1),
        ("RSS growth with all alive, KiB/actor ↓", n_start, o["rss_kib"], k["rss_kib"], 2),
        ("OS threads with all alive ↓", n_start, o["threads"], k["threads"], 0),
        (f"then stop each ({IN_FLIGHT} in flight), µs/actor ↓", n_start,
         o["stop_us"], k["stop_us"], 1),
        ("ask from a plain thread, µs ↓", f"{sizes['asks']:,}", o["ask_us"], k["ask_us"], 1),
        ("tell, then an ask: messages/s ↑", f"{sizes['tells']:,}",
         o["tell_per_s"], k["tell_per_s"], 0),
        ("actor→actor ask, blocking `ref.ask()`, µs ↓", f"{sizes['actor_asks']:,}",
         o["actor_ask_us"], k["actor_ask_us"], 1),
        ("actor→actor ask, `async def` + `await ref.ask(block=False)`, µs ↓ "
         "(ratio vs pykka's blocking)", f"{sizes['actor_asks']:,}",
         o["actor_await_us"], None, 1),
    ]
    print("| measure | n | otpvm.pykka | pykka (threads) | ratio otpvm/pykka |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, n, a, b, digits in rows:
        ref = k["actor_ask_us"] if b is None else b
        ratio = f"{a / ref:.2f}x" if a is not None and ref else "n/a"
        print(f"| {label} | {n} | {fmt(a, digits)} | {fmt(b, digits)} | {ratio} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    vm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
