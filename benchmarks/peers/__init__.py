"""Workload implementations for the otpvm benchmark suite.

Each module here implements the same seven workloads (``pingpong``, ``flood``,
``ring``, ``skynet``, ``spawn_idle``, ``gen_call`` and ``gen_cast``) on one
runtime:

* :mod:`peers.asyncio_peer` -- plain asyncio (optionally on uvloop), one
  ``asyncio.Task`` plus one ``asyncio.Queue`` mailbox per actor;
* :mod:`peers.otpvm_peer` -- otpvm processes.

:mod:`peers.otpvm_scaling` holds the other set, the five workloads of
``scaling.py`` (across scheduler counts, beside the BEAM's ``scaling.erl``).

Every workload is a plain synchronous function that boots its own runtime,
runs the workload, tears the runtime down and returns a ``dict`` of figures
(throughputs, seconds, bytes...).  Timing is taken inside the runtime, so the
cost of booting an event loop or a VM is excluded from every figure.
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: Signature shared by every workload function of every peer.
WorkloadFn = Callable[..., dict[str, float]]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Return the resident set size of this process in bytes.

    Reads ``/proc/self/statm`` (Linux).  Returns ``-1`` where it is not
    available, which callers turn into a ``nan`` figure.
    """
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return -1


def check_skynet_size(size: int, div: int = 10) -> None:
    """Raise ``ValueError`` unless ``size`` is a positive power of ``div``."""
    s = size
    while s > 1 and s % div == 0:
        s //= div
    if size < 1 or s != 1:
        raise ValueError(f"skynet size must be a power of {div}, got {size}")


def skynet_expected(size: int) -> int:
    """Return the correct skynet answer for ``size`` leaves: ``sum(range(size))``."""
    return size * (size - 1) // 2


def skynet_actors(size: int, div: int = 10) -> int:
    """Return the number of actors a skynet run of ``size`` leaves spawns."""
    total, level = 0, 1
    while level <= size:
        total += level
        level *= div
    return total


#: The modulus of the CPU-bound loop of ``scaling.py``'s ``cpu`` workload.
SPIN_MODULUS = 1_000_003


def spin(iterations: int) -> int:
    """Run the ``cpu`` workload's loop (``scaling.erl``'s ``spin/2``) and return its result."""
    acc = 0
    for i in range(iterations, 0, -1):
        acc = (acc + i * i) % SPIN_MODULUS
    return acc
