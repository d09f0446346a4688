# Cython declarations of the rule-agnostic part of csrc/etakit.h (the generic
# step, the rule table, schedules, configuration), shared by etakit._core and
# the generated etakit/cykernels.pxd.  The per-rule structs and typed entry
# points are generated from the header into cykernels.pxd by setup.py.
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "etakit.h" nogil:
    enum: ETK_MAX_SLOTS
    enum: ETK_NRULES
    enum: ETK_OK
    enum: ETK_EHPARAM
    enum: ETK_ENONFINITE
    enum: ETK_NONFINITE_IGNORE
    enum: ETK_NONFINITE_SKIP
    enum: ETK_NONFINITE_RAISE
    enum: ETK_FIELD_REAL
    enum: ETK_FIELD_FLAG
    enum: ETK_FIELD_INT
    enum: ETK_FIELD_REAL_OR_NONE
    enum: ETK_SLOT_FULL
    enum: ETK_SLOT_SCALAR
    enum: ETK_SLOT_ROWS
    enum: ETK_SLOT_COLS
    enum: ETK_SLOT_VECTOR
    enum: ETK_SLOT_STRIDED
    enum: ETK_INIT_VALUE
    enum: ETK_RULE_USES_STEP
    enum: ETK_RULE_MATRIX
    enum: ETK_RULE_MATRIX_ONLY
    int ETK_FLOAT32, ETK_FLOAT64, ETK_BFLOAT16

    ctypedef struct etk_tensor:
        void *param
        const void *grad
        void *state[6]
        size_t n
        int64_t rows, cols
        int64_t step
        uint32_t group
        uint8_t dtype
        uint8_t state_dtype
        uint16_t flags
        uint8_t stochastic
        uint64_t seed
        float *absmax[6]
        void *ema
        void *comp
        uint8_t param_stochastic

    ctypedef struct etk_error:
        int status
        int64_t tensor
        int32_t group
        int32_t slot
        const char *field
        const char *message

    ctypedef struct etk_sched_node:
        int32_t kind
        int32_t mode
        int32_t child
        uint32_t data_off, data_len
        double p[6]
    ctypedef struct etk_schedule:
        const etk_sched_node *nodes
        size_t nnodes
        const double *data
        size_t ndata
    ctypedef struct etk_hp_schedule:
        uint32_t group
        uint32_t offset
        const etk_schedule *schedule

    ctypedef struct etk_step_report:
        double grad_norm
        double grad_mul
        int skipped
        int64_t nonfinite_tensor

    ctypedef struct etk_step_opts:
        const etk_hp_schedule *sched
        size_t nsched
        int64_t k
        double *group_state
        unsigned phases
        double grad_scale
        double max_grad_norm
        int norm_inf
        int nonfinite
        int report_norm
        double ema_weight
        etk_step_report *report

    ctypedef struct etk_field_info:
        const char *name
        uint32_t offset
        uint8_t kind
        uint8_t schedulable
        uint8_t lo_open, hi_open
        double lo, hi
    ctypedef struct etk_slot_info:
        const char *name
        uint8_t shape
        uint8_t init
        uint16_t init_field
        uint16_t stride_field
        double init_value
        uint8_t nonneg
    ctypedef struct etk_rule_info:
        const char *name
        size_t hp_size
        const etk_field_info *fields
        size_t nfields
        const etk_slot_info *slots
        size_t nslots
        unsigned flags
        const char *const *group_state
        size_t ngroup_state

    const char *etk_strerror(int status)
    int etk_step(int rule, const etk_tensor *tensors, size_t count, const void *hps, size_t nhps,
                 const etk_step_opts *opts, etk_error *err)
    int etk_probe_multi(const etk_tensor *t, size_t count)
    int etk_grad_norm(const etk_tensor *tensors, size_t count, int norm_inf, double *norm,
                      int64_t *first_nonfinite)
    int etk_grad_block_sums(const void *grad, int dtype, size_t n, double *sums)
    int etk_accumulate(const etk_tensor *tensors, size_t count, double weight, int first)
    const etk_rule_info *etk_rule_info_get(int rule)
    int etk_rule_find(const char *name)
    int etk_rule_check(int rule, const void *hp, etk_error *err)
    int etk_rule_check_groups(int rule, const void *hps, size_t nhps, etk_error *err)
    unsigned etk_rule_needs(int rule, const void *hp)
    int etk_rule_lowp(int rule)
    void etk_q8_map(int is_signed, float *out)
    void etk_bf16_encode(const float *x, uint16_t *out, size_t n, int stochastic, uint64_t seed, int64_t step,
                         unsigned slot, size_t index0) nogil
    void etk_bf16_decode(const uint16_t *x, float *out, size_t n) nogil
    void etk_q8_encode(const float *x, uint8_t *codes, float *absmax, size_t n, int is_signed) nogil
    void etk_q8_decode(const uint8_t *codes, const float *absmax, float *out, size_t n, int is_signed) nogil

    int etk_schedule_check(const etk_schedule *s)
    double etk_schedule_eval(const etk_schedule *s, int64_t k)
    int etk_schedule_values(const etk_schedule *s, int64_t k0, double *out, size_t n)

    int etk_get_num_threads()
    void etk_set_num_threads(int n)
    size_t etk_parallel_min()
    void etk_set_parallel_min(size_t n)
    int etk_has_openmp()
    int etk_set_flush_denormal(int on)
    int etk_get_flush_denormal()
    const char *etk_simd_variant()
    int etk_set_simd_variant(const char *name)
    const char *etk_simd_available()
