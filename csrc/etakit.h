/*
 * etakit.h -- public C API of etakit's fused optimizer kernels.
 *
 * Plain C99, no Python.  Each update rule follows its reference
 * implementation (torch.optim, or the package named at its struct below),
 * argument names and defaults included, and makes as few passes over memory
 * as the rule allows (one for every element-wise rule): read param, grad and
 * state, write param and state.  Per-step scalars (bias corrections, step
 * sizes) are computed once per tensor and step in double, outside the
 * element loop; the element loop runs in the tensor's own precision.
 *
 * Ways in, for every rule <r> in ETK_RULE_LIST below:
 *   - etk_<r>_f32 / etk_<r>_f64: one tensor;
 *   - etk_<r>_multi: a list of etk_tensor descriptors, each pointing at its
 *     group's hyperparameters, in one call and one OpenMP parallel region;
 *   - etk_<r>_multi_scheduled: the same with hyperparameters that follow
 *     schedules (see "learning-rate schedules");
 *   - etk_step: the generic entry point all of the above call, with a rule id
 *     and an error report that names the offending tensor or field.
 * etk_rule_info describes each rule (fields, ranges, state slots) so that
 * bindings need no per-rule code.
 *
 * Every function validates all of its arguments before it writes anything:
 * on a non-zero return no buffer has been touched.
 *
 * Results are bit-identical whatever the thread count and whatever SIMD
 * variant the CPU selects: the kernels are compiled without floating-point
 * contraction and use only correctly rounded operations, and reductions
 * (norms, dot products) are summed over fixed blocks in a fixed order.
 */
#ifndef ETAKIT_H
#define ETAKIT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define ETAKIT_VERSION_MAJOR 0
#define ETAKIT_VERSION_MINOR 2
#define ETAKIT_VERSION_PATCH 0

/* ---- status codes (0 is success) ------------------------------------- */
#define ETK_OK 0
#define ETK_EARG (-1)     /* NULL pointer where a buffer is required, bad count or step */
#define ETK_EHPARAM (-2)  /* hyperparameter out of range or not finite */
#define ETK_EDTYPE (-3)   /* unsupported dtype or param/state dtype combination */
#define ETK_ESTATE (-4)   /* a state buffer the options need is missing */
#define ETK_EGROUP (-5)   /* tensor refers to a hyperparameter set that does not exist */
#define ETK_ERULE (-6)    /* unknown rule id */
#define ETK_ESHAPE (-7)   /* matrix shape (rows, cols) missing or inconsistent with n */
#define ETK_ENOMEM (-8)   /* out of memory for per-call scratch */
#define ETK_ENONFINITE (-9) /* a gradient holds inf or NaN (etk_step_opts.nonfinite = ETK_NONFINITE_RAISE) */

/* Human-readable text for a status code. */
const char *etk_strerror(int status);

/* What went wrong, as precisely as known: filled by etk_step and
 * etk_rule_check on failure (fields that do not apply are -1 or NULL). */
typedef struct etk_error {
    int status;
    int64_t tensor;      /* index of the offending tensor */
    int32_t group;       /* index of the offending hyperparameter set */
    int32_t slot;        /* state slot (etk_rule_info.slots) */
    const char *field;   /* hyperparameter field name */
    const char *message; /* why, in words (static storage) */
} etk_error;

/* ---- element types ---------------------------------------------------- */
/* The state dtype is carried separately from the parameter dtype.  Full
 * precision: the state dtype equals the parameter dtype (ETK_FLOAT32 or
 * ETK_FLOAT64, the first ETK_NDTYPES values).  Low-precision state, for
 * float32 parameters and the element-wise rules (etk_rule_lowp): the
 * element-wise state slots hold
 *   ETK_BFLOAT16: bfloat16 (uint16 bits: the upper half of a float32),
 *                 rounded to nearest even or stochastically
 *                 (etk_tensor.stochastic, .seed);
 *   ETK_QINT8:    8-bit blockwise codes (uint8): per block of ETK_QBLOCK
 *                 elements one float32 scale (etk_tensor.absmax[slot]), the
 *                 largest magnitude of the block, and per element the index of
 *                 the nearest value of x / scale in bitsandbytes' dynamic map
 *                 (etk_q8_map: signed, or unsigned for slots whose values are
 *                 never negative, etk_slot_info.nonneg).
 * The step decodes each element's state to float32, runs the rule's float32
 * update and encodes the result (etakit.reference.lowp_step). */
/* bfloat16 parameters (etk_tensor.dtype = ETK_BFLOAT16: param and grad are
 * bfloat16 bits), for the rules that can keep low-precision state
 * (etk_rule_lowp): block by block, param and grad are decoded to float32,
 * the rule's float32 update runs (with float32, bfloat16 or 8-bit state) and
 * the new value is written back rounded to nearest even, stochastically, or
 * with Kahan compensation (etk_tensor.comp; etakit.reference.bf16_param_step).
 * The norm pass and the loss scale read the gradients as float32; the EMA
 * and etk_accumulate do not take bfloat16 tensors. */
typedef enum etk_dtype { ETK_FLOAT32 = 0, ETK_FLOAT64 = 1, ETK_BFLOAT16 = 2, ETK_QINT8 = 3 } etk_dtype;
#define ETK_NDTYPES 2      /* full-precision parameter dtypes (and full-precision state) */
#define ETK_NSTATE_DTYPES 4
#define ETK_QBLOCK 256     /* elements per scale of ETK_QINT8 state */

/* ---- hyperparameters, one struct per rule ----------------------------- */
/* Each struct holds its reference's arguments, reals (double) first, then
 * flags and integers (int).  The valid ranges are in etk_rule_info (and in
 * the Python docstrings); every call checks them. */

/* torch.optim.SGD */
typedef struct etk_sgd_hp {
    double lr, momentum, dampening, weight_decay;
    int nesterov, maximize;
} etk_sgd_hp;

/* torch.optim.Adam and AdamW: decoupled_weight_decay = 1 is AdamW. */
typedef struct etk_adam_hp {
    double lr, beta1, beta2, eps, weight_decay;
    int amsgrad, maximize, decoupled_weight_decay;
} etk_adam_hp;

/* torch.optim.RMSprop */
typedef struct etk_rmsprop_hp {
    double lr, alpha, eps, weight_decay, momentum;
    int centered, maximize;
} etk_rmsprop_hp;

/* torch.optim.Adagrad; initial_accumulator_value is where the state `sum`
 * starts (the caller fills it; see etk_slot_info.init). */
typedef struct etk_adagrad_hp {
    double lr, lr_decay, weight_decay, eps, initial_accumulator_value;
    int maximize;
} etk_adagrad_hp;

/* Lion (Chen et al. 2023), as pytorch_optimizer.Lion: sign of an
 * interpolated momentum; weight_decouple: decay p by lr * weight_decay (or
 * by weight_decay alone with fixed_decay) instead of adding it to the grad. */
typedef struct etk_lion_hp {
    double lr, beta1, beta2, weight_decay;
    int weight_decouple, fixed_decay, maximize;
} etk_lion_hp;

/* torch.optim.NAdam: Adam with Nesterov momentum whose coefficient mu_t =
 * beta1 (1 - 0.96^(t momentum_decay) / 2) warms up; the product of the mu_t
 * is per-tensor scalar state (mu_product).  decoupled_weight_decay = 1 is
 * NAdamW. */
typedef struct etk_nadam_hp {
    double lr, beta1, beta2, eps, weight_decay, momentum_decay;
    int decoupled_weight_decay, maximize;
} etk_nadam_hp;

/* torch.optim.RAdam: Adam with its adaptive step rectified, or plain
 * momentum SGD while the variance estimate is too young (rho_t <= 5). */
typedef struct etk_radam_hp {
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled_weight_decay, maximize;
} etk_radam_hp;

/* torch.optim.Adamax: Adam with an exponentially weighted infinity norm. */
typedef struct etk_adamax_hp {
    double lr, beta1, beta2, eps, weight_decay;
    int maximize;
} etk_adamax_hp;
/* Adan (Xie et al. 2022), as pytorch_optimizer.Adan: Nesterov-style momentum
 * of the gradient and of its difference from the last step.  max_grad_norm >
 * 0 first scales the gradients by min(1, max_grad_norm / (norm + eps)), norm
 * being the L2 norm of the gradients of every tensor of the call whose group
 * has max_grad_norm > 0.  weight_decay divides p by 1 + lr * weight_decay
 * after the update (proximal), or with weight_decouple multiplies it by
 * 1 - lr * weight_decay before. */
typedef struct etk_adan_hp {
    double lr, beta1, beta2, beta3, weight_decay, max_grad_norm, eps;
    int weight_decouple, maximize;
} etk_adan_hp;

/* ADOPT (Taniguchi et al. 2024), as pytorch_optimizer.ADOPT: the gradient
 * normalised by the second moment of earlier steps, then momentum; the first
 * step only initialises the second moment.  clip_lambda = 1 clips the
 * normalised gradient to +-step^0.25 (the reference's default clip_lambda),
 * 0 does not (clip_lambda=None). */
typedef struct etk_adopt_hp {
    double lr, beta1, beta2, weight_decay, eps;
    int clip_lambda, weight_decouple, fixed_decay, maximize;
} etk_adopt_hp;

/* AdEMAMix (Pagliardini et al. 2024), as pytorch_optimizer.AdEMAMix: Adam
 * plus alpha times a slow momentum (beta3).  t_alpha_beta3 > 0 warms alpha
 * and beta3 up over that many steps; 0 does not (the reference's None). */
typedef struct etk_ademamix_hp {
    double lr, beta1, beta2, beta3, weight_decay, alpha, t_alpha_beta3, eps;
    int weight_decouple, fixed_decay, maximize;
} etk_ademamix_hp;
/* LAMB (You et al. 2020), as pytorch_optimizer.Lamb: Adam moments, a
 * per-tensor trust ratio ||p|| / ||update||; rectify (RAdam), pre_norm (the
 * gradients scaled by their joint norm against max_grad_norm, over every
 * tensor of the call whose group has pre_norm), adam (trust ratio 1),
 * adam_debias (no 1 - beta1^t in the step size). */
typedef struct etk_lamb_hp {
    double lr, beta1, beta2, weight_decay, max_grad_norm, eps;
    int weight_decouple, fixed_decay, rectify, degenerated_to_sgd, n_sma_threshold, grad_averaging;
    int adam, pre_norm, maximize, adam_debias;
} etk_lamb_hp;

/* LARS (You et al. 2017), as pytorch_optimizer.LARS: SGD whose gradient,
 * for tensors of two or more dimensions (rows > 0), gets weight decay and
 * the trust ratio trust_coefficient ||p|| / (||g|| + weight_decay ||p||). */
typedef struct etk_lars_hp {
    double lr, weight_decay, momentum, dampening, trust_coefficient;
    int nesterov, maximize;
} etk_lars_hp;
/* torch.optim.Adadelta */
typedef struct etk_adadelta_hp {
    double lr, rho, eps, weight_decay;
    int maximize;
} etk_adadelta_hp;

/* torch.optim.ASGD.  Besides `ax`, each tensor keeps two scalars (double):
 * `eta` (the step size, starts at lr) and `mu` (the averaging weight, starts
 * at 1), both advanced after each step t: eta = lr / (1 + lambd lr t)^alpha,
 * mu = 1 / max(1, t - t0). */
typedef struct etk_asgd_hp {
    double lr, lambd, alpha, t0, weight_decay;
    int maximize;
} etk_asgd_hp;

/* torch.optim.Rprop: etas = (etaminus, etaplus), step_sizes =
 * (step_size_min, step_size_max); the state `step_size` starts at lr. */
typedef struct etk_rprop_hp {
    double lr, etaminus, etaplus, step_size_min, step_size_max;
    int maximize;
} etk_rprop_hp;
/* torch.optim.Adafactor: second moment factored into row and column means
 * for tensors of two or more dimensions (rows > 0), full for vectors; the
 * step is relative to the parameter's RMS and the update's RMS is clipped
 * at d.  eps1 NaN stands for the reference's None: the machine epsilon of
 * the tensor's dtype. */
typedef struct etk_adafactor_hp {
    double lr, beta2_decay, eps1, eps2, d, weight_decay;
    int maximize;
} etk_adafactor_hp;
/* torch.optim.Muon, 2-D parameters only: the element-wise parts of its step
 * (rules/muon.h).  The orthogonalisation of the update between phase 0 and
 * phase 1 (Newton-Schulz iterations: matrix products) is the caller's: run
 * the phases separately with etk_step_opts.phases.  ns_a, ns_b, ns_c are
 * ns_coefficients; adjust_lr_fn is 0 for None or "original", 1 for
 * "match_rms_adamw"; eps, ns_a/b/c and ns_steps are checked here, used by
 * the caller's orthogonalisation. */
typedef struct etk_muon_hp {
    double lr, weight_decay, momentum, ns_a, ns_b, ns_c, eps;
    int nesterov, ns_steps, adjust_lr_fn;
} etk_muon_hp;

/* DoG, distance over gradients (Ivgi, Hinder and Carmon 2023), as the
 * authors' dog.DoG (dog-optimizer 1.0.3); layer_wise = 1 is their LDoG.
 * Plain SGD, p -= eta (grad + weight_decay p), with the step size
 * eta = lr rbar / sqrt(G): rbar the largest distance ||p - x0|| from the
 * initial point so far (reps_rel (1 + ||x0||) at the first step), G the sum
 * of squared gradient norms so far (plus eps).  Norms are over every tensor
 * of a group (etk_step_opts.group_state holds its rbar, G and eta), or, with
 * layer_wise, over each tensor (scalar slots).  init_eta NaN stands for the
 * reference's None; otherwise it is the first step's eta and reps_rel is
 * not used. */
typedef struct etk_dog_hp {
    double reps_rel, lr, weight_decay, eps, init_eta;
    int layer_wise;
} etk_dog_hp;
/* Schedule-Free AdamW, SGD and RAdam (Defazio et al. 2024, "The Road Less
 * Scheduled"), as schedulefree.AdamWScheduleFree, SGDScheduleFree and
 * RAdamScheduleFree (1.4.1): the parameters hold y, between the base
 * iterate z (state "z") and z's running average x; beta1 (SGD: momentum)
 * sets where.  warmup_steps warms lr up linearly (RAdam warms up by its own
 * rectification instead; silent_sgd_phase: no step while it is undefined);
 * the average weights step k by (k + 1)^r lr_max^weight_lr_power.  The
 * group's scalars (etk_rule_info.group_state: k, lr_max, weight_sum,
 * scheduled_lr, train_mode) are per-group state (etk_step_opts.group_state).
 * Besides the step (phase 0) each has two side phases that read no gradient
 * (see etk_step_opts.phases): phase 1 turns the parameters of the groups in
 * train mode into x (eval), phase 2 those in eval mode back into y (train).
 * The step does not look at train_mode: callers refuse a step in eval mode.
 * Step with etk_step and etk_step_opts.group_state (the single-tensor
 * etk_schedulefree_*_f32/_f64, which have no group state, return ETK_EARG). */
typedef struct etk_schedulefree_adamw_hp {
    double lr, beta1, beta2, eps, weight_decay, r, weight_lr_power;
    int warmup_steps;
} etk_schedulefree_adamw_hp;

typedef struct etk_schedulefree_sgd_hp {
    double lr, momentum, weight_decay, r, weight_lr_power;
    int warmup_steps;
} etk_schedulefree_sgd_hp;

typedef struct etk_schedulefree_radam_hp {
    double lr, beta1, beta2, eps, weight_decay, r, weight_lr_power;
    int silent_sgd_phase;
} etk_schedulefree_radam_hp;

/* Prodigy (Mishchenko and Defazio 2024), as prodigyopt.Prodigy 1.1.2: Adam
 * whose step size d is estimated from the distance travelled from the
 * initial parameters p0.  d and its companions (d_max, d_numerator, k, ...)
 * are per-group scalar state (etk_rule_info.group_state) shared by every
 * group: the reference reads them, and betas, beta3, d_coef, growth_rate,
 * decouple and use_bias_correction, from the first group, and groups must
 * have the same lr or lr 0 (etk_rule_check_groups).  beta3 NaN stands for
 * the reference's None (sqrt(beta2)); growth_rate may be +inf.  slice_p: the
 * state s and p0 keep every slice_p-th element (ETK_SLOT_STRIDED). */
typedef struct etk_prodigy_hp {
    double lr, beta1, beta2, beta3, eps, weight_decay, d0, d_coef, growth_rate;
    int decouple, use_bias_correction, safeguard_warmup, slice_p;
} etk_prodigy_hp;

/* D-Adaptation (Defazio and Mishchenko 2023), as the dadaptation 3.2
 * package: DAdaptAdam, DAdaptSGD and DAdaptAdaGrad.  d is per-group scalar
 * state shared by every group (as for Prodigy); layer_scale scales a
 * group's Adam step (a group key of DAdaptAdam, not an argument). */
typedef struct etk_dadapt_adam_hp {
    double lr, beta1, beta2, eps, weight_decay, growth_rate, layer_scale;
    int decouple, use_bias_correction;
} etk_dadapt_adam_hp;

typedef struct etk_dadapt_sgd_hp {
    double lr, momentum, weight_decay, growth_rate;
} etk_dadapt_sgd_hp;

typedef struct etk_dadapt_adagrad_hp {
    double lr, momentum, weight_decay, eps, growth_rate;
} etk_dadapt_adagrad_hp;

/* ---- the list of rules ------------------------------------------------ */
/* X(name, NAME) for every rule; a rule's id is ETK_RULE_<NAME>. */
#define ETK_RULE_LIST(X) \
    X(sgd, SGD) \
    X(adam, ADAM) \
    X(rmsprop, RMSPROP) \
    X(adagrad, ADAGRAD) \
    X(lion, LION) \
    X(nadam, NADAM) \
    X(radam, RADAM) \
    X(adamax, ADAMAX) \
    X(adan, ADAN) \
    X(adopt, ADOPT) \
    X(ademamix, ADEMAMIX) \
    X(lamb, LAMB) \
    X(lars, LARS) \
    X(adadelta, ADADELTA) \
    X(asgd, ASGD) \
    X(rprop, RPROP) \
    X(adafactor, ADAFACTOR) \
    X(muon, MUON) \
    X(dog, DOG) \
    X(schedulefree_adamw, SCHEDULEFREE_ADAMW) \
    X(schedulefree_sgd, SCHEDULEFREE_SGD) \
    X(schedulefree_radam, SCHEDULEFREE_RADAM) \
    X(prodigy, PRODIGY) \
    X(dadapt_adam, DADAPT_ADAM) \
    X(dadapt_sgd, DADAPT_SGD) \
    X(dadapt_adagrad, DADAPT_ADAGRAD)

#define ETK_RULE_ENUM_(name, NAME) ETK_RULE_##NAME,
typedef enum etk_rule_id { ETK_RULE_LIST(ETK_RULE_ENUM_) ETK_NRULES } etk_rule_id;
#undef ETK_RULE_ENUM_

/* ---- multi-tensor descriptors ----------------------------------------- */
#define ETK_MAX_SLOTS 6

/* flags: bit j (j < ETK_MAX_SLOTS) set = state slot j was just created and
 * has never been stepped (SGD's momentum buffer then starts as a copy of the
 * gradient, as in PyTorch). */
#define ETK_FRESH_SLOT(j) ((uint16_t)(1u << (j)))
#define ETK_FRESH_STATE ETK_FRESH_SLOT(0)

/* One parameter tensor and its optimizer state.  param, grad and every
 * element-wise slot are contiguous buffers of n elements; a slot's kind
 * (etk_slot_info.shape) says otherwise (a double scalar, say).  Which slot
 * holds what, and which are needed for given hyperparameters, is in
 * etk_rule_info; unused entries may be NULL.  step is the 1-based number of
 * the step being taken for this tensor (PyTorch increments its step before
 * using it).  group indexes the array of hyperparameter structs passed with
 * the call.  rows and cols describe the trailing matrix of a tensor of shape
 * (..., rows, cols) for rules that need it (0 for a vector); the slots of
 * kind ETK_SLOT_ROWS and _COLS are used by tensors with rows > 0 only, those
 * of kind ETK_SLOT_VECTOR by tensors with rows == 0 only.  Buffers of
 * different tensors must not overlap; grad must not overlap any written
 * buffer.  Every buffer is aligned to its element type (4 bytes for float32,
 * 2 for bfloat16, 8 for float64 and double scalars), as a C array of that
 * type is. */
typedef struct etk_tensor {
    void *param;
    const void *grad;
    void *state[ETK_MAX_SLOTS];
    size_t n;
    int64_t rows, cols;
    int64_t step;
    uint32_t group;
    uint8_t dtype;       /* etk_dtype of param and grad */
    uint8_t state_dtype; /* etk_dtype of the element-wise state buffers */
    uint16_t flags;      /* ETK_FRESH_SLOT bits */
    /* low-precision state (see etk_dtype); ignored for full-precision state */
    uint8_t stochastic;  /* ETK_BFLOAT16: 1 = stochastic rounding, 0 = to nearest even */
    uint64_t seed;       /* stochastic rounding: this tensor's stream (etakit.reference.sr_bits) */
    float *absmax[ETK_MAX_SLOTS]; /* ETK_QINT8: ceil(n / ETK_QBLOCK) scales per element-wise slot */
    /* NULL, or n elements of the parameter's dtype: its exponential moving
     * average, updated after the step (etk_step_opts.ema_weight) */
    void *ema;
    /* bfloat16 parameters (dtype ETK_BFLOAT16; see etk_dtype): how the new
     * float32 value is written back.  comp non-NULL: Kahan summation with
     * this compensation buffer (n bfloat16 values, updated); else
     * param_stochastic = 1: stochastic rounding from the stream seed; else
     * rounding to nearest even.  Ignored for other parameter dtypes. */
    void *comp;
    uint8_t param_stochastic;
} etk_tensor;

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
 * byte offset `offset` of hps[group] becomes schedule(k).  Only fields marked
 * schedulable in etk_rule_info can be scheduled. */
typedef struct etk_hp_schedule {
    uint32_t group;
    uint32_t offset;
    const etk_schedule *schedule;
} etk_hp_schedule;

/* ---- the generic step ------------------------------------------------- */
/* Options of one step; a zeroed struct (or NULL) means none. */
typedef struct etk_step_opts {
    const etk_hp_schedule *sched; /* scheduled hyperparameters, evaluated at k */
    size_t nsched;
    int64_t k;                    /* the step count schedules are evaluated at */
    /* Rules with per-group scalar state (etk_rule_info.ngroup_state > 0, e.g.
     * an adapted step size): nhps * ngroup_state doubles, read and written. */
    double *group_state;
    /* The phases to run: bit p runs phase p; 0 runs them all (a whole step).
     * For rules whose step has host work between phases (Muon: matrix
     * products on BLAS), call once for the phases before it and once for the
     * rest.  Bits past the rule's last phase are ignored; a rule's `finish`
     * runs in the call that runs its last phase.
     * Side phases: a rule may have passes that are not part of a step and
     * read no gradient (the schedule-free rules' switch between the point
     * they train at and the average they are evaluated at), numbered after
     * its step phases.  They run only in a call whose `phases` names no
     * step phase (a call that names a step phase ignores side-phase bits);
     * such a call may leave every tensor's grad NULL. */
    unsigned phases;

    /* The training loop's other passes, fused with the step (all zero: none).
     * Gradients are read as grad * m with
     *   m = (1 / grad_scale) * min(1, max_grad_norm / (norm + 1e-6)),
     * the clipping factor of torch.nn.utils.clip_grad_norm_ (1 when
     * max_grad_norm is 0), formed in double and rounded to the parameter
     * dtype once per call; norm is the global norm of grad / grad_scale over
     * every tensor of the call.  The gradient buffers are not written: each
     * block of ETK_BLOCK elements is scaled into a buffer in L1 that the
     * rule's loop reads.  The norm takes one read pass over the gradients
     * before anything is written, made when max_grad_norm > 0, nonfinite is
     * not ETK_NONFINITE_IGNORE or report_norm is set; it is summed over fixed
     * blocks in a fixed order (etakit.reference.global_grad_norm), so it is
     * the same for any thread count. */
    double grad_scale;     /* > 0 (a mixed-precision loss scale), or 0 for 1 */
    double max_grad_norm;  /* > 0: clip to this global norm; 0: no clipping */
    int norm_inf;          /* 0: the 2-norm; 1: the largest magnitude */
    int nonfinite;         /* ETK_NONFINITE_*: what a gradient with inf or NaN does */
    int report_norm;       /* make the norm pass for etk_step_report.grad_norm alone */
    /* 0 < w <= 1: after the step, each tensor's ema (if not NULL) moves
     * towards the new parameters, ema = torch.lerp(ema, param, w) in the
     * parameter dtype, in the pass of the rule's last phase; 0: no EMA */
    double ema_weight;
    struct etk_step_report *report; /* NULL, or filled on return */
} etk_step_opts;

/* etk_step_opts.nonfinite: a call whose gradients hold inf or NaN (a
 * non-finite global norm) proceeds (IGNORE: as torch.optim), returns ETK_OK
 * having written nothing (SKIP; report->skipped = 1), or returns
 * ETK_ENONFINITE having written nothing, with err->tensor the first such
 * tensor (RAISE). */
#define ETK_NONFINITE_IGNORE 0
#define ETK_NONFINITE_SKIP 1
#define ETK_NONFINITE_RAISE 2

/* The global norm of the gradients of `count` tensors (their grad, n and
 * dtype), as a step with clipping forms it (norm_inf 0: the 2-norm; 1: the
 * largest magnitude), the same for any thread count; *first_nonfinite (if not
 * NULL): the first tensor whose gradient holds inf or NaN, or -1.  Reads
 * only. */
int etk_grad_norm(const etk_tensor *tensors, size_t count, int norm_inf, double *norm, int64_t *first_nonfinite);

/* The sums of squares of grad (n elements of dtype ETK_FLOAT32 or
 * ETK_FLOAT64) over each block of ETK_BLOCK elements, in float64, formed as
 * the norm pass forms them (added in order they give the tensor's sum), into
 * sums[0 .. ceil(n / ETK_BLOCK)); serial.  For callers that combine the norm
 * of pieces held in several places (a sharded optimizer). */
int etk_grad_block_sums(const void *grad, int dtype, size_t n, double *sums);

/* Gradient accumulation, every tensor in one threaded call: param = weight *
 * grad (first) or param + weight * grad, in the tensor's dtype (the param
 * field is the accumulation buffer). */
int etk_accumulate(const etk_tensor *tensors, size_t count, double weight, int first);

typedef struct etk_step_report {
    double grad_norm;    /* the global gradient norm (after grad_scale, before clipping); NaN if not made */
    double grad_mul;     /* the factor the gradients were read with (1 if none) */
    int skipped;         /* 1: skipped for a non-finite gradient; nothing was written */
    int64_t nonfinite_tensor; /* the first tensor whose gradient is not finite, or -1 */
} etk_step_report;

/* One step of `rule` over `count` tensors with `nhps` hyperparameter structs
 * of that rule's type.  On failure nothing has been written and, when err is
 * not NULL, *err says what was refused. */
int etk_step(int rule, const etk_tensor *tensors, size_t count, const void *hps, size_t nhps,
             const etk_step_opts *opts, etk_error *err);

/* The typed entry points of every rule, generated from ETK_RULE_LIST:
 *   int etk_<r>_multi(const etk_tensor *, size_t count, const etk_<r>_hp *, size_t nhps);
 *   int etk_<r>_multi_scheduled(..., const etk_hp_schedule *, size_t nsched, int64_t k);
 *   int etk_<r>_f32(float *param, const float *grad, void *const *state, size_t n,
 *                   const etk_<r>_hp *hp, int64_t step);      (and _f64)
 * For the single-tensor functions, state[j] is slot j of etk_rule_info (NULL
 * where unused), every slot is taken as fresh when step == 1, and tensors
 * are vectors (rows = cols = 0).  A rule with per-group scalar state
 * (etk_rule_info.ngroup_state > 0: Prodigy, D-Adaptation) needs it passed
 * in etk_step_opts.group_state: its _f32, _f64, _multi and _multi_scheduled
 * entry points return ETK_EARG (use etk_step). */
#define ETK_RULE_API_(name, NAME)                                                                          \
    int etk_##name##_multi(const etk_tensor *tensors, size_t count, const etk_##name##_hp *hps, size_t nhps); \
    int etk_##name##_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_##name##_hp *hps,     \
                                     size_t nhps, const etk_hp_schedule *sched, size_t nsched, int64_t k);    \
    int etk_##name##_f32(float *param, const float *grad, void *const *state, size_t n,                      \
                         const etk_##name##_hp *hp, int64_t step);                                            \
    int etk_##name##_f64(double *param, const double *grad, void *const *state, size_t n,                    \
                         const etk_##name##_hp *hp, int64_t step);
ETK_RULE_LIST(ETK_RULE_API_)
#undef ETK_RULE_API_

/* ---- what each rule is ------------------------------------------------ */
#define ETK_FIELD_REAL 0 /* double */
#define ETK_FIELD_FLAG 1 /* int, 0 or 1 */
#define ETK_FIELD_INT 2  /* int */
#define ETK_FIELD_REAL_OR_NONE 3 /* double, or NaN for the reference's None (a rule-defined default) */

typedef struct etk_field_info {
    const char *name;
    uint32_t offset;   /* byte offset in the rule's struct */
    uint8_t kind;      /* ETK_FIELD_* */
    uint8_t schedulable;
    uint8_t lo_open, hi_open;
    double lo, hi;     /* valid range (flags: [0, 1]); reals are finite, except +inf where hi is +inf
                          and the range is closed there (hi_open == 0: a limit that may be off) */
} etk_field_info;

#define ETK_SLOT_FULL 0   /* n elements of the state dtype */
#define ETK_SLOT_SCALAR 1 /* one double per tensor */
#define ETK_SLOT_ROWS 2   /* n / cols elements: one per row of the trailing matrix (matrices only) */
#define ETK_SLOT_COLS 3   /* n / rows elements: one per column of the trailing matrix (matrices only) */
#define ETK_SLOT_VECTOR 4 /* n elements, for tensors without a matrix form (rows == 0) only */
#define ETK_SLOT_STRIDED 5 /* ceil(n / s) elements: the parameter's elements 0, s, 2 s, ..., where s >= 1 is
                              the integer hyperparameter field etk_slot_info.stride_field (Prodigy's slice_p) */

#define ETK_INIT_ZERO 0  /* filled with 0 */
#define ETK_INIT_FIELD 1 /* filled with the hyperparameter field init_field */
#define ETK_INIT_PARAM 2 /* a copy of the parameter */
#define ETK_INIT_ONE 3   /* filled with 1 */
#define ETK_INIT_WORK 4  /* working space between phases, not optimizer state: the caller
                            provides it, its contents on entry do not matter, it is not saved */
#define ETK_INIT_VALUE 5 /* filled with etk_slot_info.init_value */

typedef struct etk_slot_info {
    const char *name;  /* the reference implementation's state name */
    uint8_t shape;     /* ETK_SLOT_* */
    uint8_t init;      /* ETK_INIT_*: how the caller fills a new slot (ETK_INIT_PARAM: a copy of the
                          elements the slot keeps) */
    uint16_t init_field;
    uint16_t stride_field; /* ETK_SLOT_STRIDED: index of the int field s */
    double init_value;     /* ETK_INIT_VALUE: what a new slot is filled with */
    uint8_t nonneg;        /* the slot's values are never negative (a second moment): 8-bit state uses
                              the unsigned map */
} etk_slot_info;

#define ETK_RULE_USES_STEP 1u /* tensor.step is read (must be >= 1) */
#define ETK_RULE_MATRIX 2u    /* tensors with rows > 0 use the matrix form */
#define ETK_RULE_MATRIX_ONLY 4u /* every non-empty tensor must be a matrix (rows, cols > 0) */
#define ETK_RULE_SERIAL 8u      /* element loops on the calling thread: the step's cost is host work
                                   (BLAS, with threads of its own) that OpenMP threads would contend with */

typedef struct etk_rule_info {
    const char *name;
    size_t hp_size;
    const etk_field_info *fields;
    size_t nfields;
    const etk_slot_info *slots;
    size_t nslots;
    unsigned flags;     /* ETK_RULE_* */
    /* names of the rule's per-group scalar state (etk_step_opts.group_state) */
    const char *const *group_state;
    size_t ngroup_state;
} etk_rule_info;

/* NULL for an unknown id. */
const etk_rule_info *etk_rule_info_get(int rule);
/* The id of the rule called `name`, or ETK_ERULE. */
int etk_rule_find(const char *name);
/* Check one hyperparameter struct (ranges and the rule's own constraints). */
int etk_rule_check(int rule, const void *hp, etk_error *err);
/* Check the constraints across the nhps structs of one call (groups that
 * must share a value: Prodigy's lr); each struct must pass etk_rule_check.
 * ETK_OK, or ETK_EHPARAM with err->group, err->field and err->message set. */
int etk_rule_check_groups(int rule, const void *hps, size_t nhps, etk_error *err);
/* Bit j set: state slot j is needed for these hyperparameters. */
unsigned etk_rule_needs(int rule, const void *hp);
/* 1 if the rule can keep low-precision state (ETK_BFLOAT16, ETK_QINT8): one
 * element-wise phase without reductions, full or scalar slots only. */
int etk_rule_lowp(int rule);

/* ---- low-precision state: the codecs (lowp.c) --------------------------- */
/* The 256 sorted values of bitsandbytes' dynamic map, create_dynamic_map(signed)
 * with its defaults (7 exponent bits, 8 bits), built the same way. */
void etk_q8_map(int is_signed, float out[256]);
/* float32 <-> state encodings, serial, as the step encodes: bfloat16 bits
 * (stochastic: the bits of elements index0.. of state slot `slot` of a
 * tensor with stream `seed` at step `step`), and 8-bit blockwise codes of
 * ceil(n / ETK_QBLOCK) blocks. */
void etk_bf16_encode(const float *x, uint16_t *out, size_t n, int stochastic, uint64_t seed, int64_t step,
                     unsigned slot, size_t index0);
void etk_bf16_decode(const uint16_t *x, float *out, size_t n);
void etk_q8_encode(const float *x, uint8_t *codes, float *absmax, size_t n, int is_signed);
void etk_q8_decode(const uint8_t *codes, const float *absmax, float *out, size_t n, int is_signed);

/* ---- memory-bandwidth probe ------------------------------------------- */
/* The physical limit of a step: the same access pattern as an update rule
 * (read grad, read and write param and every non-NULL element-wise state
 * buffer) with trivial arithmetic (x += grad), on the same threads and SIMD
 * variant. */
int etk_probe_multi(const etk_tensor *tensors, size_t count);

/* ---- runtime configuration (config.c) --------------------------------- */
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
