# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Thin, rule-agnostic shim between the Python optimizers and the C engine.

A ``Plan`` holds the C descriptors of one optimizer's tensors (parameter and
state pointers, step counts, hyperparameter structs per group).  ``Plan.run``
takes the gradient list, checks each gradient, fills in the pointers and makes
one C call (``etk_step``) for every tensor with the GIL released.  Nothing
here knows any rule: fields, ranges and state slots come from the C rule
table (``rule_info``), so a new rule needs no change in this file.

The gradient check is the only one in etakit (the numpy and the PyTorch front
ends both rely on it).  It uses numpy's C API rather than typed memoryviews
because acquiring a memoryview costs more than a whole step on a small array.
A refused gradient raises ``etakit.GradientError`` (or ``GradientTypeError``)
naming its index and what was expected; nothing is written.  A scheduled
value out of range raises ``etakit.HyperparameterError`` naming the group,
the key and the step.
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, qsort
from libc.string cimport memset, memcpy
from cpython.ref cimport PyObject
from cpython.list cimport PyList_Check, PyList_GET_SIZE, PyList_GET_ITEM
from cpython.tuple cimport PyTuple_Check
from cpython.dict cimport PyDict_Size

cimport numpy as cnp

cnp.import_array()

from etakit._etakit_h cimport *
from etakit.errors import GradientError, GradientTypeError, HyperparameterError, NonFiniteGradientError, StateError

NRULES = ETK_NRULES


# ---------------------------------------------------------------- configuration

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


# ------------------------------------------------ C entry points for cykernels

cdef int c_step(int rule, const etk_tensor *tensors, size_t count, const void *hps, size_t nhps,
                const etk_step_opts *opts, etk_error *err) noexcept nogil:
    return etk_step(rule, tensors, count, hps, nhps, opts, err)


cdef int c_step_single(int rule, int dtype, void *param, const void *grad, void *const *state, size_t n,
                       const void *hp, int64_t step) noexcept nogil:
    cdef etk_tensor t
    cdef const etk_rule_info *info = etk_rule_info_get(rule)
    cdef size_t j
    if info == NULL or hp == NULL:
        return -1
    memset(&t, 0, sizeof(etk_tensor))
    t.param = param
    t.grad = grad
    if state != NULL:
        for j in range(info.nslots):
            t.state[j] = state[j]
    t.n = n
    t.step = step
    t.dtype = <uint8_t>dtype
    t.state_dtype = <uint8_t>dtype
    t.flags = <uint16_t>((1 << ETK_MAX_SLOTS) - 1) if step == 1 else 0
    return etk_step(rule, &t, 1, hp, 1, NULL, NULL)


cdef int c_probe(const etk_tensor *tensors, size_t count) noexcept nogil:
    return etk_probe_multi(tensors, count)


cdef const etk_rule_info *c_rule_info(int rule) noexcept nogil:
    return etk_rule_info_get(rule)


cdef int c_rule_find(const char *name) noexcept nogil:
    return etk_rule_find(name)


cdef const char *c_strerror(int status) noexcept nogil:
    return etk_strerror(status)


# ------------------------------------------------------------------ rule table

cdef str _range_text(const etk_field_info *f):
    if f.kind == ETK_FIELD_FLAG:
        return "a bool"
    what = "an integer" if f.kind == ETK_FIELD_INT else "a finite number"
    if f.kind == ETK_FIELD_REAL_OR_NONE:
        what = "None or " + what
    lo = f"{'>' if f.lo_open else '>='} {f.lo:g}"
    hi = f"{'<' if f.hi_open else '<='} {f.hi:g}"
    if f.lo == -float("inf"):
        return what if f.hi == float("inf") else f"{what} {hi}"
    if f.hi == float("inf"):
        return f"{what} {lo}" if f.hi_open else f"a number {lo} (inf included)"
    return f"{what} {lo} and {hi}"


def rule_id(str name):
    """The C id of the rule called ``name`` (ValueError if there is none)."""
    cdef int r = etk_rule_find(name.encode())
    if r < 0:
        raise ValueError(f"no rule called {name!r}")
    return r


def rule_info(rule):
    """What the C table says of a rule: fields (with offsets and ranges) and state slots."""
    cdef int r = rule_id(rule) if isinstance(rule, str) else rule
    cdef const etk_rule_info *info = etk_rule_info_get(r)
    cdef size_t i
    if info == NULL:
        raise ValueError(f"no rule with id {rule!r}")
    # a REAL_OR_NONE field is a "real" that may also be None (NaN in the C struct): "optional"
    kinds = {ETK_FIELD_REAL: "real", ETK_FIELD_FLAG: "flag", ETK_FIELD_INT: "int", ETK_FIELD_REAL_OR_NONE: "real"}
    shapes = {ETK_SLOT_FULL: "full", ETK_SLOT_SCALAR: "scalar", ETK_SLOT_ROWS: "rows", ETK_SLOT_COLS: "cols",
              ETK_SLOT_VECTOR: "vector", ETK_SLOT_STRIDED: "strided"}
    inits = {0: "zero", 1: "field", 2: "param", 3: "one", 4: "work", 5: "value"}
    fields = [dict(name=info.fields[i].name.decode(), offset=info.fields[i].offset,
                   kind=kinds[info.fields[i].kind], schedulable=bool(info.fields[i].schedulable),
                   lo=info.fields[i].lo, hi=info.fields[i].hi, lo_open=bool(info.fields[i].lo_open),
                   hi_open=bool(info.fields[i].hi_open), range=_range_text(&info.fields[i]),
                   optional=info.fields[i].kind == ETK_FIELD_REAL_OR_NONE)
              for i in range(info.nfields)]
    slots = [dict(name=info.slots[i].name.decode(), shape=shapes[info.slots[i].shape],
                  init=inits[info.slots[i].init],
                  init_field=fields[info.slots[i].init_field]["name"] if info.slots[i].init == 1 else None,
                  stride_field=(fields[info.slots[i].stride_field]["name"]
                                if info.slots[i].shape == ETK_SLOT_STRIDED else None),
                  init_value=info.slots[i].init_value, nonneg=bool(info.slots[i].nonneg))
             for i in range(info.nslots)]
    group_state = [info.group_state[i].decode() for i in range(info.ngroup_state)]
    return dict(id=r, name=info.name.decode(), hp_size=info.hp_size, fields=fields, slots=slots,
                uses_step=bool(info.flags & ETK_RULE_USES_STEP), matrix=bool(info.flags & ETK_RULE_MATRIX),
                matrix_only=bool(info.flags & ETK_RULE_MATRIX_ONLY), group_state=group_state,
                lowp=bool(etk_rule_lowp(r)))


def q8_map(bint signed):
    """The C engine's 8-bit map (``etk_q8_map``): 256 sorted float32 values."""
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, [256], cnp.NPY_FLOAT32, 0)
    etk_q8_map(signed, <float *>cnp.PyArray_DATA(out))
    return out


def bf16_encode(cnp.ndarray x not None, bint stochastic=False, uint64_t seed=0, int64_t step=1, unsigned slot=0,
                size_t index0=0):
    """float32 (C-contiguous) to bfloat16 bits (uint16), as the step encodes."""
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise TypeError("bf16_encode takes a C-contiguous float32 array")
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.NPY_UINT16, 0)
    cdef size_t n = <size_t>cnp.PyArray_SIZE(x)
    with nogil:
        etk_bf16_encode(<const float *>cnp.PyArray_DATA(x), <uint16_t *>cnp.PyArray_DATA(out), n, stochastic, seed,
                        step, slot, index0)
    return out


def q8_encode(cnp.ndarray x not None, bint signed=True):
    """float32 (C-contiguous) to 8-bit codes and scales, as the step encodes: ``(codes, absmax)``."""
    if cnp.PyArray_TYPE(x) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(x):
        raise TypeError("q8_encode takes a C-contiguous float32 array")
    cdef size_t n = <size_t>cnp.PyArray_SIZE(x)
    cdef cnp.ndarray codes = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.NPY_UINT8, 0)
    cdef cnp.npy_intp nb = <cnp.npy_intp>((n + 255) // 256)
    cdef cnp.ndarray absmax = cnp.PyArray_EMPTY(1, &nb, cnp.NPY_FLOAT32, 0)
    with nogil:
        etk_q8_encode(<const float *>cnp.PyArray_DATA(x), <uint8_t *>cnp.PyArray_DATA(codes),
                      <float *>cnp.PyArray_DATA(absmax), n, signed)
    return codes, absmax


def q8_decode(cnp.ndarray codes not None, cnp.ndarray absmax not None, bint signed=True):
    """8-bit codes (uint8, C-contiguous) and their block scales (float32) to float32, as the step decodes."""
    if cnp.PyArray_TYPE(codes) != cnp.NPY_UINT8 or not cnp.PyArray_IS_C_CONTIGUOUS(codes):
        raise TypeError("q8_decode takes C-contiguous uint8 codes")
    if cnp.PyArray_TYPE(absmax) != cnp.NPY_FLOAT32 or not cnp.PyArray_IS_C_CONTIGUOUS(absmax):
        raise TypeError("q8_decode takes C-contiguous float32 scales")
    cdef size_t n = <size_t>cnp.PyArray_SIZE(codes)
    if <size_t>cnp.PyArray_SIZE(absmax) != (n + 255) // 256:
        raise ValueError(f"q8_decode: {n} codes need {(n + 255) // 256} scales, got {cnp.PyArray_SIZE(absmax)}")
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(codes), cnp.PyArray_DIMS(codes), cnp.NPY_FLOAT32, 0)
    with nogil:
        etk_q8_decode(<const uint8_t *>cnp.PyArray_DATA(codes), <const float *>cnp.PyArray_DATA(absmax),
                      <float *>cnp.PyArray_DATA(out), n, signed)
    return out


def grad_norm(list arrays, bint norm_inf=False):
    """(norm, first non-finite index or -1) of C-contiguous float32/float64 arrays, as a step with
    clipping forms the global norm (etk_grad_norm); None if an array is not of that kind."""
    cdef Py_ssize_t i, n = len(arrays)
    cdef etk_tensor *t = <etk_tensor *>calloc(n if n else 1, sizeof(etk_tensor))
    cdef cnp.ndarray a
    cdef double norm = 0.0
    cdef int64_t bad = -1
    cdef int st
    if not t:
        raise MemoryError()
    try:
        for i in range(n):
            a = arrays[i]
            if cnp.PyArray_TYPE(a) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) or not cnp.PyArray_IS_C_CONTIGUOUS(a) \
                    or not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISNOTSWAPPED(a):
                return None
            t[i].grad = cnp.PyArray_DATA(a)
            t[i].n = <size_t>cnp.PyArray_SIZE(a)
            t[i].dtype = ETK_FLOAT32 if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 else ETK_FLOAT64
        with nogil:
            st = etk_grad_norm(t, <size_t>n, norm_inf, &norm, &bad)
        if st != ETK_OK:
            raise MemoryError("etk_grad_norm failed")
        return norm, bad
    finally:
        free(t)


def grad_block_sums(cnp.ndarray a not None):
    """The float64 sums of squares of a C-contiguous float32/float64 array over each block of 4096
    elements (etk_grad_block_sums); None for another kind of array."""
    cdef size_t n = <size_t>cnp.PyArray_SIZE(a)
    cdef cnp.npy_intp nb = <cnp.npy_intp>((n + 4095) // 4096)
    cdef cnp.ndarray out
    cdef int dt, st
    if cnp.PyArray_TYPE(a) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) or not cnp.PyArray_IS_C_CONTIGUOUS(a) \
            or not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISNOTSWAPPED(a):
        return None
    out = cnp.PyArray_EMPTY(1, &nb, cnp.NPY_FLOAT64, 0)
    dt = ETK_FLOAT32 if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 else ETK_FLOAT64
    with nogil:
        st = etk_grad_block_sums(cnp.PyArray_DATA(a), dt, n, <double *>cnp.PyArray_DATA(out))
    if st != ETK_OK:
        raise ValueError("etk_grad_block_sums refused its arguments")
    return out


def accumulate(list accs, list grads, double weight, bint first):
    """acc = weight * g (first) or acc + weight * g for every pair, in one threaded C call
    (etk_accumulate).  The arrays must be C-contiguous, aligned, of one float dtype per pair and
    the same size (the caller checks)."""
    cdef Py_ssize_t i, n = len(accs)
    cdef etk_tensor *t = <etk_tensor *>calloc(n if n else 1, sizeof(etk_tensor))
    cdef cnp.ndarray a, g
    cdef int st
    if not t:
        raise MemoryError()
    try:
        for i in range(n):
            a, g = accs[i], grads[i]
            if cnp.PyArray_TYPE(a) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) or cnp.PyArray_TYPE(g) != \
                    cnp.PyArray_TYPE(a) or cnp.PyArray_SIZE(a) != cnp.PyArray_SIZE(g) or \
                    not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_IS_C_CONTIGUOUS(g) or \
                    not cnp.PyArray_ISALIGNED(a) or not cnp.PyArray_ISALIGNED(g) or not cnp.PyArray_ISWRITEABLE(a):
                raise ValueError(f"accumulate: pair {i} is not two C-contiguous arrays of one float dtype and size")
            t[i].param = cnp.PyArray_DATA(a)
            t[i].grad = cnp.PyArray_DATA(g)
            t[i].n = <size_t>cnp.PyArray_SIZE(a)
            t[i].dtype = ETK_FLOAT32 if cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32 else ETK_FLOAT64
        with nogil:
            st = etk_accumulate(t, <size_t>n, weight, first)
        if st != ETK_OK:
            raise ValueError("etk_accumulate refused its arguments")
    finally:
        free(t)


def rule_names():
    return [etk_rule_info_get(i).name.decode() for i in range(ETK_NRULES)]


def pack_hparams(int rule, tuple values):
    """The C struct of ``rule`` with ``values`` in field order (reals as double, flags and ints as int)."""
    cdef const etk_rule_info *info = etk_rule_info_get(rule)
    cdef size_t i
    cdef double d
    cdef int v
    if info == NULL or <size_t>len(values) != info.nfields:
        raise ValueError("pack_hparams: wrong rule or number of values")
    buf = bytearray(info.hp_size)
    cdef unsigned char *b = buf
    for i in range(info.nfields):
        if info.fields[i].kind == ETK_FIELD_REAL or info.fields[i].kind == ETK_FIELD_REAL_OR_NONE:
            d = values[i]
            memcpy(b + info.fields[i].offset, &d, sizeof(double))
        else:
            v = values[i]
            memcpy(b + info.fields[i].offset, &v, sizeof(int))
    return bytes(buf)


def check_hparams(int rule, bytes packed):
    """None if the struct is valid, else (field name, reason) from the C check."""
    cdef etk_error err
    cdef const etk_rule_info *info = etk_rule_info_get(rule)
    if info == NULL or <size_t>len(packed) != info.hp_size:
        raise ValueError("check_hparams: wrong rule or struct size")
    cdef const unsigned char *b = packed
    if etk_rule_check(rule, b, &err) == ETK_OK:
        return None
    return (err.field.decode() if err.field != NULL else None,
            err.message.decode() if err.message != NULL else etk_strerror(err.status).decode())


def check_groups(int rule, list packed):
    """None if the groups' structs (each valid on its own) meet the rule's constraints across
    groups, else (group, field name, reason) from the C check."""
    cdef etk_error err
    cdef const etk_rule_info *info = etk_rule_info_get(rule)
    cdef Py_ssize_t n = len(packed)
    if info == NULL:
        raise ValueError("check_groups: no such rule")
    for one in packed:
        if <size_t>len(one) != info.hp_size:
            raise ValueError("check_groups: wrong struct size")
    buf = b"".join(packed) + b"\0"
    cdef const unsigned char *b = buf
    if etk_rule_check_groups(rule, b, <size_t>n, &err) == ETK_OK:
        return None
    return (err.group, err.field.decode() if err.field != NULL else None,
            err.message.decode() if err.message != NULL else etk_strerror(err.status).decode())


def rule_needs(int rule, bytes packed):
    """Bit j set: state slot j is needed for these hyperparameters."""
    cdef const unsigned char *b = packed
    return etk_rule_needs(rule, b)


# ------------------------------------------------------------------- schedules

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


# ------------------------------------------------------------------------ plan

def first_overlap(list arrays):
    """(i, j) of two arrays of the list that share memory (or are the same array), or None.

    Sorts the buffers once: n log n, for the construction check of thousands of parameters."""
    cdef Py_ssize_t n = len(arrays), i, k = 0
    cdef _Interval *iv = <_Interval *>calloc(max(n, 1), sizeof(_Interval))
    cdef cnp.ndarray a
    if not iv:
        raise MemoryError()
    try:
        for i in range(n):
            a = <cnp.ndarray?>arrays[i]
            if cnp.PyArray_NBYTES(a) == 0:
                continue
            iv[k] = _span(a, <int32_t>i, -1)
            k += 1
        qsort(iv, k, sizeof(_Interval), _cmp_interval)
        for i in range(1, k):
            if iv[i].lo < iv[i - 1].hi:
                return (min(iv[i - 1].tensor, iv[i].tensor), max(iv[i - 1].tensor, iv[i].tensor))
        return None
    finally:
        free(iv)


cdef struct _Interval:
    uintptr_t lo
    uintptr_t hi
    int32_t tensor
    int32_t slot     # -1: the parameter


cdef int _cmp_interval(const void *a, const void *b) noexcept nogil:
    cdef uintptr_t x = (<const _Interval *>a).lo, y = (<const _Interval *>b).lo
    return (x > y) - (x < y)


cdef inline _Interval _span(cnp.ndarray a, int32_t tensor, int32_t slot):
    cdef _Interval s
    s.lo = <uintptr_t>cnp.PyArray_DATA(a)
    s.hi = s.lo + <uintptr_t>cnp.PyArray_NBYTES(a)
    s.tensor = tensor
    s.slot = slot
    return s


cdef class Plan:
    """The C descriptors of one optimizer step over ``count`` tensors of one rule.

    ``labels[i]`` names tensor ``i`` in messages (``"params[3]"``); ``keys``
    maps a C field name to the group key users write (``"beta1"`` ->
    ``"betas[0]"``).
    """
    cdef int rule
    cdef const etk_rule_info *info
    cdef etk_tensor *t
    cdef Py_ssize_t count
    cdef unsigned char *hps
    cdef Py_ssize_t nhps
    cdef list params
    cdef list states
    cdef list labels
    cdef dict keys
    cdef _Interval *written
    cdef Py_ssize_t nwritten
    cdef etk_hp_schedule *sched
    cdef Py_ssize_t nsched
    cdef list sched_keep
    cdef list torch_dtypes
    cdef list torch_params
    cdef list torch_shapes
    cdef object bump
    cdef list group_sizes
    cdef bint busy
    cdef bint matrix
    cdef bint matrix_only
    cdef bint strided       # the rule has a strided slot (set_hparams checks its sizes)
    cdef cnp.ndarray gstate
    cdef list emas          # per tensor: its EMA array, or None
    cdef list comps         # per tensor: its Kahan compensation (bfloat16 parameters), or None
    cdef int *ptype         # per tensor: the numpy type number of its parameter
    cdef etk_step_opts loop  # the loop's other passes (set_loop): grad_scale ... ema_weight
    cdef etk_step_report rep

    def __cinit__(self, int rule, Py_ssize_t count, Py_ssize_t nhps, list labels=None, dict keys=None):
        cdef Py_ssize_t i
        self.info = etk_rule_info_get(rule) if rule != ETK_NRULES else NULL
        if (self.info == NULL and rule != ETK_NRULES) or count < 0 or nhps < 0:
            raise ValueError("invalid plan")
        self.rule = rule
        self.count = count
        self.nhps = nhps
        self.t = <etk_tensor *>calloc(count if count else 1, sizeof(etk_tensor))
        self.hps = <unsigned char *>calloc(nhps if nhps else 1, self.info.hp_size if self.info != NULL else 1)
        self.written = <_Interval *>calloc((2 * ETK_MAX_SLOTS + 3) * count if count else 1, sizeof(_Interval))
        self.ptype = <int *>calloc(count if count else 1, sizeof(int))
        if not self.t or not self.hps or not self.written or not self.ptype:
            raise MemoryError()
        self.params = [None] * count
        self.states = [None] * count
        self.emas = [None] * count
        self.comps = [None] * count
        memset(&self.loop, 0, sizeof(etk_step_opts))
        memset(&self.rep, 0, sizeof(etk_step_report))
        self.rep.grad_norm = float("nan")
        self.rep.grad_mul = 1.0
        self.rep.nonfinite_tensor = -1
        self.labels = list(labels) if labels is not None else [f"params[{i}]" for i in range(count)]
        self.keys = keys or {}
        self.nwritten = 0
        self.sched = NULL
        self.nsched = 0
        self.sched_keep = []
        self.torch_dtypes = None
        self.torch_params = None
        self.torch_shapes = None
        self.bump = None
        self.group_sizes = None
        self.busy = False
        self.matrix = self.info != NULL and (self.info.flags & (ETK_RULE_MATRIX | ETK_RULE_MATRIX_ONLY)) != 0
        self.matrix_only = self.info != NULL and (self.info.flags & ETK_RULE_MATRIX_ONLY) != 0
        self.gstate = None
        self.strided = False
        if self.info != NULL:
            for i in range(<Py_ssize_t>self.info.nslots):
                if self.info.slots[i].shape == ETK_SLOT_STRIDED:
                    self.strided = True

    def __dealloc__(self):
        free(self.t)
        free(self.hps)
        free(self.written)
        free(self.ptype)
        free(self.sched)

    # ---- configuration ------------------------------------------------
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

    cdef Py_ssize_t _stride(self, const unsigned char *hp, Py_ssize_t j):
        """The stride s of strided slot ``j`` under the struct ``hp`` (see ETK_SLOT_STRIDED)."""
        cdef int v
        memcpy(&v, hp + self.info.fields[self.info.slots[j].stride_field].offset, sizeof(int))
        return v

    cdef _check_strided(self, Py_ssize_t i, Py_ssize_t j, Py_ssize_t size, const unsigned char *hp):
        """Refuse a struct under which strided slot ``j`` of tensor ``i`` would not have ``size`` elements."""
        cdef Py_ssize_t k = self._stride(hp, j), n = <Py_ssize_t>self.t[i].n
        if k >= 1 and size == (n + k - 1) // k:
            return
        name = self.info.slots[j].name.decode()
        field = self.info.fields[self.info.slots[j].stride_field].name.decode()
        field = self.keys.get(field, field)
        raise StateError(f"the optimizer state {name!r} of {self.labels[i]} has {size} elements: it keeps every "
                         f"{field}-th element of the parameter's {n}, and {field} = {k} would keep "
                         f"{(n + k - 1) // k if k >= 1 else 'none'}; {field} cannot change once that state exists "
                         "(build a new optimizer)")

    def set_hparams(self, Py_ssize_t g, bytes packed):
        """The hyperparameter struct of group ``g`` (see ``pack_hparams``).

        Refused (StateError) if it would change the size a strided slot of a
        tensor already set needs (Prodigy's ``slice_p``)."""
        cdef Py_ssize_t i, j
        if not 0 <= g < self.nhps or self.info == NULL or <size_t>len(packed) != self.info.hp_size:
            raise IndexError("group index or struct size out of range")
        for i in range(self.count if self.strided else 0):
            if self.states[i] is None or self.t[i].group != <uint32_t>g:
                continue
            for j in range(<Py_ssize_t>self.info.nslots):
                if self.info.slots[j].shape == ETK_SLOT_STRIDED and self.states[i][j] is not None:
                    self._check_strided(i, j, cnp.PyArray_SIZE(<cnp.ndarray>self.states[i][j]),
                                        <const unsigned char *>packed)
        memcpy(self.hps + g * self.info.hp_size, <const unsigned char *>packed, self.info.hp_size)

    def set_hparam_at(self, Py_ssize_t g, Py_ssize_t offset, double value):
        """Set one double hyperparameter (a Python-callable schedule's value)."""
        if not 0 <= g < self.nhps or self.info == NULL or offset < 0 or offset % sizeof(double) or \
                <size_t>offset + sizeof(double) > self.info.hp_size:
            raise IndexError("hyperparameter out of range")
        memcpy(self.hps + g * self.info.hp_size + offset, &value, sizeof(double))

    def set_tensor(self, Py_ssize_t i, cnp.ndarray param not None, tuple states, Py_ssize_t group,
                   int64_t completed_steps, unsigned fresh=0, int64_t rows=0, int64_t cols=0,
                   int state_format=0, bint stochastic=False, uint64_t seed=0, tuple absmax=None,
                   cnp.ndarray comp=None, bint param_stochastic=False):
        """Point tensor ``i`` at ``param`` and its state arrays (one per slot, None where unused).

        ``param`` is float32, float64 or bfloat16 (an ``ml_dtypes.bfloat16`` array, or its bits as
        uint16), for which full-precision state is float32, ``comp`` (bfloat16 bits, the parameter's
        size) makes the write-back Kahan-compensated and ``param_stochastic`` rounds it stochastically
        (stream ``seed``); else it is rounded to nearest even.

        ``state_format``: 0 (state in the parameter's dtype), 2 (bfloat16: the
        element-wise slots are uint16 arrays of bfloat16 bits; ``stochastic``
        rounding with stream ``seed``) or 3 (8-bit: uint8 codes, with the float32
        scales of every element-wise slot in ``absmax``, one per 256 elements).
        Every array is checked against what its slot holds, so a plan never
        points past the end of a buffer."""
        cdef etk_tensor *t
        cdef Py_ssize_t j, nslots = self.info.nslots if self.info != NULL else ETK_MAX_SLOTS
        cdef cnp.ndarray s, sc
        cdef Py_ssize_t n, want, k
        cdef int sdt = -1, shape
        if not 0 <= i < self.count or not 0 <= group < max(self.nhps, 1) or len(states) != nslots:
            raise IndexError("plan index out of range")
        if state_format not in (0, 2, 3) or (absmax is not None and len(absmax) != nslots):
            raise ValueError("invalid state format or scales")
        label = self.labels[i]
        cdef bint bf16 = cnp.PyArray_ITEMSIZE(param) == 2 and param.dtype.name in ("bfloat16", "uint16")
        if (cnp.PyArray_TYPE(param) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64) and not bf16) or \
                not cnp.PyArray_IS_C_CONTIGUOUS(param) or not cnp.PyArray_ISALIGNED(param) or \
                not cnp.PyArray_ISNOTSWAPPED(param):
            raise TypeError(f"{label} must be an aligned, C-contiguous float32, float64 or bfloat16 array")
        if state_format and cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT64:
            raise TypeError(f"{label}: low-precision optimizer state needs float32 or bfloat16 parameters, got "
                            f"{param.dtype}")
        if (state_format or bf16) and self.info != NULL and not etk_rule_lowp(self.rule):
            raise ValueError(f"rule {self.info.name.decode()!r} cannot keep low-precision state or update "
                             "bfloat16 parameters")
        if comp is not None and (not bf16 or cnp.PyArray_ITEMSIZE(comp) != 2 or comp.dtype.kind == "f" or
                                 cnp.PyArray_SIZE(comp) != cnp.PyArray_SIZE(param) or
                                 not cnp.PyArray_IS_C_CONTIGUOUS(comp) or not cnp.PyArray_ISALIGNED(comp) or
                                 not cnp.PyArray_ISWRITEABLE(comp)):
            raise StateError(f"the Kahan compensation of {label} must be a writable C-contiguous array of "
                             f"{cnp.PyArray_SIZE(param)} bfloat16 bits (uint16), for a bfloat16 parameter")
        n = cnp.PyArray_SIZE(param)
        if rows < 0 or cols < 0 or (rows == 0) != (cols == 0) or (rows and n % (rows * cols)):
            raise ValueError(f"{label}: invalid matrix shape ({rows}, {cols})")
        t = &self.t[i]
        memset(t, 0, sizeof(etk_tensor))
        self.emas[i] = None
        self.comps[i] = None
        for j in range(nslots):
            if states[j] is None:
                continue
            s = <cnp.ndarray?>states[j]
            shape = self.info.slots[j].shape if self.info != NULL else ETK_SLOT_FULL
            name = self.info.slots[j].name.decode() if self.info != NULL else f"slot {j}"
            if not cnp.PyArray_IS_C_CONTIGUOUS(s) or not cnp.PyArray_ISALIGNED(s) or \
                    not cnp.PyArray_ISWRITEABLE(s) or not cnp.PyArray_ISNOTSWAPPED(s):
                raise StateError(f"the optimizer state {name!r} of {label} must be a writable, aligned, "
                                 "C-contiguous array")
            if (shape == ETK_SLOT_VECTOR) if rows else (shape == ETK_SLOT_ROWS or shape == ETK_SLOT_COLS):
                continue    # a slot of the other form (matrix or vector): the engine does not use it here
            if shape == ETK_SLOT_SCALAR:
                if cnp.PyArray_TYPE(s) != cnp.NPY_FLOAT64 or cnp.PyArray_SIZE(s) != 1:
                    raise StateError(f"the optimizer state {name!r} of {label} must be one float64 value")
            else:
                want = n // cols if shape == ETK_SLOT_ROWS else n // rows if shape == ETK_SLOT_COLS else n
                if shape == ETK_SLOT_STRIDED:
                    k = self._stride(self.hps + group * self.info.hp_size, j)
                    if k < 1:
                        raise ValueError(f"set the hyperparameters of group {group} before its tensors")
                    want = (n + k - 1) // k
                if state_format:
                    k = cnp.NPY_UINT16 if state_format == 2 else cnp.NPY_UINT8
                    if cnp.PyArray_SIZE(s) != want or cnp.PyArray_TYPE(s) != k:
                        raise StateError(f"the optimizer state {name!r} of {label} has {cnp.PyArray_SIZE(s)} "
                                         f"elements of {s.dtype}; expected {want} "
                                         f"{'bfloat16 bits (uint16)' if state_format == 2 else '8-bit codes (uint8)'}")
                    if state_format == 3:
                        sc = <cnp.ndarray?>(absmax[j] if absmax is not None else None)
                        if sc is None or cnp.PyArray_TYPE(sc) != cnp.NPY_FLOAT32 or \
                                cnp.PyArray_SIZE(sc) != (n + 255) // 256 or not cnp.PyArray_IS_C_CONTIGUOUS(sc) or \
                                not cnp.PyArray_ISALIGNED(sc) or not cnp.PyArray_ISWRITEABLE(sc):
                            raise StateError(f"the scales of the 8-bit optimizer state {name!r} of {label} must be "
                                             f"a writable C-contiguous float32 array of {(n + 255) // 256} values")
                        t.absmax[j] = <float *>cnp.PyArray_DATA(sc)
                    t.state[j] = cnp.PyArray_DATA(s)
                    continue
                if cnp.PyArray_SIZE(s) != want or cnp.PyArray_TYPE(s) not in (cnp.NPY_FLOAT32, cnp.NPY_FLOAT64):
                    raise StateError(f"the optimizer state {name!r} of {label} has {cnp.PyArray_SIZE(s)} "
                                     f"elements of {s.dtype}; expected {want} float32 or float64")
                if sdt == -1:
                    sdt = cnp.PyArray_TYPE(s)
                elif cnp.PyArray_TYPE(s) != sdt:
                    raise StateError(f"the optimizer state of {label} mixes dtypes")
            t.state[j] = cnp.PyArray_DATA(s)
        t.param = cnp.PyArray_DATA(param)
        t.n = <size_t>n
        t.rows = rows
        t.cols = cols
        t.dtype = ETK_BFLOAT16 if bf16 else ETK_FLOAT32 if cnp.PyArray_TYPE(param) == cnp.NPY_FLOAT32 else ETK_FLOAT64
        t.state_dtype = (ETK_FLOAT32 if bf16 else t.dtype) if sdt == -1 else \
            (ETK_FLOAT32 if sdt == cnp.NPY_FLOAT32 else ETK_FLOAT64)
        if bf16 and t.state_dtype == ETK_FLOAT64:
            raise StateError(f"the optimizer state of {label}, a bfloat16 parameter, must be float32, bfloat16 "
                             "or 8-bit")
        if not bf16 and not state_format and t.state_dtype != t.dtype:
            raise StateError(f"the optimizer state of {label} is {'float32' if sdt == cnp.NPY_FLOAT32 else 'float64'} "
                             f"and the parameter {param.dtype}: full-precision state has its parameter's dtype "
                             "(a parameter whose dtype changed in place needs a new optimizer; load_state_dict "
                             "converts a checkpoint)")
        if state_format:
            t.state_dtype = <uint8_t>state_format
            t.stochastic = stochastic
        if state_format or bf16:
            t.seed = seed
        if bf16:
            t.param_stochastic = param_stochastic and comp is None
            if comp is not None:
                t.comp = cnp.PyArray_DATA(comp)
                self.comps[i] = comp
        self.ptype[i] = cnp.PyArray_TYPE(param)
        t.group = <uint32_t>group
        t.step = completed_steps + 1
        t.flags = <uint16_t>fresh
        self.params[i] = param
        self.states[i] = states if state_format != 3 else states + tuple(absmax)

    def set_ema(self, Py_ssize_t i, cnp.ndarray ema):
        """The exponential moving average of tensor ``i`` (after its ``set_tensor``): an array of the
        parameter's dtype and size, updated after each step (``set_loop``'s ``ema_weight``); None for none."""
        if not 0 <= i < self.count or self.params[i] is None:
            raise IndexError("plan index out of range")
        if ema is None:
            self.t[i].ema = NULL
            self.emas[i] = None
            return
        p = <cnp.ndarray>self.params[i]
        if cnp.PyArray_TYPE(ema) != cnp.PyArray_TYPE(p) or cnp.PyArray_SIZE(ema) != cnp.PyArray_SIZE(p) or \
                not cnp.PyArray_IS_C_CONTIGUOUS(ema) or not cnp.PyArray_ISALIGNED(ema) or \
                not cnp.PyArray_ISWRITEABLE(ema) or not cnp.PyArray_ISNOTSWAPPED(ema):
            raise StateError(f"the EMA of {self.labels[i]} must be a writable C-contiguous {p.dtype} array of "
                             f"{cnp.PyArray_SIZE(p)} elements, got {ema.dtype} with {cnp.PyArray_SIZE(ema)}")
        self.t[i].ema = cnp.PyArray_DATA(ema)
        self.emas[i] = ema

    def set_loop(self, double grad_scale=0.0, double max_grad_norm=0.0, bint norm_inf=False, int nonfinite=0,
                 bint report_norm=False, double ema_weight=0.0):
        """The training loop's other passes for the next steps (etk_step_opts): gradients divided by
        ``grad_scale`` (0: none) and clipped to ``max_grad_norm`` (0: none) by their global 2-norm (or
        max norm), ``nonfinite`` 0 ignore / 1 skip / 2 raise, the norm made for ``last_grad_norm``
        alone with ``report_norm``, and the EMA moved by ``ema_weight`` (0: none)."""
        self.loop.grad_scale = grad_scale
        self.loop.max_grad_norm = max_grad_norm
        self.loop.norm_inf = norm_inf
        self.loop.nonfinite = nonfinite
        self.loop.report_norm = report_norm
        self.loop.ema_weight = ema_weight

    @property
    def last_grad_norm(self):
        """The global gradient norm of the last step (NaN if it was not made)."""
        return self.rep.grad_norm

    @property
    def last_skipped(self):
        """Whether the last step was skipped for a non-finite gradient (nothing was written)."""
        return bool(self.rep.skipped)

    def index_written(self):
        """Sort the buffers a step writes, for the gradient overlap check."""
        cdef Py_ssize_t i, j, k = 0
        for i in range(self.count):
            self.written[k] = _span(<cnp.ndarray>self.params[i], <int32_t>i, -1)
            k += 1
            for j, s in enumerate(self.states[i]):
                if s is not None:
                    # (8-bit state: the slots' scales follow the slots, numbered from nslots)
                    self.written[k] = _span(<cnp.ndarray>s, <int32_t>i,
                                            <int32_t>(j % self.info.nslots if self.info != NULL else j))
                    k += 1
            if self.emas[i] is not None:
                self.written[k] = _span(<cnp.ndarray>self.emas[i], <int32_t>i, -2)
                k += 1
            if self.comps[i] is not None:
                self.written[k] = _span(<cnp.ndarray>self.comps[i], <int32_t>i, -3)
                k += 1
        self.nwritten = k
        qsort(self.written, k, sizeof(_Interval), _cmp_interval)

    def set_group_state(self, cnp.ndarray values):
        """The rule's per-group scalars (``rule_info()["group_state"]``), a C-contiguous float64
        array of shape (groups, names) the step reads and updates in place."""
        cdef Py_ssize_t ngs = self.info.ngroup_state if self.info != NULL else 0
        if values is not None and (cnp.PyArray_TYPE(values) != cnp.NPY_FLOAT64 or
                                   not cnp.PyArray_IS_C_CONTIGUOUS(values) or
                                   cnp.PyArray_SIZE(values) != self.nhps * ngs or
                                   not cnp.PyArray_ISWRITEABLE(values)):
            raise ValueError(f"group state must be a writable C-contiguous float64 array of "
                             f"{self.nhps} x {ngs} values")
        self.gstate = values

    def set_torch_params(self, list params, bump=None):
        """The torch parameters of the plan, in order (``run_torch_groups`` checks them), and
        ``bump(params)``, which advances their autograd version counters after a step."""
        self.torch_params = list(params)
        self.torch_dtypes = [p.dtype for p in params]
        self.torch_shapes = [tuple(p.shape)[max(p.dim() - 2, 0):] for p in params]
        self.bump = bump

    def torch_params_are(self, list params):
        """Whether this plan was built for exactly these torch parameters, in order."""
        cdef Py_ssize_t i
        if self.torch_params is None or len(params) != self.count:
            return False
        for i in range(self.count):
            if params[i] is not self.torch_params[i]:
                return False
        return True

    def run_torch_groups(self, list groups, int64_t k=0):
        """etakit.torch's hot path: take the ``.grad`` of every parameter of ``groups``
        and step if exactly the plan's parameters, in order, have one.

        Returns False, with nothing written, when the plan does not fit (another
        set of parameters has gradients, a parameter's memory was replaced, or
        there is nothing to step); the caller then rebuilds it."""
        cdef Py_ssize_t i = 0
        cdef list tparams = self.torch_params
        cdef list grads = []
        if tparams is None or self.count == 0:
            return False
        for group in groups:
            for p in group["params"]:
                g = p.grad
                if g is None:
                    continue
                if i >= self.count or p is not tparams[i]:
                    return False
                grads.append(g)
                i += 1
        if i != self.count:
            return False
        return self.run_torch(tparams, grads, k)

    # ---- queries ------------------------------------------------------
    def completed_steps(self):
        cdef Py_ssize_t i
        return [self.t[i].step - 1 for i in range(self.count)]

    def set_group_sizes(self, list sizes):
        """The number of keys of each group when the plan was configured (``params_match`` compares)."""
        self.group_sizes = sizes

    def params_match(self, list groups):
        """True if the "params" lists of ``groups`` (parameter-group dicts) hold,
        in order, exactly the arrays this plan points at, and no group gained or
        lost a key since ``set_group_sizes`` (an added key, a typo, is reported
        on reconfiguration)."""
        cdef Py_ssize_t i = 0, j, m, gi = 0
        cdef object lst
        cdef list sizes = self.group_sizes
        if sizes is not None and len(sizes) != len(groups):
            return False
        for group in groups:
            if sizes is not None and PyDict_Size(group) != <Py_ssize_t>sizes[gi]:
                return False
            gi += 1
            lst = group["params"]
            if not PyList_Check(lst):
                return False
            m = PyList_GET_SIZE(lst)
            if i + m > self.count:
                return False
            for j in range(m):
                if <object>PyList_GET_ITEM(lst, j) is not self.params[i + j]:
                    return False
            i += m
        return i == self.count

    # ---- the step -----------------------------------------------------
    cdef bint _overlaps_written(self, uintptr_t lo, uintptr_t hi, Py_ssize_t *at) noexcept:
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
        at[0] = a
        return a < self.nwritten and self.written[a].lo < hi

    cdef str _what(self, Py_ssize_t w):
        cdef _Interval s = self.written[w]
        label = self.labels[s.tensor]
        if s.slot == -2:
            return f"the EMA of {label}"
        if s.slot == -3:
            return f"the Kahan compensation of {label}"
        if s.slot < 0:
            return label
        return f"the optimizer state {self.info.slots[s.slot].name.decode()!r} of {label}"

    cdef _refuse(self, Py_ssize_t i, object g):
        """Raise the error for gradient ``i``, which failed the fast check."""
        cdef object p = self.params[i]
        cdef Py_ssize_t w = 0
        label = self.labels[i]
        if g is None:
            raise GradientTypeError(f"grads[{i}] is None; every parameter needs a gradient array "
                                    f"(pass np.zeros_like for {label} if it has none)", i)
        if not cnp.PyArray_Check(g):
            raise GradientTypeError(f"grads[{i}] must be a numpy.ndarray, got {type(g).__name__}", i)
        if g.dtype != p.dtype or not g.dtype.isnative:
            raise GradientTypeError(f"grads[{i}] has dtype {g.dtype}, expected {p.dtype} (the dtype of {label})", i)
        if g.shape != p.shape:
            raise GradientError(f"grads[{i}] has shape {g.shape}, expected {p.shape} (the shape of {label})", i)
        if not g.flags.c_contiguous:
            raise GradientError(f"grads[{i}] is not C-contiguous (strides {g.strides}); pass "
                                "np.ascontiguousarray(grad)", i)
        if not g.flags.aligned:
            raise GradientError(f"grads[{i}] is not aligned to its dtype", i)
        if not p.flags.writeable:
            raise GradientError(f"{label} has become read-only; parameters are updated in place", i)
        if self._overlaps_written(<uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>g),
                                  <uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>g)
                                  + <uintptr_t>cnp.PyArray_NBYTES(<cnp.ndarray>g),
                                  &w):
            raise GradientError(f"grads[{i}] shares memory with {self._what(w)}, which the step writes; "
                                "pass a separate gradient array", i)
        raise GradientError(f"grads[{i}] was refused", i)

    cdef bint _same_matrix(self, Py_ssize_t i, cnp.ndarray p):
        """The parameter still has the trailing matrix (rows, cols) the plan was built with."""
        cdef int nd = cnp.PyArray_NDIM(p)
        if nd < 2:
            return self.t[i].rows == 0 and not self.matrix_only
        if self.t[i].rows == 0:     # an empty matrix: kept as a vector by the plan
            return cnp.PyArray_SIZE(p) == 0
        return cnp.PyArray_DIM(p, nd - 2) == self.t[i].rows and cnp.PyArray_DIM(p, nd - 1) == self.t[i].cols

    cdef _refuse_moved(self, Py_ssize_t i):
        cdef cnp.ndarray p = <cnp.ndarray>self.params[i]
        want = ("float32", "float64", "bfloat16")[self.t[i].dtype]
        if cnp.PyArray_TYPE(p) != self.ptype[i]:
            raise StateError(f"{self.labels[i]} changed its dtype in place from {want} to {p.dtype} after the "
                             "optimizer took it; build a new optimizer for it")
        if self.matrix and not self._same_matrix(i, p):
            raise StateError(f"{self.labels[i]} was reshaped in place to {tuple((<object>p).shape)} after the "
                             "optimizer took it, and this rule's state depends on its matrix shape; build a new "
                             "optimizer for it")
        if <size_t>cnp.PyArray_SIZE(p) != self.t[i].n:
            raise StateError(f"{self.labels[i]} was resized from {self.t[i].n} to {cnp.PyArray_SIZE(p)} "
                             "elements after the optimizer took it; its optimizer state no longer fits. "
                             "Build a new optimizer for the new array (load_state_dict carries the "
                             "hyperparameters over)")
        raise _Moved(i)

    cdef int _launch(self, int64_t k, unsigned phases, bint advance) except -1:
        cdef etk_step_opts o
        cdef etk_error err
        cdef int st
        cdef Py_ssize_t i
        o = self.loop
        o.report = &self.rep
        self.rep.skipped = 0
        o.phases = phases
        o.sched = self.sched
        o.nsched = <size_t>self.nsched
        o.k = k
        o.group_state = <double *>cnp.PyArray_DATA(self.gstate) if self.gstate is not None else NULL
        self.busy = True
        with nogil:
            if self.info == NULL:
                st = etk_probe_multi(self.t, <size_t>self.count)
            else:
                st = etk_step(self.rule, self.t, <size_t>self.count, self.hps, <size_t>self.nhps, &o, &err)
        self.busy = False
        for i in range(self.count):
            self.t[i].grad = NULL
        if st != ETK_OK:
            self._raise_status(st, &err, k)
        if self.rep.skipped:
            return 0
        if advance:
            for i in range(self.count):
                self.t[i].step += 1
                self.t[i].flags = 0
        return 0

    cdef _raise_status(self, int st, etk_error *err, int64_t k):
        field = err.field.decode() if err.field != NULL else None
        why = err.message.decode() if err.message != NULL else etk_strerror(st).decode()
        if st == ETK_EHPARAM and err.group >= 0:
            key = self.keys.get(field, field)
            value = None
            for g, offset, compiled in self.sched_keep:
                if g == err.group and any(self.info.fields[j].offset == offset and
                                          self.info.fields[j].name.decode() == field
                                          for j in range(self.info.nfields)):
                    value = compiled.eval(k)
            if value is None and field is not None:
                value = self._field_value(err.group, field)
            rng = ""
            for j in range(self.info.nfields):
                if self.info.fields[j].name.decode() == field:
                    rng = f" (expected {_range_text(&self.info.fields[j])})"
            if not why.endswith("out of range"):
                rng = f": {why}"
            raise HyperparameterError(f"param_groups[{err.group}] (scheduled values at step {k}): Invalid {key}: "
                                      f"{value!r}{rng}", err.group, key, value)
        if st == ETK_ENONFINITE:
            if 0 <= err.tensor < self.count:
                raise NonFiniteGradientError(f"the gradient of {self.labels[err.tensor]} {why} "
                                             f"(nonfinite='raise'); nothing was written", err.tensor)
            raise NonFiniteGradientError(f"{why} (nonfinite='raise'); nothing was written", None)
        where = f" (tensor {err.tensor}: {self.labels[err.tensor]})" if 0 <= err.tensor < self.count else ""
        raise RuntimeError(f"etakit kernel refused the step: {why}{where}")

    cdef object _field_value(self, int32_t g, str field):
        cdef size_t j
        cdef double d
        cdef int v
        for j in range(self.info.nfields):
            if self.info.fields[j].name.decode() == field:
                if self.info.fields[j].kind == ETK_FIELD_REAL or self.info.fields[j].kind == ETK_FIELD_REAL_OR_NONE:
                    memcpy(&d, self.hps + g * self.info.hp_size + self.info.fields[j].offset, sizeof(double))
                    return d
                memcpy(&v, self.hps + g * self.info.hp_size + self.info.fields[j].offset, sizeof(int))
                return v
        return None

    def run(self, grads, int64_t k=0, bint check_only=False, unsigned phases=0, bint advance=True):
        """One step, the k-th (from 0: scheduled hyperparameters use it).

        Raises GradientError / GradientTypeError for a refused gradient,
        HyperparameterError for a scheduled value out of range, StateError for
        a parameter resized since the plan was built; nothing is written then.
        With ``check_only`` the gradients are checked and nothing is run.
        ``phases`` runs only the rule's phases whose bits are set (0: all;
        etk_step_opts.phases); ``advance`` False leaves the step counts as they
        are (a call that does not end the step).
        """
        cdef Py_ssize_t i, n, d, w = 0
        cdef cnp.ndarray g, p
        cdef PyObject *o
        cdef int nd
        cdef uintptr_t lo, hi
        if self.busy:
            raise RuntimeError("this optimizer is already stepping in another thread")
        if not (PyList_Check(grads) or PyTuple_Check(grads)):
            raise GradientTypeError("grads must be a list or tuple of arrays, one per parameter in group "
                                    f"order; got {type(grads).__name__}")
        # our own references: the arrays stay alive while the GIL is released,
        # whatever another thread does to the caller's list
        cdef tuple held = tuple(grads)
        n = len(held)
        if n != self.count:
            raise GradientError(f"expected {self.count} gradients (one per parameter, in group order), got {n}")
        for i in range(n):
            p = <cnp.ndarray>self.params[i]
            if cnp.PyArray_DATA(p) != self.t[i].param or <size_t>cnp.PyArray_SIZE(p) != self.t[i].n \
                    or cnp.PyArray_TYPE(p) != self.ptype[i] \
                    or (self.matrix and not self._same_matrix(i, p)):
                self._refuse_moved(i)
            o = <PyObject *>held[i]
            if not cnp.PyArray_Check(<object>o):
                self._refuse(i, <object>o)
            g = <cnp.ndarray>o
            nd = cnp.PyArray_NDIM(p)
            if (cnp.PyArray_TYPE(g) != cnp.PyArray_TYPE(p) or not cnp.PyArray_ISNOTSWAPPED(g)
                    or cnp.PyArray_NDIM(g) != nd or not cnp.PyArray_IS_C_CONTIGUOUS(g)
                    or not cnp.PyArray_ISALIGNED(g) or not cnp.PyArray_ISWRITEABLE(p)):
                self._refuse(i, g)
            for d in range(nd):
                if cnp.PyArray_DIM(g, d) != cnp.PyArray_DIM(p, d):
                    self._refuse(i, g)
            lo = <uintptr_t>cnp.PyArray_DATA(g)
            hi = lo + <uintptr_t>cnp.PyArray_NBYTES(g)
            if self._overlaps_written(lo, hi, &w):
                self._refuse(i, g)
            self.t[i].grad = cnp.PyArray_DATA(g)
        if check_only:
            for i in range(n):
                self.t[i].grad = NULL
            return
        self._launch(k, phases, advance)

    def run_side(self, unsigned phases, int64_t k=0):
        """Run side phases of the rule (etk_rule_desc.nside: passes that are not a step and read no
        gradient, such as the schedule-free rules' switch between train and eval points) over the
        plan's tensors.  ``phases`` names them by bit; the step counts do not advance.  Raises
        StateError for a parameter resized since the plan was built; nothing is written then."""
        cdef Py_ssize_t i
        cdef cnp.ndarray p
        if self.busy:
            raise RuntimeError("this optimizer is already stepping in another thread")
        for i in range(self.count):
            p = <cnp.ndarray>self.params[i]
            if cnp.PyArray_DATA(p) != self.t[i].param or <size_t>cnp.PyArray_SIZE(p) != self.t[i].n:
                self._refuse_moved(i)
            if not cnp.PyArray_ISWRITEABLE(p):
                raise ValueError(f"{self.labels[i]} has become read-only; parameters are updated in place")
            self.t[i].grad = NULL
        self._launch(k, phases, False)

    def run_torch(self, list params, list grads, int64_t k=0, bint check_only=False, unsigned phases=0,
                  bint advance=True):
        """``run`` for PyTorch tensors, without numpy views (etakit.torch's hot path).

        Checks what PyTorch does not guarantee once a ``.grad`` exists: dtype
        and size (``.data`` can be swapped), contiguity (a non-contiguous
        gradient is read through a contiguous copy), no overlap with a written
        buffer, and that each parameter still has the memory the plan points
        at.  Returns False, with nothing written, when the plan is stale.
        ``phases`` and ``advance`` as for ``run``.
        """
        cdef Py_ssize_t i, n = len(grads), w = 0
        cdef uintptr_t ptr, nbytes
        cdef list copies = None
        if self.busy:
            raise RuntimeError("this optimizer is already stepping in another thread")
        if n != self.count or len(params) != n:
            return False
        for i in range(n):
            p = params[i]
            # (an empty tensor's data_ptr is 0, its numpy view's is not: nothing to compare)
            if self.t[i].n and <uintptr_t>p.data_ptr() != <uintptr_t>self.t[i].param:
                return False
            if p.dtype is not self.torch_dtypes[i] or <size_t>p.numel() != self.t[i].n or \
                    (self.matrix and tuple(p.shape)[max(p.dim() - 2, 0):] != self.torch_shapes[i]):
                raise StateError(f"{self.labels[i]} changed its dtype, size or shape in place (p.data = ...) to "
                                 f"{p.dtype} {tuple(p.shape)} after the optimizer took it; its optimizer state "
                                 "no longer fits: build a new optimizer for it")
            g = grads[i]
            nbytes = <uintptr_t>self.t[i].n * (4 if self.t[i].dtype == ETK_FLOAT32 else
                                               2 if self.t[i].dtype == ETK_BFLOAT16 else 8)
            # one call per check on the hot path: the size in bytes keeps every read in
            # bounds; PyTorch refuses a .grad of another dtype than its parameter's, and
            # check_only (each plan build) compares dtypes too
            try:
                size = g.nbytes
            except RuntimeError:    # a sparse gradient has no single buffer
                raise GradientError(f"the gradient of {self.labels[i]} is {g.layout}; etakit.torch supports "
                                    "dense gradients only", i) from None
            if <uintptr_t>size != nbytes or g.dtype is not self.torch_dtypes[i]:
                raise GradientTypeError(f"the gradient of {self.labels[i]} is {g.dtype} with {g.numel()} "
                                        f"elements; expected {self.torch_dtypes[i]} with {self.t[i].n}", i)
            if not g.is_contiguous():
                if g.is_sparse or str(g.layout) != "torch.strided":
                    raise GradientError(f"the gradient of {self.labels[i]} is {g.layout}; etakit.torch supports "
                                        "dense gradients only", i)
                g = g.contiguous()
                if copies is None:
                    copies = []
                copies.append(g)
            ptr = <uintptr_t>g.data_ptr()
            if self._overlaps_written(ptr, ptr + nbytes, &w):
                raise GradientError(f"the gradient of {self.labels[i]} shares memory with {self._what(w)}, "
                                    "which the step writes", i)
            self.t[i].grad = <const void *>ptr
        if check_only:
            for i in range(n):
                self.t[i].grad = NULL
            return True
        self._launch(k, phases, advance)
        if advance and self.bump is not None:
            self.bump(params)      # autograd's version counters: a graph that saved them sees the change
        return True


class _Moved(Exception):
    """Internal: a parameter's buffer moved (same size); the front end rebuilds the plan."""

    def __init__(self, index):
        super().__init__(index)
        self.index = index
