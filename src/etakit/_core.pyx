# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin shim between the Python optimizers and the C kernels.

A ``Plan`` holds the C descriptors of one optimizer's tensors (parameter and
state pointers, step counts, hyperparameters per group).  ``Plan.run`` takes
the gradient list, fills in the gradient pointers and makes one C call for
every tensor with the GIL released.

The Python layer validates everything.  Here there is only a mechanical
pre-flight on each gradient (array, dtype, shape, contiguity, no overlap with
a buffer the step writes), done with numpy's C API rather than typed
memoryviews because acquiring a memoryview costs more than a whole step on a
small array.  Any gradient that fails it is reported by index and the Python
layer explains why; nothing is written in that case.
"""
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uintptr_t
from libc.stdlib cimport malloc, calloc, free, qsort
from libc.string cimport memset
from cpython.ref cimport PyObject

cimport numpy as cnp

cnp.import_array()

cdef extern from "etakit.h" nogil:
    ctypedef struct etk_tensor:
        void *param
        const void *grad
        void *state[3]
        size_t n
        int64_t step
        uint32_t group
        uint8_t dtype
        uint8_t state_dtype
        uint16_t flags

    ctypedef struct etk_sgd_hp:
        double lr, momentum, dampening, weight_decay
        int nesterov, maximize
    ctypedef struct etk_adam_hp:
        double lr, beta1, beta2, eps, weight_decay
        int amsgrad, maximize, decoupled_weight_decay
    ctypedef struct etk_rmsprop_hp:
        double lr, alpha, eps, weight_decay, momentum
        int centered, maximize
    ctypedef struct etk_adagrad_hp:
        double lr, lr_decay, weight_decay, eps
        int maximize

    int ETK_FLOAT32, ETK_FLOAT64
    unsigned ETK_FRESH_STATE

    const char *etk_strerror(int status)
    int etk_sgd_multi(const etk_tensor *t, size_t count, const etk_sgd_hp *hps, size_t nhps)
    int etk_adam_multi(const etk_tensor *t, size_t count, const etk_adam_hp *hps, size_t nhps)
    int etk_rmsprop_multi(const etk_tensor *t, size_t count, const etk_rmsprop_hp *hps, size_t nhps)
    int etk_adagrad_multi(const etk_tensor *t, size_t count, const etk_adagrad_hp *hps, size_t nhps)
    int etk_probe_multi(const etk_tensor *t, size_t count)

    int etk_get_num_threads()
    void etk_set_num_threads(int n)
    size_t etk_parallel_min()
    void etk_set_parallel_min(size_t n)
    int etk_has_openmp()
    const char *etk_simd_variant()
    int etk_set_simd_variant(const char *name)
    const char *etk_simd_available()

RULE_SGD = 0
RULE_ADAM = 1
RULE_RMSPROP = 2
RULE_ADAGRAD = 3
RULE_PROBE = 4

cdef size_t _HP_SIZE[5]
_HP_SIZE[:] = [sizeof(etk_sgd_hp), sizeof(etk_adam_hp), sizeof(etk_rmsprop_hp), sizeof(etk_adagrad_hp), 0]


def get_num_threads():
    return etk_get_num_threads()


def set_num_threads(int n):
    etk_set_num_threads(n)


def parallel_min():
    return etk_parallel_min()


def set_parallel_min(size_t n):
    """Tuning knob: the element count from which a call uses threads (0: default)."""
    etk_set_parallel_min(n)


def has_openmp():
    return bool(etk_has_openmp())


def simd_variant():
    return etk_simd_variant().decode()


def simd_available():
    return etk_simd_available().decode().split()


def set_simd_variant(str name):
    if etk_set_simd_variant(name.encode()) != 0:
        raise ValueError(f"SIMD variant {name!r} is not available on this CPU; "
                         f"available: {simd_available()}")


cdef struct _Interval:
    uintptr_t lo
    uintptr_t hi


cdef int _cmp_interval(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const _Interval *>a).lo, y = (<const _Interval *>b).lo
    return (x > y) - (x < y)


cdef inline _Interval _span(cnp.ndarray a):
    cdef _Interval s
    s.lo = <uintptr_t>cnp.PyArray_DATA(a)
    s.hi = s.lo + <uintptr_t>cnp.PyArray_NBYTES(a)
    return s


cdef class Plan:
    """C descriptors for one optimizer step over ``count`` tensors."""
    cdef etk_tensor *t
    cdef Py_ssize_t count
    cdef int rule
    cdef void *hps
    cdef Py_ssize_t nhps
    cdef list params
    cdef list keep
    cdef _Interval *written
    cdef Py_ssize_t nwritten

    def __cinit__(self, int rule, Py_ssize_t count, Py_ssize_t nhps):
        if rule < 0 or rule > 4 or count < 0 or nhps < 0:
            raise ValueError("invalid plan")
        self.rule = rule
        self.count = count
        self.nhps = nhps
        self.t = <etk_tensor *>calloc(count if count else 1, sizeof(etk_tensor))
        self.hps = calloc(nhps if nhps else 1, _HP_SIZE[rule] if _HP_SIZE[rule] else 1)
        self.written = <_Interval *>calloc(4 * count if count else 1, sizeof(_Interval))
        if not self.t or not self.hps or not self.written:
            raise MemoryError()
        self.params = [None] * count
        self.keep = [None] * count
        self.nwritten = 0

    def __dealloc__(self):
        free(self.t)
        free(self.hps)
        free(self.written)

    def set_tensor(self, Py_ssize_t i, cnp.ndarray param not None, tuple states, Py_ssize_t group,
                   int64_t completed_steps, bint fresh):
        """Point tensor ``i`` at ``param`` and its state arrays (None where unused)."""
        cdef etk_tensor *t
        cdef Py_ssize_t j
        if not 0 <= i < self.count or not 0 <= group < max(self.nhps, 1) or len(states) != 3:
            raise IndexError("plan index out of range")
        t = &self.t[i]
        memset(t, 0, sizeof(etk_tensor))
        t.param = cnp.PyArray_DATA(param)
        t.n = <size_t>cnp.PyArray_SIZE(param)
        t.dtype = ETK_FLOAT32 if cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32 else ETK_FLOAT64
        t.state_dtype = t.dtype
        t.group = <uint32_t>group
        t.step = completed_steps + 1
        t.flags = ETK_FRESH_STATE if fresh else 0
        for j in range(3):
            s = states[j]
            if s is not None:
                t.state[j] = cnp.PyArray_DATA(<cnp.ndarray>s)
        self.params[i] = param
        self.keep[i] = states

    def index_written(self):
        """Sort the buffers a step writes, for the gradient overlap check."""
        cdef Py_ssize_t i, k = 0
        for i in range(self.count):
            self.written[k] = _span(<cnp.ndarray>self.params[i])
            k += 1
            for s in self.keep[i]:
                if s is not None:
                    self.written[k] = _span(<cnp.ndarray>s)
                    k += 1
        self.nwritten = k
        qsort(self.written, k, sizeof(_Interval), _cmp_interval)

    def set_hparams(self, Py_ssize_t g, tuple v):
        """Hyperparameters of group ``g``, in the order of the C struct."""
        cdef etk_sgd_hp *s
        cdef etk_adam_hp *a
        cdef etk_rmsprop_hp *r
        cdef etk_adagrad_hp *d
        if not 0 <= g < self.nhps:
            raise IndexError("group index out of range")
        if self.rule == 0:
            s = &(<etk_sgd_hp *>self.hps)[g]
            s.lr, s.momentum, s.dampening, s.weight_decay, s.nesterov, s.maximize = v
        elif self.rule == 1:
            a = &(<etk_adam_hp *>self.hps)[g]
            (a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, a.amsgrad, a.maximize,
             a.decoupled_weight_decay) = v
        elif self.rule == 2:
            r = &(<etk_rmsprop_hp *>self.hps)[g]
            r.lr, r.alpha, r.eps, r.weight_decay, r.momentum, r.centered, r.maximize = v
        elif self.rule == 3:
            d = &(<etk_adagrad_hp *>self.hps)[g]
            d.lr, d.lr_decay, d.weight_decay, d.eps, d.maximize = v

    def completed_steps(self):
        cdef Py_ssize_t i
        return [self.t[i].step - 1 for i in range(self.count)]

    cdef bint _overlaps_written(self, uintptr_t lo, uintptr_t hi) noexcept:
        # first written interval whose end is past lo (ends are sorted too: the
        # written buffers never overlap each other)
        cdef Py_ssize_t a = 0, b = self.nwritten, m
        if lo == hi:
            return False
        while a < b:
            m = (a + b) // 2
            if self.written[m].hi <= lo:
                a = m + 1
            else:
                b = m
        return a < self.nwritten and self.written[a].lo < hi

    def run(self, grads):
        """One step.  Returns -1 when done, else the index of the first
        gradient that failed the pre-flight (nothing written), or -2 when
        ``grads`` is not a list/tuple of the right length."""
        cdef Py_ssize_t i, n, d
        cdef cnp.ndarray g, p
        cdef PyObject *o
        cdef int nd, st
        cdef _Interval span
        if type(grads) is not list and type(grads) is not tuple:
            return -2
        n = len(grads)
        if n != self.count:
            return -2
        for i in range(n):
            o = <PyObject *>grads[i]
            if not cnp.PyArray_Check(<object>o):
                return i
            g = <cnp.ndarray>o
            p = <cnp.ndarray>self.params[i]
            nd = cnp.PyArray_NDIM(p)
            if (cnp.PyArray_TYPE(g) != cnp.PyArray_TYPE(p) or not cnp.PyArray_ISNOTSWAPPED(g)
                    or cnp.PyArray_NDIM(g) != nd or not cnp.PyArray_IS_C_CONTIGUOUS(g)
                    or not cnp.PyArray_ISALIGNED(g) or not cnp.PyArray_ISWRITEABLE(p)):
                return i
            for d in range(nd):
                if cnp.PyArray_DIM(g, d) != cnp.PyArray_DIM(p, d):
                    return i
            span = _span(g)
            if self._overlaps_written(span.lo, span.hi):
                return i
            self.t[i].grad = cnp.PyArray_DATA(g)
        with nogil:
            if self.rule == 0:
                st = etk_sgd_multi(self.t, self.count, <etk_sgd_hp *>self.hps, self.nhps)
            elif self.rule == 1:
                st = etk_adam_multi(self.t, self.count, <etk_adam_hp *>self.hps, self.nhps)
            elif self.rule == 2:
                st = etk_rmsprop_multi(self.t, self.count, <etk_rmsprop_hp *>self.hps, self.nhps)
            elif self.rule == 3:
                st = etk_adagrad_multi(self.t, self.count, <etk_adagrad_hp *>self.hps, self.nhps)
            else:
                st = etk_probe_multi(self.t, self.count)
        if st != 0:
            # the Python layer validated everything the C layer checks
            raise RuntimeError("etakit kernel refused the step: " + etk_strerror(st).decode())
        for i in range(self.count):
            self.t[i].grad = NULL
            self.t[i].step += 1
            self.t[i].flags = 0
        return -1
