# Share-nothing messages.
#
# A receiver must never be able to change what the sender holds.  Immutable
# values travel by reference (large bytes are never copied, like Erlang's
# refc binaries); built-in containers are copied here, element by element,
# reusing every immutable element; anything else goes through pickle.  Never
# copy.deepcopy: it is several times slower than pickle.
#
# A memo (by id) makes shared parts of a message shared in the copy too, and
# makes cycles through lists and dicts safe.  A cycle through an immutable
# object, or a structure deeper than _MAX_DEPTH, is handed whole to pickle,
# which copes with both; recursion here never overflows the C stack.

import enum as _enum
import pickle as _pickle
import types as _types
from dataclasses import replace as _dataclass_replace

cdef object _Enum = _enum.Enum
# Functions travel by reference, like Erlang funs (sys.replace_state takes
# one): code is immutable; a closure over mutable data would share it, which
# the README warns about.
cdef set _ATOMIC_TYPES = {
    type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis),
    _types.FunctionType, _types.BuiltinFunctionType,
}

DEF _MAX_DEPTH = 100


class _HandToPickle(Exception):
    """Internal: this message needs pickle (a cycle through an immutable
    object, or too deep)."""


cdef object _IN_PROGRESS = object()


cdef inline bint _atomic(object obj):
    cdef type t = type(obj)
    return (t is str or t is int or t is Pid or t is Ref or obj is None or t is float
            or t is bytes or t is bool)


cdef bint _flat(tuple items, bint nested) except -1:
    """Whether a tuple holds only atomic values (and, one level down, named
    tuples such as From or Down holding only atomic values)."""
    cdef Py_ssize_t i
    for i in range(len(items)):
        item = items[i]
        if _atomic(item):
            continue
        if nested and isinstance(item, tuple) and (
                type(item) is tuple or type(item) in _SYSTEM_TUPLES
                or hasattr(type(item), "_fields")) and _flat(<tuple>item, False):
            continue
        return False
    return True


cdef object copy_msg(object obj):
    """Returns obj itself if it is immutable, else an independent copy."""
    if _atomic(obj):
        return obj
    if type(obj) is tuple and _flat(<tuple>obj, True):
        return obj                          # the usual message: a flat tuple
    try:
        return _copy(obj, {}, 0)
    except _HandToPickle:
        return _pickle_copy(obj)


cdef object _copy(object obj, dict memo, int depth):
    cdef type t = type(obj)
    if _atomic(obj) or t in _ATOMIC_TYPES:
        return obj
    if depth > _MAX_DEPTH:
        raise _HandToPickle()
    key = id(obj)
    found = memo.get(key)
    if found is not None:
        if found is _IN_PROGRESS:
            raise _HandToPickle()
        return found
    if t is list:
        new_list = []
        memo[key] = new_list
        for x in <list>obj:
            new_list.append(_copy(x, memo, depth + 1))
        return new_list
    if t is dict:
        new_dict = {}
        memo[key] = new_dict
        for k, v in (<dict>obj).items():
            new_dict[_copy(k, memo, depth + 1)] = _copy(v, memo, depth + 1)
        return new_dict
    memo[key] = _IN_PROGRESS
    copied = _copy_other(obj, t, memo, depth)
    memo[key] = copied
    return copied


cdef object _copy_other(object obj, type t, dict memo, int depth):
    if t is tuple:
        return _copy_tuple(<tuple>obj, memo, depth)
    if t is set:
        return {_copy(x, memo, depth + 1) for x in <set>obj}
    if t is frozenset:
        return _copy_frozenset(<frozenset>obj, memo, depth)
    if t is bytearray:
        return bytearray(obj)
    if isinstance(obj, tuple) and (t in _SYSTEM_TUPLES or hasattr(t, "_fields")):
        # A named tuple (Down, Exit, From, ...): immutable if its items are.
        plain = tuple(obj)
        copied = _copy_tuple(plain, memo, depth)
        return obj if copied is plain else t(*copied)
    if isinstance(obj, _Enum) or t is TimerRef or isinstance(obj, type):
        return obj
    params = getattr(t, "__dataclass_params__", None)
    if params is not None and params.frozen:
        return _copy_frozen_dataclass(obj, memo, depth)
    if t.__name__ == "ndarray" and not obj.flags.writeable:
        return obj
    return _pickle_copy(obj)


cdef object _copy_tuple(tuple items, dict memo, int depth):
    cdef Py_ssize_t i, n = len(items)
    cdef list out = None
    for i in range(n):
        item = items[i]
        copied = _copy(item, memo, depth + 1)
        if copied is not item and out is None:
            out = list(items[:i])
        if out is not None:
            out.append(copied)
    return items if out is None else tuple(out)


cdef object _copy_frozenset(frozenset items, dict memo, int depth):
    copied = [_copy(x, memo, depth + 1) for x in items]
    for a, b in zip(copied, items):
        if a is not b:
            return frozenset(copied)
    return items


cdef object _copy_frozen_dataclass(object obj, dict memo, int depth):
    """A frozen dataclass is immutable if its fields are: then it travels by
    reference; otherwise the copy gets copies of the mutable fields."""
    changed = {}
    for name in obj.__dataclass_fields__:
        value = getattr(obj, name)
        copied = _copy(value, memo, depth + 1)
        if copied is not value:
            changed[name] = copied
    return _dataclass_replace(obj, **changed) if changed else obj


cdef object _pickle_copy(object obj):
    try:
        return _pickle.loads(_pickle.dumps(obj, _pickle.HIGHEST_PROTOCOL))
    except (Exception, RecursionError) as exc:
        raise TypeError(
            f"cannot send a {type(obj).__qualname__}: messages must be "
            f"immutable values, built-in containers, or picklable objects "
            f"({exc})") from exc


def register_handle_type(cls):
    """Makes instances of cls travel by reference in messages: handles to
    something the VM owns (sockets, like Erlang's ports), which are
    identifiers rather than data."""
    if not isinstance(cls, type):
        raise TypeError(f"register_handle_type needs a class, not {cls!r}")
    _ATOMIC_TYPES.add(cls)
    return cls


def copy_message(obj):
    """The copy a receiver would get of obj (obj itself if immutable)."""
    return copy_msg(obj)
