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
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uintptr_t
from libc.stdlib cimport malloc, calloc, free, qsort
from libc.string cimport memset
from cpython.ref cimport PyObject

cimport numpy as cnp

cnp.import_array()

from etakit._etakit_h cimport *

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


def set_flush_denormal(bint on):
    return bool(etk_set_flush_denormal(on))


def get_flush_denormal():
    return bool(etk_get_flush_denormal())


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


cdef class CompiledSchedule:
    """A schedule's node tree in C form; see csrc/schedule.c for the layout."""
    cdef etk_schedule s
    cdef etk_sched_node *nodes
    cdef double *data

    def __cinit__(self, list nodes, list data):
        cdef Py_ssize_t i, j
        cdef int st
        self.nodes = <etk_sched_node *>calloc(max(len(nodes), 1), sizeof(etk_sched_node))
        self.data = <double *>calloc(max(len(data), 1), sizeof(double))
        if not self.nodes or not self.data:
            raise MemoryError()
        for i, (kind, mode, child, off, length, params) in enumerate(nodes):
            self.nodes[i].kind = kind
            self.nodes[i].mode = mode
            self.nodes[i].child = child
            self.nodes[i].data_off = off
            self.nodes[i].data_len = length
            for j in range(6):
                self.nodes[i].p[j] = params[j] if j < len(params) else 0.0
        for i, v in enumerate(data):
            self.data[i] = v
        self.s.nodes = self.nodes
        self.s.nnodes = len(nodes)
        self.s.data = self.data
        self.s.ndata = len(data)
        st = etk_schedule_check(&self.s)
        if st != 0:
            raise ValueError("invalid schedule: " + etk_strerror(st).decode())

    def __dealloc__(self):
        free(self.nodes)
        free(self.data)

    def eval(self, int64_t k):
        return etk_schedule_eval(&self.s, k)

    def values(self, int64_t start, Py_ssize_t n):
        cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, [n], cnp.NPY_FLOAT64, 0)
        cdef double *o = <double *>cnp.PyArray_DATA(out)
        cdef int st
        with nogil:
            st = etk_schedule_values(&self.s, start, o, <size_t>n)
        if st != 0:
            raise ValueError(etk_strerror(st).decode())
        return out


def field_offset(int rule, str name):
    """Byte offset of a schedulable hyperparameter in the rule's C struct (None if not schedulable)."""
    cdef etk_sgd_hp s
    cdef etk_adam_hp a
    cdef etk_rmsprop_hp r
    cdef etk_adagrad_hp d
    if rule == 0:
        offsets = {"lr": <Py_ssize_t>(<char *>&s.lr - <char *>&s),
                   "momentum": <Py_ssize_t>(<char *>&s.momentum - <char *>&s),
                   "weight_decay": <Py_ssize_t>(<char *>&s.weight_decay - <char *>&s)}
    elif rule == 1:
        offsets = {"lr": <Py_ssize_t>(<char *>&a.lr - <char *>&a),
                   "beta1": <Py_ssize_t>(<char *>&a.beta1 - <char *>&a),
                   "weight_decay": <Py_ssize_t>(<char *>&a.weight_decay - <char *>&a)}
    elif rule == 2:
        offsets = {"lr": <Py_ssize_t>(<char *>&r.lr - <char *>&r),
                   "momentum": <Py_ssize_t>(<char *>&r.momentum - <char *>&r),
                   "weight_decay": <Py_ssize_t>(<char *>&r.weight_decay - <char *>&r)}
    else:
        offsets = {"lr": <Py_ssize_t>(<char *>&d.lr - <char *>&d),
                   "weight_decay": <Py_ssize_t>(<char *>&d.weight_decay - <char *>&d)}
    return offsets.get(name)


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
    cdef etk_hp_schedule *sched
    cdef Py_ssize_t nsched
    cdef list sched_keep

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
        self.sched = NULL
        self.nsched = 0
        self.sched_keep = []

    def __dealloc__(self):
        free(self.t)
        free(self.hps)
        free(self.written)
        free(self.sched)

    def set_schedules(self, list bindings):
        """[(group, byte offset, CompiledSchedule)]: hyperparameters the C step
        evaluates at the step count before each step."""
        cdef Py_ssize_t i
        cdef etk_hp_schedule *sc = <etk_hp_schedule *>calloc(max(len(bindings), 1), sizeof(etk_hp_schedule))
        if not sc:
            raise MemoryError()
        for i, (group, offset, compiled) in enumerate(bindings):
            if not 0 <= group < self.nhps:
                free(sc)
                raise IndexError("group index out of range")
            sc[i].group = <uint32_t>group
            sc[i].offset = <uint32_t>offset
            sc[i].schedule = &(<CompiledSchedule?>compiled).s
        free(self.sched)
        self.sched = sc
        self.nsched = len(bindings)
        self.sched_keep = list(bindings)

    def set_hparam_at(self, Py_ssize_t g, Py_ssize_t offset, double value):
        """Set one double hyperparameter (a Python-callable schedule's value)."""
        if not 0 <= g < self.nhps or offset < 0 or offset % sizeof(double) or \
                offset + sizeof(double) > _HP_SIZE[self.rule]:
            raise IndexError("hyperparameter out of range")
        (<double *>(<char *>self.hps + g * _HP_SIZE[self.rule] + offset))[0] = value

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

    def run_torch(self, list params, list grads, int64_t k=0):
        """``run`` for PyTorch tensors, without numpy views (etakit.torch's hot path).

        PyTorch guarantees that a ``.grad`` has its parameter's dtype, shape and
        device; this checks what it does not: contiguity, no overlap with a
        written buffer, and that each parameter still has the memory the plan
        points at.  Returns -1 when done, -4 when the plan is stale, or the
        index of a gradient the Python layer must look at (nothing written).
        """
        cdef Py_ssize_t i, n = len(grads)
        cdef uintptr_t ptr, nbytes
        if n != self.count or len(params) != n:
            return -2
        for i in range(n):
            if <uintptr_t>params[i].data_ptr() != <uintptr_t>self.t[i].param:
                return -4
            g = grads[i]
            if not g.is_contiguous():
                return i
            ptr = <uintptr_t>g.data_ptr()
            nbytes = <uintptr_t>self.t[i].n * (4 if self.t[i].dtype == ETK_FLOAT32 else 8)
            if self._overlaps_written(ptr, ptr + nbytes):
                return i
            self.t[i].grad = <const void *>ptr
        return self._launch(k)

    cdef int _launch(self, int64_t k) except -5:
        cdef int st
        cdef Py_ssize_t i
        with nogil:
            if self.rule == 0:
                st = etk_sgd_multi_scheduled(self.t, self.count, <etk_sgd_hp *>self.hps, self.nhps,
                                             self.sched, self.nsched, k)
            elif self.rule == 1:
                st = etk_adam_multi_scheduled(self.t, self.count, <etk_adam_hp *>self.hps, self.nhps,
                                              self.sched, self.nsched, k)
            elif self.rule == 2:
                st = etk_rmsprop_multi_scheduled(self.t, self.count, <etk_rmsprop_hp *>self.hps, self.nhps,
                                                 self.sched, self.nsched, k)
            elif self.rule == 3:
                st = etk_adagrad_multi_scheduled(self.t, self.count, <etk_adagrad_hp *>self.hps, self.nhps,
                                                 self.sched, self.nsched, k)
            else:
                st = etk_probe_multi(self.t, self.count)
        if st == -2:   # ETK_EHPARAM: a scheduled or callable value out of range
            for i in range(self.count):
                self.t[i].grad = NULL
            return -3
        if st != 0:
            # the Python layer validated everything the C layer checks
            raise RuntimeError("etakit kernel refused the step: " + etk_strerror(st).decode())
        for i in range(self.count):
            self.t[i].grad = NULL
            self.t[i].step += 1
            self.t[i].flags = 0
        return -1

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

    def run(self, grads, int64_t k=0):
        """One step, the k-th (from 0: scheduled hyperparameters use it).
        Returns -1 when done, else the index of the first gradient that
        failed the pre-flight (nothing written), -2 when ``grads`` is not a
        list/tuple of the right length, or -3 when a hyperparameter (a
        scheduled value) is out of range (nothing written)."""
        cdef Py_ssize_t i, n, d
        cdef cnp.ndarray g, p
        cdef PyObject *o
        cdef int nd
        cdef _Interval span
        if type(grads) is not list and type(grads) is not tuple:
            return -2
        # our own references: the arrays stay alive while the GIL is released,
        # whatever another thread does to the caller's list
        cdef tuple held = tuple(grads)
        n = len(held)
        if n != self.count:
            return -2
        for i in range(n):
            o = <PyObject *>held[i]
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
        return self._launch(k)
