/* Small CPython helpers for the gen fast path (_gen.pxi). */
#ifndef OTPVM_GEN_H
#define OTPVM_GEN_H

#include <Python.h>

/* tuple.__new__(t, (a, b)) for a tuple subclass such as a named tuple,
 * without the intermediate tuple or a Python-level __new__: what
 * tuple_subtype_new does, for two items. */
static PyObject *ovm_tuple2_of(PyTypeObject *t, PyObject *a, PyObject *b) {
    PyObject *o = t->tp_alloc(t, 2);
    if (o == NULL)
        return NULL;
    Py_INCREF(a);
    PyTuple_SET_ITEM(o, 0, a);
    Py_INCREF(b);
    PyTuple_SET_ITEM(o, 1, b);
    if (PyType_IS_GC(t) && !PyObject_GC_IsTracked(o))
        PyObject_GC_Track(o);
    return o;
}

#endif
