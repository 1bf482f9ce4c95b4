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

#if PY_VERSION_HEX >= 0x030D0000
/* 3.13 declares it only in an internal header, yet still exports it: clang
 * rejects the implicit declaration (gcc 12 only warned). */
PyAPI_FUNC(int) _PyGen_SetStopIterationValue(PyObject *);
#endif

typedef int (*ovm_advance_fn)(PyObject *self, PyObject **out);
static ovm_advance_fn ovm_advance;

static PyObject *ovm_await_iternext(PyObject *self) {
    PyObject *out = NULL;
    int r = ovm_advance(self, &out);
    if (r < 0)
        return NULL;
    if (r == 1)
        return out;
    if (out != Py_None)
        _PyGen_SetStopIterationValue(out);
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
