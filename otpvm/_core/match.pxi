# Receive patterns.
#
#   None            any message
#   a type          isinstance
#   a tuple         element by element: ANY matches anything, a type inside
#                   matches by isinstance, a nested tuple recurses, other
#                   values by equality; a tuple subclass (Down, Exit) also
#                   requires the message to be of that class
#   AnyOf(...)      any of the alternatives
#   a callable      a predicate
#   anything else   equality

from otpvm.terms import ANY as _ANY_obj, AnyOf as _AnyOf_cls, Down as _Down_cls, \
    Exit as _Exit_cls

cdef object _ANY = _ANY_obj
cdef type _AnyOf = _AnyOf_cls
cdef frozenset _SYSTEM_TUPLES = frozenset({_Down_cls, _Exit_cls})


cdef bint _match_element(object pattern, object msg) except -1:
    if pattern is _ANY:
        return True
    if isinstance(pattern, type):
        return isinstance(msg, pattern)
    if isinstance(pattern, tuple):
        return _match_tuple(<tuple>pattern, msg)
    return pattern == msg


cdef bint _match_tuple(tuple pattern, object msg) except -1:
    cdef Py_ssize_t i, n
    cdef type pt = type(pattern)
    if pt is not tuple and not isinstance(msg, pt):
        return False
    if not isinstance(msg, tuple):
        return False
    n = len(pattern)
    if len(<tuple>msg) != n:
        return False
    for i in range(n):
        if not _match_element(pattern[i], (<tuple>msg)[i]):
            return False
    return True


@cython.final
cdef class _CallReply:
    """A gen call's receive, ``AnyOf((ref, ANY), Down(ref, ANY, ANY))``,
    matched without walking the generic pattern (see _gen.pxi)."""

    cdef Ref ref

    def __repr__(self):
        return f"AnyOf(({self.ref!r}, ANY), Down({self.ref!r}, ANY, ANY))"


cdef bint _match_call_reply(Ref ref, object msg) except -1:
    if not isinstance(msg, tuple):
        return False
    n = len(<tuple>msg)
    if n == 2:
        return ref == (<tuple>msg)[0]
    return n == 3 and isinstance(msg, _Down_cls) and ref == (<tuple>msg)[0]


cdef bint matches(object pattern, object msg) except -1:
    if pattern is None or pattern is _ANY:      # receive(ANY): anything, as inside a tuple
        return True
    if type(pattern) is _CallReply:
        return _match_call_reply((<_CallReply>pattern).ref, msg)
    if type(pattern) is _AnyOf:
        for alternative in <tuple>pattern:
            if matches(alternative, msg):
                return True
        return False
    if isinstance(pattern, type):
        return isinstance(msg, pattern)
    if isinstance(pattern, tuple):
        return _match_tuple(<tuple>pattern, msg)
    if callable(pattern):
        return bool(pattern(msg))
    return pattern == msg


cdef bint mentions(object pattern, Ref ref):
    """Whether a pattern can only match messages that carry `ref`.

    Such a receive may start scanning at the mailbox marker set when `ref`
    was made (OTP's receive-marker optimisation)."""
    if pattern is ref:
        return True
    if type(pattern) is _CallReply:
        return (<_CallReply>pattern).ref is ref
    if type(pattern) is _AnyOf:
        for alternative in <tuple>pattern:
            if not mentions(alternative, ref):
                return False
        return len(<tuple>pattern) > 0
    if isinstance(pattern, tuple):
        for item in <tuple>pattern:
            if item is ref:
                return True
    return False


def _matches(pattern, msg):
    """Whether msg matches a receive pattern (None: anything), for code
    that keeps messages outside a process's mailbox (otpvm.aio)."""
    return matches(pattern, msg)
