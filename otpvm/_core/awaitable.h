/* The C slots of otpvm's receive awaitable.
 *
 * Cython can only finish a `__next__` by raising StopIteration, which costs
 * an exception object plus a traceback frame on every receive.  These slots
 * finish an await the way CPython's own generators do: through `am_send`
 * (used by `await` on 3.11) returning PYGEN_RETURN with the value, and through
 * `tp_iternext` setting the StopIteration value without a traceback (3.12+,
 * whose `await` no longer calls am_send).  The work itself stays in Cython:
 * `advance` returns 0 with the result, 1 with a value to yield to the
 * scheduler, or -1 with an exception set. */
#ifndef OTPVM_AWAITABLE_H
#define OTPVM_AWAITABLE_H

#include <Python.h>

typedef int (*ovm_advance_fn)(PyObject *self, PyObject **out);
static ovm_advance_fn ovm_advance;

/* Finishes an iteration with `value` as StopIteration's value.  3.13 moved
 * _PyGen_SetStopIterationValue to an internal header (clang and GCC 14
 * refuse the implicit declaration), so 3.12+ does what CPython's own
 * helper does there, with public calls only: build the instance
 * explicitly, because PyErr_SetObject(PyExc_StopIteration, value) would
 * unpack a tuple value into arguments (StopIteration((1, 2)).value must
 * stay (1, 2)) and raise an exception value instead of wrapping it.  Same
 * cost as the helper; measured in the commit that made this change. */
static inline int ovm_set_stop_iteration(PyObject *value) {
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *exc = PyObject_CallOneArg(PyExc_StopIteration, value);
    if (exc == NULL)
        return -1;
    PyErr_SetRaisedException(exc);      /* steals exc */
    return 0;
#else
    return _PyGen_SetStopIterationValue(value);
#endif
}

static PyObject *ovm_await_iternext(PyObject *self) {
    PyObject *out = NULL;
    int r = ovm_advance(self, &out);
    if (r < 0)
        return NULL;
    if (r == 1)
        return out;
    if (out != Py_None)
        ovm_set_stop_iteration(out);    /* on failure, its error is set instead */
    Py_DECREF(out);
    return NULL;
}

static PySendResult ovm_await_send(PyObject *self, PyObject *arg, PyObject **presult) {
    int r = ovm_advance(self, presult);
    (void)arg;
    if (r < 0) {
        *presult = NULL;
        return PYGEN_ERROR;
    }
    return r == 1 ? PYGEN_NEXT : PYGEN_RETURN;
}

static int ovm_install_awaitable(PyTypeObject *type, ovm_advance_fn advance) {
    if (type->tp_as_async == NULL) {
        PyErr_SetString(PyExc_SystemError, "otpvm: the awaitable type has no async slots");
        return -1;
    }
    ovm_advance = advance;
    type->tp_iternext = ovm_await_iternext;
    type->tp_as_async->am_send = ovm_await_send;
    PyType_Modified(type);
    return 0;
}

#endif
