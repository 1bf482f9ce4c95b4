# Big mailboxes are freed by a thread of their own.
#
# A process that ends with millions of messages queued would otherwise free
# them all at the end of its last slice: 109 million took 1.65 s, while its
# scheduler thread ran nothing else (and, with a GIL, nothing else ran).
# From _BIG_MAILBOX messages on, release() hands its mailbox to the VM's
# reaper thread (VM.dispose), which frees _REAP_BATCH nodes at a time and
# lets go of the GIL between batches, then gives the memory back to the
# operating system.  The process is gone meanwhile: its Downs and exit
# signals went out first.  A link or monitor signal still queued in such a
# mailbox is answered when the reaper reaches it.

DEF _REAP_BATCH = 16384
cdef size_t _BIG_MAILBOX = 65536


cdef ovm_node *_answer_queued(VM vm, Pid pid, object reason, uint32_t q, set told_links,
                              dict told_monitors, ovm_node *node,
                              size_t *limit) except? NULL:
    """Frees nodes from `node` on, at most *limit of them (which it lowers
    by as many), that came too late for a process that ended with
    `reason`: a link or monitor among them is answered at once, unless it
    was told already.  Returns the rest."""
    cdef ovm_node *nxt
    while node != NULL and limit[0] > 0:
        limit[0] -= 1
        nxt = node.next
        kind = node.kind
        payload = _take_payload(node)
        ovm_node_free(node)
        if kind == OVM_SIG_LINK:
            if told_links is None or payload not in told_links:
                vm.deliver_to(<Pid>payload, OVM_SIG_EXIT_LINKED, (pid, reason), q)
        elif kind == OVM_SIG_MONITOR and (told_monitors is None
                                          or payload[0] not in told_monitors):
            vm.deliver_to(<Pid>payload[1], OVM_SIG_DOWN, _Down(payload[0], payload[2], reason), q)
        node = nxt
    return node


@cython.final
cdef class _Garbage:
    """The mailbox of a process that ended, for the reaper to free: what
    was still in its inbox (links and monitors there are answered), then
    its queue of messages."""

    cdef VM vm
    cdef Pid pid
    cdef object reason
    cdef uint32_t q
    cdef set told_links
    cdef dict told_monitors
    cdef ovm_node *inbox
    cdef ovm_node *messages
    cdef size_t count               # nodes left (VM.mailbox_garbage)

    def __dealloc__(self):
        _free_nodes(self.inbox)     # only if the reaper never got to them
        _free_nodes(self.messages)

    cdef size_t free_some(self, size_t limit) except? 0:
        """Frees up to `limit` nodes; returns how many."""
        cdef size_t left = limit
        self.inbox = _answer_queued(self.vm, self.pid, self.reason, self.q, self.told_links,
                                    self.told_monitors, self.inbox, &left)
        self.messages = _answer_queued(self.vm, self.pid, self.reason, self.q, None, None,
                                       self.messages, &left)
        self.count -= min(self.count, limit - left)
        return limit - left

    cdef bint empty(self):
        return self.inbox == NULL and self.messages == NULL
