# Share-nothing messages.
#
# A receiver must never be able to change what the sender holds.  Immutable
# values travel by reference (large bytes are never copied, like Erlang's
# refc binaries); built-in containers are copied here, element by element,
# reusing every immutable element; anything else goes through pickle.  Never
# copy.deepcopy: it is several times slower than pickle.
#
# One _Copier copies one message.  Its memo (by id) makes what the message
# shares shared in the copy too, and cycles safe: a mutable container's copy
# is memoized before its contents are copied; an immutable one's is built
# from its copied contents, so a cycle back to it (necessarily through a
# mutable container) copies it once more there, and that copy is the one.
#
# The objects pickle copies go through one pickler and one unpickler per
# message, whose memos last as long as the message's copy, so an object
# reached from two pickled objects is copied once.  The pickler hands back to
# the copier's memo everything the copier already copied, and passes by
# reference what travels by reference; an object pickle copied first and the
# copier meets later is looked up by pickling it again, which the pickler's
# memo turns into a reference to its copy.  Sharing is thus kept across the
# whole message.
#
# A frozen dataclass is rebuilt from what its instance stores, as pickle
# does, never through __init__: __post_init__ may not be idempotent, and
# init=False fields cannot be passed to it.
#
# Recursion is bounded: past _MAX_DEPTH levels the rest of a branch is
# copied by a loop with a stack of its own (_Copier.copy_deep), so messages
# of any depth are copied without risk for the C stack.  Only pickle has a
# depth limit, Python's recursion limit, for the objects it copies.

from cpython.object cimport PyTypeObject

import copyreg as _copyreg
import enum as _enum
import io as _io
import pickle as _pickle
import sys as _sys
import types as _types

from otpvm.terms import Shared as _Shared

cdef object _Enum = _enum.Enum
cdef object _object_new = object.__new__
cdef object _object_setattr = object.__setattr__
cdef object _slotnames = _copyreg._slotnames
# Functions travel by reference, like Erlang funs (sys.replace_state takes
# one): code is immutable; a closure over mutable data would share it, which
# the README warns about.
# otpvm.Shared is the sender's explicit "share this object".
cdef set _ATOMIC_TYPES = {
    type(None), bool, int, float, complex, str, bytes, range, type(Ellipsis),
    _types.FunctionType, _types.BuiltinFunctionType, _Shared,
}

# Classes of old versions of hot-loaded modules (otpvm.code keeps this set):
# their instances are refused at send, since the receiver's code has other
# classes by those names.  Empty unless an upgrade happened.
cdef object _stale_types = ()


def _set_stale_types(types):
    """otpvm.code only: the classes of old module versions (a WeakSet)."""
    global _stale_types
    _stale_types = types


cdef int _refuse_stale(type t) except -1:
    from otpvm.terms import StaleClassError
    raise StaleClassError(
        f"cannot send an instance of {t.__module__}.{t.__qualname__}: that class is from an "
        f"old version of {t.__module__} (hot code upgrade, otpvm.code), and receivers run the "
        "current one; send plain data, or convert the value to the current class first")


DEF _MAX_DEPTH = 100        # recursion depth, then copy_deep's loop takes over
DEF _BIG_STR = 256          # str and bytes this long travel by reference out of pickle too

# What the copier does with an object.
cdef enum:
    _SAME = 0               # travels by reference
    _LIST = 1
    _DICT = 2
    _SET = 3
    _BYTEARRAY = 4
    _TUPLE = 5
    _FROZENSET = 6
    _NAMEDTUPLE = 7
    _FROZEN_DC = 8          # a frozen dataclass
    _PICKLE = 9


class _HandToPickle(Exception):
    """Internal: a cycle runs through an object being pickled and an
    immutable container whose copy is not finished: the whole message goes
    through pickle, which copes with it."""


cdef object _IN_PROGRESS = object()    # memo: an immutable container being copied
cdef object _PENDING = object()        # copy_deep: the copy comes when its frame ends
cdef object _MISSING = object()


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


cdef int _kind(object obj, type t) except -1:
    if t is list:
        return _LIST
    if t is dict:
        return _DICT
    if t is tuple:
        return _TUPLE
    if t is set:
        return _SET
    if t is frozenset:
        return _FROZENSET
    if t is bytearray:
        return _BYTEARRAY
    if _atomic(obj) or t in _ATOMIC_TYPES:
        return _SAME
    if _stale_types and t in _stale_types:
        _refuse_stale(t)
    if isinstance(obj, tuple) and (t in _SYSTEM_TUPLES or hasattr(t, "_fields")):
        return _NAMEDTUPLE                  # Down, Exit, From...: immutable if its items are
    if isinstance(obj, _Enum) or t is TimerRef or isinstance(obj, type):
        return _SAME
    params = getattr(t, "__dataclass_params__", None)
    if params is not None and params.frozen and t.__new__ is _object_new:
        return _FROZEN_DC
    if t.__name__ == "ndarray" and not obj.flags.writeable:
        return _SAME
    return _PICKLE


cdef object copy_msg(object obj):
    """Returns obj itself if it is immutable, else an independent copy."""
    if _atomic(obj):
        return obj
    if type(obj) is tuple and _flat(<tuple>obj, True):
        return obj                          # the usual message: a flat tuple
    cdef _Copier copier = _Copier.__new__(_Copier)
    copier.memo = {}
    try:
        return copier.copy(obj, 0)
    except _HandToPickle:
        return _Pickling(None).copy(obj)


@cython.final
@cython.no_gc                   # nothing it holds can refer to it
@cython.freelist(4)
cdef class _Copier:
    """Copies one message (see the top of this file)."""

    cdef dict memo              # id(original) -> its copy, or _IN_PROGRESS
    cdef _Pickling pickling     # None until the message holds something to pickle
    cdef bint cycles            # whether a cycle came back to an immutable container
    cdef bint compact           # _compact: what pickle would copy is kept as it is

    cdef object copy(self, object obj, int depth):
        cdef type t = type(obj)
        if _atomic(obj) or t in _ATOMIC_TYPES:
            return obj
        key = id(obj)
        found = self.memo.get(key)
        if found is not None:
            if found is not _IN_PROGRESS:
                return found
            self.cycles = True
        if depth > _MAX_DEPTH:
            return self.copy_deep(obj)
        if self.pickling is not None and key in self.pickling.ids.copied:
            return self.pickled(obj, key)
        if t is list:
            new_list = []
            self.memo[key] = new_list
            for x in <list>obj:
                new_list.append(self.copy(x, depth + 1))
            return new_list
        if t is dict:
            new_dict = {}
            self.memo[key] = new_dict
            for k, v in (<dict>obj).items():
                new_dict[self.copy(k, depth + 1)] = self.copy(v, depth + 1)
            return new_dict
        if t is tuple:
            self.memo[key] = _IN_PROGRESS
            return self.settle(key, self.copy_tuple(<tuple>obj, depth))
        return self.copy_other(obj, t, key, depth)

    cdef object copy_other(self, object obj, type t, object key, int depth):
        cdef int kind = _kind(obj, t)
        if kind == _SAME:
            return obj
        if kind == _SET:
            new_set = set()
            self.memo[key] = new_set
            for x in <set>obj:
                new_set.add(self.copy(x, depth + 1))
            return new_set
        if kind == _BYTEARRAY:
            copied = bytearray(obj)
            self.memo[key] = copied
            return copied
        if kind == _PICKLE:
            return obj if self.compact else self.pickled(obj, key)
        self.memo[key] = _IN_PROGRESS
        if kind == _NAMEDTUPLE:
            plain = tuple(obj)
            copied = self.copy_tuple(plain, depth)
            if copied is not plain:
                copied = t(*copied)
            else:
                copied = obj
        else:                               # a frozenset or a frozen dataclass
            parts = _parts_of(obj, kind)
            copied = parts.rebuild(self.copy_list(parts.values, depth))
        return self.settle(key, copied)

    cdef object settle(self, object key, object copied):
        """Memoizes the copy of an immutable container, unless a cycle back
        to it (through a mutable one) already finished a copy of it: the
        rest of the copy refers to that one."""
        if self.cycles:
            done = self.memo[key]
            if done is not _IN_PROGRESS:
                return done
        self.memo[key] = copied
        return copied

    cdef object copy_tuple(self, tuple items, int depth):
        cdef Py_ssize_t i, n = len(items)
        cdef list out = None
        for i in range(n):
            item = items[i]
            copied = self.copy(item, depth + 1)
            if copied is not item and out is None:
                out = list(items[:i])
            if out is not None:
                out.append(copied)
        return items if out is None else tuple(out)

    cdef list copy_list(self, list items, int depth):
        """The copies of items, or None if every one is the item itself."""
        cdef Py_ssize_t i, n = len(items)
        cdef list out = None
        for i in range(n):
            item = items[i]
            copied = self.copy(item, depth + 1)
            if copied is not item and out is None:
                out = items[:i]
            if out is not None:
                out.append(copied)
        return out

    cdef object pickled(self, object obj, object key):
        """The copy pickle makes of obj, memoized."""
        if self.pickling is None:
            self.pickling = _Pickling(self.memo)
        copied = self.pickling.copy(obj)
        self.memo[key] = copied
        return copied

    cdef object copy_deep(self, object root):
        """Copies root as copy() would, without recursion: a stack of frames,
        one per container being copied.  A mutable container's copy is made
        and memoized at once and filled by its frame; an immutable one's
        frame gathers the copies of its items and hands the container it
        builds to the frame below, the one that met it."""
        cdef list stack = []
        cdef _Frame frame
        result = self.visit(root, stack)
        while stack:
            frame = <_Frame>stack[len(stack) - 1]
            if frame.pos < len(frame.items):
                item = frame.items[frame.pos]
                frame.pos += 1
                copied = self.visit(item, stack)
                if copied is not _PENDING:
                    frame.take(copied)
                continue
            stack.pop()
            if frame.kind < _TUPLE:
                continue                    # a mutable container, already in place
            copied = self.settle(id(frame.obj), frame.finish())
            if stack:
                (<_Frame>stack[len(stack) - 1]).take(copied)
            else:
                result = copied
        return result

    cdef object visit(self, object obj, list stack):
        """copy_deep's copy(): the copy of obj, or _PENDING with a frame
        pushed that will hand it over."""
        cdef type t = type(obj)
        if _atomic(obj) or t in _ATOMIC_TYPES:
            return obj
        key = id(obj)
        found = self.memo.get(key)
        if found is not None:
            if found is not _IN_PROGRESS:
                return found
            self.cycles = True
        if self.pickling is not None and key in self.pickling.ids.copied:
            return self.pickled(obj, key)
        cdef int kind = _kind(obj, t)
        if kind == _SAME:
            return obj
        if kind == _PICKLE:
            return obj if self.compact else self.pickled(obj, key)
        if kind == _BYTEARRAY:
            copied = bytearray(obj)
            self.memo[key] = copied
            return copied
        cdef _Frame frame = _Frame.__new__(_Frame)
        frame.kind = kind
        frame.obj = obj
        if kind == _LIST:
            frame.new = []
            frame.items = obj
        elif kind == _DICT:
            frame.new = {}
            frame.items = [x for pair in (<dict>obj).items() for x in pair]
        elif kind == _SET:
            frame.new = set()
            frame.items = list(obj)
        else:
            frame.parts = _parts_of(obj, kind)
            frame.items = frame.parts.values
            frame.copies = []
        stack.append(frame)
        if kind < _TUPLE:
            self.memo[key] = frame.new
            return frame.new
        self.memo[key] = _IN_PROGRESS
        return _PENDING


@cython.final
@cython.no_gc                   # held only by copy_deep's stack
cdef class _Frame:
    """copy_deep's record of one container being copied."""

    cdef int kind
    cdef object obj             # the original
    cdef object new             # a mutable container's copy, being filled
    cdef list items             # what to copy: items, or a dict's keys and values in turn
    cdef Py_ssize_t pos         # the next of items
    cdef object key             # a dict's key, copied, while its value is
    cdef _Parts parts           # an immutable container's contents
    cdef list copies            # ... and their copies so far

    cdef int take(self, object copied) except -1:
        if self.kind == _LIST:
            (<list>self.new).append(copied)
        elif self.kind == _DICT:
            if self.pos % 2:
                self.key = copied
            else:
                (<dict>self.new)[self.key] = copied
                self.key = None
        elif self.kind == _SET:
            (<set>self.new).add(copied)
        else:
            self.copies.append(copied)
        return 0

    cdef object finish(self):
        """An immutable container's copy (itself if nothing in it changed)."""
        cdef Py_ssize_t i
        for i in range(len(self.items)):
            if self.copies[i] is not self.items[i]:
                return self.parts.rebuild(self.copies)
        return self.obj


cdef object _slot_names(type t):
    """copyreg._slotnames(t), as pickle gets it: from the cache it keeps in
    the class's own __dict__ once made (the class attribute could be a base
    class's)."""
    names = (<dict>(<PyTypeObject *>t).tp_dict).get("__slotnames__")
    return names if names is not None else _slotnames(t)


cdef _Parts _parts_of(object obj, int kind):
    cdef _Parts parts = _Parts.__new__(_Parts)
    parts.obj = obj
    parts.kind = kind
    if kind == _FROZEN_DC:
        parts.dataclass_attributes()
    else:
        parts.values = list(obj)
    return parts


@cython.final
@cython.no_gc                   # held only while its container is copied
@cython.freelist(8)
cdef class _Parts:
    """The contents of an immutable container, and how to build one like it
    from copies of them."""

    cdef object obj
    cdef int kind
    cdef list values
    cdef list names             # a frozen dataclass's attributes
    cdef Py_ssize_t in_dict     # ... the first in_dict of them from its __dict__, the rest slots

    cdef int dataclass_attributes(self) except -1:
        """What a frozen dataclass instance stores, as pickle sees it: its
        __dict__ (fields, init=False fields, whatever __post_init__ set),
        then its slots that hold a value (slots=True).  InitVar and ClassVar
        pseudo-fields are not stored, so not copied."""
        self.names = []
        self.values = []
        attrs = getattr(self.obj, "__dict__", None)
        if type(attrs) is dict:
            for name, value in (<dict>attrs).items():
                self.names.append(name)
                self.values.append(value)
        self.in_dict = len(self.names)
        for name in _slot_names(type(self.obj)):
            value = getattr(self.obj, name, _MISSING)
            if value is not _MISSING:
                self.names.append(name)
                self.values.append(value)
        return 0

    cdef object rebuild(self, list copies):
        """A container like obj holding copies (obj itself if copies is None).
        A frozen dataclass is made as pickle makes one: without calling its
        __init__ or __post_init__, which could refuse the copy or change it."""
        if copies is None:
            return self.obj
        if self.kind == _TUPLE:
            return tuple(copies)
        if self.kind == _FROZENSET:
            return frozenset(copies)
        if self.kind == _NAMEDTUPLE:
            return type(self.obj)(*copies)
        cdef Py_ssize_t i
        new = _object_new(type(self.obj))
        if self.in_dict:
            attrs = new.__dict__
            for i in range(self.in_dict):
                attrs[self.names[i]] = copies[i]
        for i in range(self.in_dict, len(self.names)):
            _object_setattr(new, self.names[i], copies[i])
        return new


class _PicklerSubclass(_pickle.Pickler):
    pass


class _UnpicklerSubclass(_pickle.Unpickler):
    pass


cdef tuple _pickle_classes():
    """The fastest pickler and unpickler classes that take persistent_id and
    persistent_load as instance attributes: the C ones up to Python 3.12,
    subclasses of them since 3.13 (which are slower to make)."""
    try:
        _pickle.Pickler(_io.BytesIO()).persistent_id = id
        _pickle.Unpickler(_io.BytesIO()).persistent_load = id
        return _pickle.Pickler, _pickle.Unpickler
    except AttributeError:
        return _PicklerSubclass, _UnpicklerSubclass


_Pickler, _Unpickler = _pickle_classes()


@cython.final
cdef class _Pickling:
    """One pickler and one unpickler for what pickle copies in one message.

    Both keep their memos from one object to the next: an object met again,
    in another pickled object or when the copier asks for it, is a reference
    to its copy.  Objects pickled one after the other go through one stream:
    each dump is loaded at once, in the same order."""

    cdef object stream
    cdef object pickler
    cdef object unpickler
    cdef _Ids ids

    def __cinit__(self, dict memo):
        self.stream = _io.BytesIO()
        self.ids = _Ids(memo)
        self.pickler = _Pickler(self.stream, _pickle.HIGHEST_PROTOCOL)
        self.pickler.persistent_id = self.ids.persistent_id
        self.unpickler = _Unpickler(self.stream)
        self.unpickler.persistent_load = self.ids.objects.__getitem__

    cdef object copy(self, object obj):
        start = self.stream.tell()
        try:
            self.pickler.dump(obj)
            self.stream.seek(start)
            return self.unpickler.load()
        except _HandToPickle:
            raise
        except RecursionError as exc:
            raise TypeError(
                f"cannot send a {type(obj).__qualname__}: it is nested too deeply for pickle, "
                f"which copies it (Python's recursion limit, sys.getrecursionlimit(), is "
                f"{_sys.getrecursionlimit()}; lists, dicts, sets, tuples and frozen "
                f"dataclasses are copied at any depth)") from exc
        except Exception as exc:
            raise TypeError(
                f"cannot send a {type(obj).__qualname__}: messages must be "
                f"immutable values, built-in containers, or picklable objects "
                f"({exc})") from exc


@cython.final
cdef class _Ids:
    """The pickler's persistent ids: what pickle must not copy itself.
    (Apart from _Pickling, which holds the pickler, so that no cycle forms.)"""

    cdef dict memo              # the copier's (None when pickle copies the whole message)
    cdef list objects           # what each persistent id stands for
    cdef set copied             # ids of the objects pickle copied

    def __cinit__(self, dict memo):
        self.memo = memo
        self.objects = []
        self.copied = set()

    def persistent_id(self, obj):
        """An index in objects for what travels by reference or was copied
        already; None for pickle to copy it."""
        cdef type t = type(obj)
        if t is str or t is bytes:
            return self.refer(obj) if len(obj) >= _BIG_STR else None
        if t is int or t is float or t is bool or obj is None:
            return None
        key = id(obj)
        if self.memo is not None:
            found = self.memo.get(key)
            if found is _IN_PROGRESS:
                raise _HandToPickle()
            if found is not None:
                return self.refer(found)
        cdef int kind = _kind(obj, t)
        if kind == _SAME or ((kind == _TUPLE or kind == _NAMEDTUPLE) and _flat(<tuple>obj, True)):
            return self.refer(obj)
        self.copied.add(key)
        return None

    cdef object refer(self, object obj):
        self.objects.append(obj)
        return len(self.objects) - 1


def register_handle_type(cls):
    """Makes instances of cls travel by reference in messages: handles to
    something the VM owns (sockets, like Erlang's ports), which are
    identifiers rather than data."""
    if not isinstance(cls, type):
        raise TypeError(f"register_handle_type needs a class, not {cls!r}")
    _ATOMIC_TYPES.add(cls)
    return cls


def _compact(obj):
    """Hibernation's copy of a behaviour's state: its built-in containers
    (dict, list, set, bytearray, and the tuples holding them) rebuilt at
    their exact size, as Erlang's hibernate copies a process's live data
    into a heap that just fits it.  A dict that once held a million keys
    keeps a table for a million until it is rebuilt.  Any other object is
    kept as it is (never pickled), and what the state shares stays shared.
    Returns obj itself when there is nothing to rebuild."""
    if _atomic(obj):
        return obj
    cdef _Copier copier = _Copier.__new__(_Copier)
    copier.memo = {}
    copier.compact = True
    return copier.copy(obj, 0)


def copy_message(obj):
    """The copy a receiver would get of obj (obj itself if immutable)."""
    return copy_msg(obj)
