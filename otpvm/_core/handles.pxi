# Pid and Ref: small immutable identifiers that travel by reference.



@cython.no_gc
cdef class Pid:
    """The identifier of a process, like Erlang's ``<0.42.0>``.

    Pids are immutable, hashable and ordered.  Holding a pid does not keep
    the process alive; sending to the pid of a dead process does nothing.
    A pid names its process through the VM's pid table rather than holding
    it: no reference cycle, so neither pids nor processes need the cyclic
    garbage collector (a pid refers only to its VM and two ints).

    It prints as ``<Node.Id.0>``.  Node is the number of its VM among the
    VMs running in this OS process, lowest first: 0 while only one runs (as
    Erlang prints local pids), so two VMs running side by side print their
    pids apart; a number is given again once its VM has stopped.  Id is
    unique in the OS process, never reused, and is what pids compare by.

    A pid is only valid in the VM that made it.  Both VMs may live in one
    OS process, but they are separate systems, like two Erlang nodes that
    are not connected: ``send``, ``link``, ``monitor`` and ``exit`` to a pid
    of another VM, or of a VM that has stopped, raise ``ForeignPidError``
    (Erlang would drop a message to a node it cannot reach; here both sides
    are in one program, and such a pid is a bug: typically one carried
    from one ``otpvm.run`` to the next).  Pickled, a pid keeps its node;
    unpickled in a process, it belongs to that process's VM if the node is
    the same.
    """

    cdef readonly uint64_t id
    cdef readonly uint32_t node     # its VM's number when it was made
    cdef object key                 # id as the pid table's key
    cdef VM vm

    def __repr__(self):
        return f"<{self.node}.{self.id}.0>"

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
        return (_pid_from_id, (self.id, self.node))


cdef Pid _new_pid(VM vm):
    cdef Pid pid = Pid.__new__(Pid)
    pid.id = ovm_next_id()
    pid.key = pid.id
    pid.node = vm.node
    pid.vm = vm
    return pid


def _pid_from_id(uint64_t ident, node=None):
    """Rebuilds a pickled pid, bound to the calling process's VM if it has
    the pid's node (or the node is unknown: an older pickle), else to the
    running VM with that node, if any."""
    cdef Pid pid = Pid.__new__(Pid)
    cdef void *cur = ovm_get_current()
    cdef VM vm = (<Process>cur).vm if cur != NULL else None
    pid.id = ident
    pid.key = ident
    if node is None:
        pid.node = vm.node if vm is not None else 0
    else:
        pid.node = node
        if vm is None or vm.node != pid.node:
            vm = _running_vm(pid.node)
    pid.vm = vm
    return pid


cdef class Ref:
    """A unique reference, like Erlang's ``make_ref()``: never reused.

    ``is_alias`` is True for a ref made as an alias (``alias()``,
    ``monitor(pid, alias=True)``), active or not: ``gen.reply`` sends
    through the alias then, and as a plain message otherwise (OTP tells
    the two apart by the tag's shape, ``[alias|Ref]``)."""

    cdef readonly uint64_t id
    cdef readonly bint is_alias

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
        return (_ref_from_id, (self.id, self.is_alias))


cdef Ref _new_ref():
    cdef Ref ref = Ref.__new__(Ref)
    ref.id = ovm_next_id()
    return ref


def _ref_from_id(uint64_t ident, bint is_alias=False):
    cdef Ref ref = Ref.__new__(Ref)
    ref.id = ident
    ref.is_alias = is_alias
    return ref
