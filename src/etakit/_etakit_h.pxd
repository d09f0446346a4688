# Cython declarations of csrc/etakit.h, shared by etakit._core and
# etakit.cykernels (and usable by any Cython code that links the C library).
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t

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
    int etk_sgd_f32(float *, const float *, float *, size_t, const etk_sgd_hp *, int)
    int etk_sgd_f64(double *, const double *, double *, size_t, const etk_sgd_hp *, int)
    int etk_adam_f32(float *, const float *, float *, float *, float *, size_t, const etk_adam_hp *, int64_t)
    int etk_adam_f64(double *, const double *, double *, double *, double *, size_t, const etk_adam_hp *, int64_t)
    int etk_rmsprop_f32(float *, const float *, float *, float *, float *, size_t, const etk_rmsprop_hp *)
    int etk_rmsprop_f64(double *, const double *, double *, double *, double *, size_t, const etk_rmsprop_hp *)
    int etk_adagrad_f32(float *, const float *, float *, size_t, const etk_adagrad_hp *, int64_t)
    int etk_adagrad_f64(double *, const double *, double *, size_t, const etk_adagrad_hp *, int64_t)

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
    int etk_schedule_check(const etk_schedule *s)
    double etk_schedule_eval(const etk_schedule *s, int64_t k)
    int etk_schedule_values(const etk_schedule *s, int64_t k0, double *out, size_t n)
    int etk_sgd_multi_scheduled(const etk_tensor *t, size_t count, const etk_sgd_hp *hps, size_t nhps,
                                const etk_hp_schedule *sc, size_t nsc, int64_t k)
    int etk_adam_multi_scheduled(const etk_tensor *t, size_t count, const etk_adam_hp *hps, size_t nhps,
                                 const etk_hp_schedule *sc, size_t nsc, int64_t k)
    int etk_rmsprop_multi_scheduled(const etk_tensor *t, size_t count, const etk_rmsprop_hp *hps, size_t nhps,
                                    const etk_hp_schedule *sc, size_t nsc, int64_t k)
    int etk_adagrad_multi_scheduled(const etk_tensor *t, size_t count, const etk_adagrad_hp *hps, size_t nhps,
                                    const etk_hp_schedule *sc, size_t nsc, int64_t k)

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
