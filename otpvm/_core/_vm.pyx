# cython: language_level=3, freethreading_compatible=True
# cython: boundscheck=False, wraparound=False, cdivision=True
"""The otpvm virtual machine core.

Processes, mailboxes, selective receive, links, monitors, exit signals,
registered names, timers and the scheduler threads.  The data structures that
must be shared between threads (mailbox inboxes, run queues, process states,
timers) are the C primitives of csrc/; this module is the Python-facing half
that owns the Python objects they carry.

The module is split by concept, like uvloop's loop.pyx, into the included files below.
"""

cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memset

include "csrc.pxi"         # the C primitives of csrc/, declared

include "handles.pxi"      # Pid, Ref: process and reference identifiers
include "match.pxi"        # receive patterns
include "copy.pxi"         # share-nothing message copying
include "process.pxi"      # a process: mailbox, signals, links, termination
include "reaper.pxi"       # big mailboxes of ended processes, freed off the schedulers
include "receive.pxi"      # the awaitables behind receive() and sleep()
include "timers.pxi"       # send_after, receive timeouts
include "machine.pxi"      # the VM: scheduler threads, pid table, names
include "monitor.pxi"      # long_schedule reports of the monitor thread
include "kernel.pxi"       # the calls a process makes: spawn, send, link...
include "gen.pxi"          # the compiled fast path of gen.call/cast/reply and gen_server
include "port.pxi"         # the compiled data path of otpvm.net's sockets

