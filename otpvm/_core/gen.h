/* Small CPython helpers for the gen fast path (_gen.pxi). */
#ifndef OTPVM_GEN_H
#define OTPVM_GEN_H

#include <Python.h>
#include <structmember.h>

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

/* The offset of a __slots__ member in its instances (from its member
 * descriptor), or -1 if `descr` is not one (or on a free-threaded build). */
static Py_ssize_t ovm_slot_offset(PyObject *descr) {
    PyMemberDef *m;
#ifdef Py_GIL_DISABLED
    /* Free-threaded builds read slots with atomic loads and conditional
     * increfs; leave that to the member descriptor (getattr). */
    (void)descr;
    (void)m;
    return -1;
#endif
    if (Py_TYPE(descr) != &PyMemberDescr_Type)
        return -1;
    m = ((PyMemberDescrObject *)descr)->d_member;
    if (m->type != T_OBJECT_EX || (m->flags & READONLY))
        return -1;
    return m->offset;
}

/* The slot at `offset` of obj (borrowed), or NULL when it is empty.  Only
 * for an obj of the exact type the offset was read from. */
static inline PyObject *ovm_slot_peek(PyObject *obj, Py_ssize_t offset) {
    return *(PyObject **)((char *)obj + offset);
}

/* The code server's epoch (otpvm/code.py): bumped by every switch of a
 * module's current version.  A behaviour compares it with the epoch it last
 * saw at each message: one relaxed load, atomic so that free-threaded
 * builds read a whole value. */
static long ovm_code_epoch_value = 0;

static inline long ovm_code_epoch(void) {
    return __atomic_load_n(&ovm_code_epoch_value, __ATOMIC_ACQUIRE);
}

static inline long ovm_code_epoch_bump(void) {
    return __atomic_add_fetch(&ovm_code_epoch_value, 1, __ATOMIC_ACQ_REL);
}

#endif
