# long_schedule reports: the monitor's incidents, written to the otpvm log.
#
# The monitor thread (csrc/ovm_sched.c) decides what overran and hands run
# queues over; it holds no Python objects and never waits for the GIL, so it
# queues an incident record and goes on watching.  One Python thread per VM
# (otpvm-long-schedules) waits for those records without the GIL and writes
# them, so a report appears while the overrun is happening, not when it
# ends.  What a reader gets:
#   - one WARNING when a slice overruns, naming the process, its initial
#     call, the line it is running (or blocked in) now, what happened to the
#     processes queued behind it, and what to do about it;
#   - for a slice that goes on, a line after 10 s, 100 s, ... and one when it
#     ends if it lasted 1 s or more;
#   - in a burst, the first _LS_PER_WINDOW overruns of a _LS_WINDOW_NS window
#     in full, then one summary line for the rest.

import gc as _gc
import linecache as _linecache

cdef str _THREADING_FILE = _threading.__file__     # below a slice's frames

cdef int64_t _LS_WINDOW_NS = 10 * 1000000000LL
cdef int _LS_PER_WINDOW = 3
cdef int64_t _LS_FOLLOW_UP_NS = 1000000000LL    # an end is reported for slices this long
cdef int _LS_FRAMES = 3                         # innermost Python frames shown
cdef int _LS_REPORTED_MAX = 64                  # then forget incidents whose end was dropped

cdef str _LS_FIX_RUNNING = (
    "await in long loops (`await otpvm.sleep(0)` lets the others run), or split the "
    "work into several messages")
cdef str _LS_FIX_ASYNCIO = (     # the process runs asyncio code (otpvm.aio)
    "await in long loops (`await asyncio.sleep(0)` lets the other tasks run), or run "
    "CPU-bound work with `await loop.run_in_executor(None, fn, *args)`")
cdef str _LS_FIX_BLOCKED = (
    "make blocking calls with `await otpvm.run_blocking(fn, *args)`, or inside "
    "`with otpvm.blocking():` where the process cannot await; use "
    "`await otpvm.sleep(seconds)` instead of time.sleep() and otpvm.net for sockets")


cdef object _gc_hook_lock = _threading.Lock()


def _gc_phase(phase, info):
    """gc.callbacks hook: a collection is not charged to the slice it
    happens to run in (csrc/ovm_sched.h, ovm_housekeeping)."""
    ovm_housekeeping(phase == "start")


cdef int _hook_gc() except -1:
    """Installs _gc_phase once per interpreter (by the first VM)."""
    with _gc_hook_lock:
        if _gc_phase not in _gc.callbacks:
            _gc.callbacks.append(_gc_phase)
    return 0


cdef str _duration(int64_t ns):
    if ns < 1000000000LL:
        return f"{ns / 1e6:.1f} ms"
    if ns < 10 * 1000000000LL:
        return f"{ns / 1e9:.2f} s"
    return f"{ns / 1e9:.1f} s"


cdef str _house_note(ovm_incident *inc):
    if inc.house_ns < 100000:
        return ""
    return (f"; {_duration(inc.house_ns)} of garbage collection and other VM housekeeping "
            f"not counted")


cdef str _call_name(long nr):
    cdef const char *name
    if nr < 0:
        return "a call"
    name = ovm_syscall_name(nr)
    if name == NULL:
        return f"system call {nr}"
    return f"the {name.decode()} system call"


cdef class _LongSchedules:
    """Writes the monitor's long_schedule incidents for one VM (see above)."""

    cdef VM vm
    cdef dict reported              # (worker, slice) -> (runq) of incidents written in full
    cdef int64_t window_start       # when the burst window opened
    cdef int64_t window_end         # 0: no burst window open
    cdef int written                # full reports in the current window
    cdef list held                  # (kind, cpu, blocked, pid text) not written one by one
    cdef uint64_t dropped           # incidents the monitor dropped (reporter too slow)
    cdef int64_t nag_at             # when to interrupt killed processes' threads again

    def __cinit__(self, VM vm):
        self.vm = vm
        self.reported = {}
        self.held = []

    def run(self):
        """Takes incidents until the scheduler stops (the thread's body)."""
        cdef ovm_incident inc
        cdef int got
        cdef int64_t wait
        while True:
            wait = -1 if self.window_end == 0 else max(0, self.window_end - ovm_now_ns())
            if self.vm.zombies:
                nag = max(0, self.nag_at - ovm_now_ns())
                wait = nag if wait < 0 else min(wait, nag)
            with nogil:
                got = ovm_sched_next_incident(&self.vm.sched, &inc, wait)
            try:
                if got == 2:
                    self.vm.start_requested_workers()
                elif got == 1:
                    self.take(&inc)
                if self.vm.zombies:
                    self.nag_at = self.vm.nag_zombies()
                self.end_window(got < 0)
            except BaseException:       # a bug here must not end the reports
                _log.critical("otpvm: internal error reporting a long schedule", exc_info=True)
            if got < 0:
                return

    cdef int take(self, ovm_incident *inc) except -1:
        key = (inc.worker, inc.slice)
        if inc.kind == OVM_LS_RUNNING or inc.kind == OVM_LS_BLOCKED:
            self.vm.stuck[inc.pid] = True
            self.kill_if_doomed(inc.pid)
        elif inc.kind == OVM_LS_END:
            self.vm.stuck.pop(inc.pid, None)
        if inc.kind == OVM_LS_RUNNING or inc.kind == OVM_LS_BLOCKED:
            self.end_window(False)
            if self.window_end == 0:
                self.window_start = ovm_now_ns()
                self.window_end = self.window_start + _LS_WINDOW_NS
                self.written = 0
            if self.written < _LS_PER_WINDOW:
                self.written += 1
                self.forget_stale()
                self.reported[key] = inc.runq
                _log.warning("%s", self.describe(inc))
            else:
                self.held.append((inc.kind, inc.cpu_ns, inc.blocked_ns, self.pid_text(inc.pid)))
        elif key in self.reported:
            if inc.kind == OVM_LS_END:
                del self.reported[key]
                if inc.wall_ns >= _LS_FOLLOW_UP_NS:
                    gone = self.vm.procs.get(inc.pid) is None
                    _log.warning("long_schedule: process %s %s after %s (%s)",
                                 self.pid_text(inc.pid), "exited" if gone else "awaited again",
                                 _duration(inc.wall_ns), self.spent(inc))
            elif inc.kind == OVM_LS_STILL:
                _log.warning("long_schedule: process %s still has not awaited after %s (%s)",
                             self.pid_text(inc.pid), _duration(inc.wall_ns), self.spent(inc))
        return 0

    cdef int kill_if_doomed(self, uint64_t pid) except -1:
        """A process just found stuck may have an exit signal that kills it
        waiting already (sent before it was found): act on it now."""
        p = self.vm.procs.get(pid)
        if p is None:
            return 0
        if ovm_proc_state(&(<Process>p).c) & OVM_KILL:
            (<Process>p).take_over("killed")
            return 0
        for kind, payload in (<Process>p).pending_signals():
            if kind == OVM_SIG_EXIT or kind == OVM_SIG_EXIT_LINKED:
                reason = (<Process>p).killing_reason(kind, payload)
                if reason is not NOTHING:
                    (<Process>p).take_over(reason)
                    return 0
        return 0

    cdef int end_window(self, bint force) except -1:
        """Closes a burst window that is over, with one line for what it held."""
        cdef int64_t now = ovm_now_ns()
        self.dropped += ovm_sched_take_dropped(&self.vm.sched)
        if self.window_end == 0 or (not force and now < self.window_end):
            return 0
        span = (min(now, self.window_end) - self.window_start) / 1e9
        self.window_end = 0
        if not self.held and not self.dropped:
            return 0
        running = [h for h in self.held if h[0] == OVM_LS_RUNNING]
        blocked = [h for h in self.held if h[0] == OVM_LS_BLOCKED]
        parts = []
        if running:
            parts.append(f"{len(running)} running, longest {_duration(max(h[1] for h in running))}"
                         f" of CPU")
        if blocked:
            parts.append(f"{len(blocked)} blocked in calls, longest "
                         f"{_duration(max(h[2] for h in blocked))}")
        if self.dropped:
            parts.append(f"{self.dropped} not looked at (the reports fell behind)")
        pids = list(dict.fromkeys(h[3] for h in self.held))
        who = ", ".join(pids[:3]) + (f" and {len(pids) - 3} more" if len(pids) > 3 else "")
        _log.warning("long_schedule: %d more long schedules in the last %.1f s, not reported "
                     "one by one: %s%s", len(self.held) + self.dropped, span,
                     "; ".join(parts), f" (processes {who})" if who else "")
        self.held = []
        self.dropped = 0
        return 0

    cdef int forget_stale(self) except -1:
        """Drops incidents whose end record was lost (the queue overflowed)."""
        cdef ovm_incident probe
        if len(self.reported) < _LS_REPORTED_MAX:
            return 0
        for (worker, slice_), runq in list(self.reported.items()):
            probe.worker, probe.slice, probe.runq = worker, slice_, runq
            if not ovm_sched_in_slice(&self.vm.sched, &probe):
                del self.reported[(worker, slice_)]
        return 0

    cdef str pid_text(self, uint64_t pid):
        return f"<0.{pid}.0>"

    cdef str spent(self, ovm_incident *inc):
        if inc.cpu_ns < 0:
            return "its CPU time cannot be measured here"
        return (f"{_duration(inc.cpu_ns)} of CPU, {_duration(inc.blocked_ns)} blocked in calls"
                + _house_note(inc))

    cdef str describe(self, ovm_incident *inc):
        """The full report of an overrun."""
        cdef VM vm = self.vm
        p = vm.procs.get(inc.pid)
        name = initial = ""
        if p is not None:
            with cython.critical_section(p):   # see "shared fields" (process.pxi)
                name = (<Process>p).name
                initial = (<Process>p).initial_call()
            name = f" registered as {name!r}" if name is not None else ""
        if inc.cpu_ns < 0:
            what = (f"has held its scheduler thread for {_duration(inc.wall_ns)} without awaiting "
                    f"(its CPU time cannot be measured here)")
        elif inc.kind == OVM_LS_RUNNING:
            what = f"has run for {_duration(inc.cpu_ns)} of CPU without awaiting"
            if inc.blocked_ns >= 100000:
                what += f", and was blocked for {_duration(inc.blocked_ns)} in {_call_name(inc.syscall)}"
        else:
            what = (f"has been blocked for {_duration(inc.blocked_ns)} in "
                    f"{_call_name(inc.syscall)}, which does not await")
            if inc.cpu_ns >= 100000:
                what += f", after {_duration(inc.cpu_ns)} of CPU"
        lines = [f"long_schedule: process {self.pid_text(inc.pid)}{name} {what} "
                 f"(slice_limit {_duration(vm.sched.slice_limit_ns)}{_house_note(inc)})"]
        if initial:
            lines.append(f"  initial call: {initial}")
        lines.extend(self.where(inc))
        if inc.queued == 0:
            waiting, verb = "the processes that wake up meanwhile", ""
        elif inc.queued == 1:
            waiting, verb = "the process queued behind it", "s"
        else:
            waiting, verb = f"the {inc.queued} processes queued behind it", ""
        if inc.handed_over:
            lines.append(f"  meanwhile: its run queue went to a spare scheduler thread, so {waiting} "
                         f"keep{verb} running")
        else:
            lines.append(f"  meanwhile: every spare scheduler thread is in use, so {waiting} "
                         f"wait{verb} (VM(max_spare_threads=...) sets how many there may be)")
        if initial.startswith(("otpvm._aio_tasks.", "otpvm.aio.")) and inc.kind == OVM_LS_RUNNING:
            fix = _LS_FIX_ASYNCIO
        else:
            fix = _LS_FIX_RUNNING if inc.kind == OVM_LS_RUNNING else _LS_FIX_BLOCKED
        lines.append(f"  fix: {fix}")
        return "\n".join(lines)

    cdef list where(self, ovm_incident *inc):
        """The innermost Python frames of the slice, if it still runs."""
        if not ovm_sched_in_slice(&self.vm.sched, inc):
            return []
        frame = _sys._current_frames().get(self.vm.idents[inc.worker])
        if not ovm_sched_in_slice(&self.vm.sched, inc):
            return []                   # it moved on: the frame may be another slice's
        lines = []
        while frame is not None and len(lines) < _LS_FRAMES:
            code = frame.f_code
            if code.co_filename == _THREADING_FILE:
                break                   # the scheduler thread's own frames
            source = _linecache.getline(code.co_filename, frame.f_lineno).strip()
            lines.append(f"  {'now at' if not lines else 'called from'}: {code.co_filename}:"
                         f"{frame.f_lineno} in {code.co_name}" + (f": {source}" if source else ""))
            frame = frame.f_back
        return lines
