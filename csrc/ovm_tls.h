/* The process a scheduler thread is running right now, as an opaque
 * pointer (the layer above keeps the object alive while it runs).
 * Included by exactly one translation unit, the Cython VM module: a second
 * includer would get its own copy of the variable. */
#ifndef OVM_TLS_H
#define OVM_TLS_H
static _Thread_local void *ovm_current;
static inline void *ovm_get_current(void) { return ovm_current; }
static inline void ovm_set_current(void *p) { ovm_current = p; }
#endif
