# Share-nothing messages.
#
# A receiver must never be able to change what the sender holds.  Immutable
# values travel by reference (large bytes are never copied, like Erlang's
# refc binaries); built-in containers are copied here, element by element,
# reusing every immutable element; anything else goes through pickle.  Never
# copy.deepcopy: it is several times slower than pickle.

import enum as _enum
import pickle as _pickle
import types as _types

cdef object _Enum = _enum.Enum
# Functions travel by reference, like Erlang funs (sys.replace_state takes
# one): code is immutable; a closure over mutable data would share it, which
# the README warns about.
cdef frozenset _ATOMIC_TYPES = frozenset({
    type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis),
    _types.FunctionType, _types.BuiltinFunctionType,
})


cdef object copy_msg(object obj):
    """Returns obj itself if it is immutable, else an independent copy."""
    cdef type t = type(obj)
    if t is str or t is int or t is Pid or t is Ref or obj is None or t is float \
            or t is bytes or t is bool:
        return obj
    if t is tuple:
        return _copy_tuple(<tuple>obj)
    if t is list:
        return [copy_msg(x) for x in <list>obj]
    if t is dict:
        return {copy_msg(k): copy_msg(v) for k, v in (<dict>obj).items()}
    if t in _ATOMIC_TYPES:
        return obj
    if t is set:
        return {copy_msg(x) for x in <set>obj}
    if t is frozenset:
        return _copy_frozenset(<frozenset>obj)
    if t is bytearray:
        return bytearray(obj)
    if isinstance(obj, tuple) and (t in _SYSTEM_TUPLES or hasattr(t, "_fields")):
        # A named tuple (Down, Exit, From, ...): immutable if its items are.
        plain = tuple(obj)
        copied = _copy_tuple(plain)
        return obj if copied is plain else t(*copied)
    if isinstance(obj, _Enum) or t is TimerRef or isinstance(obj, type):
        return obj
    if t.__name__ == "ndarray" and not obj.flags.writeable:
        return obj
    return _pickle_copy(obj)


cdef object _copy_tuple(tuple items):
    cdef Py_ssize_t i, n = len(items)
    cdef list out = None
    for i in range(n):
        item = items[i]
        copied = copy_msg(item)
        if copied is not item and out is None:
            out = list(items[:i])
        if out is not None:
            out.append(copied)
    return items if out is None else tuple(out)


cdef object _copy_frozenset(frozenset items):
    copied = [copy_msg(x) for x in items]
    for a, b in zip(copied, items):
        if a is not b:
            return frozenset(copied)
    return items


cdef object _pickle_copy(object obj):
    try:
        return _pickle.loads(_pickle.dumps(obj, _pickle.HIGHEST_PROTOCOL))
    except Exception as exc:
        raise TypeError(
            f"cannot send a {type(obj).__qualname__}: messages must be "
            f"immutable values, built-in containers, or picklable objects "
            f"({exc})") from exc
