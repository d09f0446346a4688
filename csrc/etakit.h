/*
 * etakit.h -- public C API of etakit's fused optimizer kernels.
 *
 * Plain C99, no Python.  Every update rule follows PyTorch's torch.optim
 * semantics (argument names and defaults included) and touches each element
 * of each buffer once per step: read param, grad and state, write param and
 * state.  Per-step scalars (bias corrections, step sizes) are computed once
 * per tensor and step in double, outside the element loop; the element loop
 * runs in the tensor's own precision.
 *
 * Two ways in:
 *   - single-tensor functions, one per rule and dtype (etk_adam_f32, ...);
 *   - multi-tensor functions (etk_adam_multi, ...) that update a list of
 *     etk_tensor descriptors, each pointing at its group's hyperparameters,
 *     in one call and one OpenMP parallel region.
 *
 * Every function validates all of its arguments before it writes anything:
 * on a non-zero return no buffer has been touched.
 *
 * Results are bit-identical whatever the thread count and whatever SIMD
 * variant the CPU selects: the kernels are element-wise, compiled without
 * floating-point contraction, and use only correctly rounded operations.
 */
#ifndef ETAKIT_H
#define ETAKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ETAKIT_VERSION_MAJOR 0
#define ETAKIT_VERSION_MINOR 1
#define ETAKIT_VERSION_PATCH 0

/* ---- status codes (0 is success) ------------------------------------- */
#define ETK_OK 0
#define ETK_EARG (-1)     /* NULL pointer where a buffer is required, bad count */
#define ETK_EHPARAM (-2)  /* hyperparameter out of range or not finite */
#define ETK_EDTYPE (-3)   /* unsupported dtype or param/state dtype combination */
#define ETK_ESTATE (-4)   /* a state buffer the options need is missing */
#define ETK_EGROUP (-5)   /* tensor refers to a hyperparameter set that does not exist */

/* Human-readable text for a status code. */
const char *etk_strerror(int status);

/* ---- element types ---------------------------------------------------- */
/* The state dtype is carried separately from the parameter dtype so that
 * reduced-precision optimizer state (bfloat16, 8-bit) can be added as new
 * (param, state) combinations without changing any signature.  Today the
 * state dtype must equal the parameter dtype. */
typedef enum etk_dtype { ETK_FLOAT32 = 0, ETK_FLOAT64 = 1 } etk_dtype;
#define ETK_NDTYPES 2

/* ---- hyperparameters -------------------------------------------------- */
/* The hyperparameter structs hold exactly PyTorch's arguments.  Flags are
 * 0 or 1.  Ranges (checked on every call): all values finite, lr >= 0,
 * weight_decay >= 0, eps >= 0, momentum >= 0, betas and alpha in [0, 1),
 * dampening in [0, 1]; nesterov needs momentum > 0 and dampening == 0. */

typedef struct etk_sgd_hp {
    double lr, momentum, dampening, weight_decay;
    int nesterov, maximize;
} etk_sgd_hp;

/* Adam and AdamW share one rule: decoupled_weight_decay = 1 is AdamW. */
typedef struct etk_adam_hp {
    double lr, beta1, beta2, eps, weight_decay;
    int amsgrad, maximize, decoupled_weight_decay;
} etk_adam_hp;

typedef struct etk_rmsprop_hp {
    double lr, alpha, eps, weight_decay, momentum;
    int centered, maximize;
} etk_rmsprop_hp;

/* initial_accumulator_value is applied when the caller fills the state sum;
 * the step itself does not need it. */
typedef struct etk_adagrad_hp {
    double lr, lr_decay, weight_decay, eps;
    int maximize;
} etk_adagrad_hp;

/* ---- multi-tensor descriptors ----------------------------------------- */
/* Flag: the tensor's state buffers have not been initialised yet (SGD with
 * momentum copies the first gradient into its buffer, as PyTorch does). */
#define ETK_FRESH_STATE 1u

/* One parameter tensor and its optimizer state, as contiguous buffers of n
 * elements.  state[] use, by rule (unused entries may be NULL):
 *   SGD:     state[0] momentum_buffer (needed when momentum != 0)
 *   Adam(W): state[0] exp_avg, state[1] exp_avg_sq,
 *            state[2] max_exp_avg_sq (needed when amsgrad)
 *   RMSprop: state[0] square_avg, state[1] momentum_buffer (momentum > 0),
 *            state[2] grad_avg (centered)
 *   Adagrad: state[0] sum
 * step is the 1-based number of the step being taken for this tensor
 * (PyTorch increments its step before using it).  group indexes the array
 * of hyperparameter structs passed with the call.  Buffers of different
 * tensors must not overlap; grad must not overlap any written buffer. */
typedef struct etk_tensor {
    void *param;
    const void *grad;
    void *state[3];
    size_t n;
    int64_t step;
    uint32_t group;
    uint8_t dtype;       /* etk_dtype of param and grad */
    uint8_t state_dtype; /* etk_dtype of the state buffers */
    uint16_t flags;      /* ETK_FRESH_STATE */
} etk_tensor;

int etk_sgd_multi(const etk_tensor *tensors, size_t count, const etk_sgd_hp *hps, size_t nhps);
int etk_adam_multi(const etk_tensor *tensors, size_t count, const etk_adam_hp *hps, size_t nhps);
int etk_rmsprop_multi(const etk_tensor *tensors, size_t count, const etk_rmsprop_hp *hps, size_t nhps);
int etk_adagrad_multi(const etk_tensor *tensors, size_t count, const etk_adagrad_hp *hps, size_t nhps);

/* ---- single-tensor entry points --------------------------------------- */
/* momentum_buffer may be NULL when momentum == 0; first_step != 0 makes
 * the buffer a copy of the (decayed) gradient, as on PyTorch's first step. */
int etk_sgd_f32(float *param, const float *grad, float *momentum_buffer, size_t n,
                const etk_sgd_hp *hp, int first_step);
int etk_sgd_f64(double *param, const double *grad, double *momentum_buffer, size_t n,
                const etk_sgd_hp *hp, int first_step);
/* max_exp_avg_sq may be NULL unless amsgrad. */
int etk_adam_f32(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                 float *max_exp_avg_sq, size_t n, const etk_adam_hp *hp, int64_t step);
int etk_adam_f64(double *param, const double *grad, double *exp_avg, double *exp_avg_sq,
                 double *max_exp_avg_sq, size_t n, const etk_adam_hp *hp, int64_t step);
/* momentum_buffer may be NULL unless momentum > 0, grad_avg unless centered. */
int etk_rmsprop_f32(float *param, const float *grad, float *square_avg, float *momentum_buffer,
                    float *grad_avg, size_t n, const etk_rmsprop_hp *hp);
int etk_rmsprop_f64(double *param, const double *grad, double *square_avg, double *momentum_buffer,
                    double *grad_avg, size_t n, const etk_rmsprop_hp *hp);
int etk_adagrad_f32(float *param, const float *grad, float *sum, size_t n,
                    const etk_adagrad_hp *hp, int64_t step);
int etk_adagrad_f64(double *param, const double *grad, double *sum, size_t n,
                    const etk_adagrad_hp *hp, int64_t step);

/* ---- learning-rate schedules ----------------------------------------- */
/* A schedule is a pure function of the step count k (completed steps, from
 * 0), stored as a small tree of nodes in post-order: children come before
 * their parent, the root is the last node.  Node parameters (p[], mode) by
 * kind are documented in schedule.c; variable-length parts (milestones,
 * boundaries, values, child indices) live in data[data_off .. +data_len). */
typedef enum etk_sched_kind {
    ETK_S_CONSTANT = 0,
    ETK_S_LINEAR,
    ETK_S_STEP,
    ETK_S_MULTISTEP,
    ETK_S_EXPONENTIAL,
    ETK_S_POLYNOMIAL,
    ETK_S_COSINE,
    ETK_S_COSINE_RESTARTS,
    ETK_S_ONE_CYCLE,
    ETK_S_CYCLIC,
    ETK_S_INVERSE_SQRT,
    ETK_S_WARMUP_COSINE,
    ETK_S_WSD,
    ETK_S_PIECEWISE,
    ETK_S_JOIN,
    ETK_S_WARMUP,
    ETK_S_SCALE,
    ETK_S_PLATEAU,
    ETK_S_NKINDS
} etk_sched_kind;

typedef struct etk_sched_node {
    int32_t kind;
    int32_t mode;
    int32_t child;       /* index of the single child (WARMUP, SCALE, PLATEAU) */
    uint32_t data_off, data_len;
    double p[6];
} etk_sched_node;

typedef struct etk_schedule {
    const etk_sched_node *nodes;
    size_t nnodes;
    const double *data;
    size_t ndata;
} etk_schedule;

/* Structural check (kinds, child order, data bounds, finite parameters). */
int etk_schedule_check(const etk_schedule *s);
/* s(k) for k >= 0 (a negative k is taken as 0).  s must have passed the check. */
double etk_schedule_eval(const etk_schedule *s, int64_t k);
/* out[i] = s(k0 + i) for i < n, threaded for large n; equal to etk_schedule_eval.
 * ETK_EARG when k0 + n - 1 does not fit in int64 (nothing is written). */
int etk_schedule_values(const etk_schedule *s, int64_t k0, double *out, size_t n);

/* A hyperparameter that follows a schedule: before a step, the double at
 * byte offset `offset` of hps[group] becomes schedule(k).  Only the leading
 * double fields of the hyperparameter structs can be scheduled. */
typedef struct etk_hp_schedule {
    uint32_t group;
    uint32_t offset;
    const etk_schedule *schedule;
} etk_hp_schedule;

/* The multi-tensor steps with scheduled hyperparameters, at step count k
 * (the k-th step, from 0).  The scheduled values are checked like the
 * others, before anything is written. */
int etk_sgd_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_sgd_hp *hps, size_t nhps,
                            const etk_hp_schedule *sched, size_t nsched, int64_t k);
int etk_adam_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_adam_hp *hps, size_t nhps,
                             const etk_hp_schedule *sched, size_t nsched, int64_t k);
int etk_rmsprop_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_rmsprop_hp *hps,
                                size_t nhps, const etk_hp_schedule *sched, size_t nsched, int64_t k);
int etk_adagrad_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_adagrad_hp *hps,
                                size_t nhps, const etk_hp_schedule *sched, size_t nsched, int64_t k);

/* ---- memory-bandwidth probe ------------------------------------------- */
/* The physical limit of a step: the same access pattern as an update rule
 * (read grad, read and write param and every non-NULL state buffer) with
 * trivial arithmetic (x += grad), on the same threads and SIMD variant. */
int etk_probe_multi(const etk_tensor *tensors, size_t count);

/* ---- runtime configuration -------------------------------------------- */
/* Threads used for a call whose total size is at least etk_parallel_min()
 * elements.  Backed by OpenMP's nthreads ICV, so OMP_NUM_THREADS and
 * threadpoolctl apply.  1 when built without OpenMP. */
int etk_get_num_threads(void);
void etk_set_num_threads(int n);
size_t etk_parallel_min(void);
/* Tuning knob for that threshold (default 16384; 0 restores the default). */
void etk_set_parallel_min(size_t n);
int etk_has_openmp(void);

/* Flush denormals to zero inside the kernels (x86 FTZ and DAZ, set on each
 * kernel thread for the duration of a call and restored after).  Float32
 * Adam on near-zero gradients otherwise spends most of its time in denormal
 * arithmetic.  Off by default: with it on, results that would be denormal
 * become 0 and differ from etakit.reference.  Returns 1 if supported here. */
int etk_set_flush_denormal(int on);
int etk_get_flush_denormal(void);

/* SIMD variant in use: "baseline", "avx2" or "avx512".  Chosen at first
 * use from the CPU, or from the environment variable ETAKIT_SIMD when it
 * names a variant the CPU supports. */
const char *etk_simd_variant(void);
/* Switch variant; returns 0, or ETK_EARG if unknown or unsupported here. */
int etk_set_simd_variant(const char *name);
/* Space-separated list of the variants this CPU can run. */
const char *etk_simd_available(void);

#ifdef __cplusplus
}
#endif
#endif /* ETAKIT_H */
