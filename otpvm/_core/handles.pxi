# Pid and Ref: small immutable identifiers that travel by reference.



@cython.no_gc
cdef class Pid:
    """The identifier of a process, like Erlang's ``<0.42.0>``.

    Pids are immutable, hashable and ordered.  Holding a pid does not keep
    the process alive; sending to the pid of a dead process does nothing.
    A pid names its process through the VM's pid table rather than holding
    it: no reference cycle, so neither pids nor processes need the cyclic
    garbage collector (a pid refers only to its VM and an int).
    """

    cdef readonly uint64_t id
    cdef object key                 # id as the pid table's key
    cdef VM vm

    def __repr__(self):
        return f"<0.{self.id}.0>"

    def __hash__(self):
        return <Py_hash_t>(self.id & <uint64_t>0x3fffffffffffffffULL)

    def __richcmp__(self, other, int op):
        if not isinstance(other, Pid):
            return NotImplemented
        a = self.id
        b = (<Pid>other).id
        if op == 0: return a < b
        if op == 1: return a <= b
        if op == 2: return a == b
        if op == 3: return a != b
        if op == 4: return a > b
        return a >= b

    def __reduce__(self):
        return (_pid_from_id, (self.id,))


cdef Pid _new_pid(VM vm):
    cdef Pid pid = Pid.__new__(Pid)
    pid.id = ovm_next_id()
    pid.key = pid.id
    pid.vm = vm
    return pid


def _pid_from_id(uint64_t ident):
    """Rebuilds a pickled pid, bound to its process if it lives in this VM."""
    cdef Pid pid = Pid.__new__(Pid)
    cdef void *cur = ovm_get_current()
    pid.id = ident
    pid.key = ident
    if cur != NULL:
        pid.vm = (<Process>cur).vm
    return pid


cdef class Ref:
    """A unique reference, like Erlang's ``make_ref()``: never reused."""

    cdef readonly uint64_t id

    def __repr__(self):
        return f"#Ref<0.{self.id}>"

    def __hash__(self):
        return <Py_hash_t>(self.id & <uint64_t>0x3fffffffffffffffULL)

    def __richcmp__(self, other, int op):
        if op == 2:
            return isinstance(other, Ref) and (<Ref>other).id == self.id
        if op == 3:
            return not (isinstance(other, Ref) and (<Ref>other).id == self.id)
        return NotImplemented

    def __reduce__(self):
        return (_ref_from_id, (self.id,))


cdef Ref _new_ref():
    cdef Ref ref = Ref.__new__(Ref)
    ref.id = ovm_next_id()
    return ref


def _ref_from_id(uint64_t ident):
    cdef Ref ref = Ref.__new__(Ref)
    ref.id = ident
    return ref
