/*
 * etk_internal.h -- what the engine (engine.c) and the element loops
 * (kernels.c, kernels_body.h) share.  Not installed, not public.
 *
 * A rule's per-step scalars are prepared once per tensor and step in double
 * (etk_*_coef) by the engine; the element loop casts them to the element
 * type once and does nothing else per element but the update itself.
 */
#ifndef ETK_INTERNAL_H
#define ETK_INTERNAL_H

#include "etakit.h"

/* Weight-decay modes of the element loops. */
#define ETK_WD_NONE 0
#define ETK_WD_L2 1        /* grad += weight_decay * param */
#define ETK_WD_DECOUPLED 2 /* param *= 1 - lr * weight_decay (AdamW) */

typedef struct etk_sgd_coef {
    double neg_lr, momentum, one_minus_dampening, weight_decay, gsign;
    int wd, use_momentum, nesterov, fresh;
} etk_sgd_coef;

typedef struct etk_adam_coef {
    double one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay;
    double bias_correction2_sqrt, neg_step_size, gsign;
    int wd, amsgrad;
} etk_adam_coef;

typedef struct etk_rmsprop_coef {
    double neg_lr, alpha, one_minus_alpha, eps, weight_decay, momentum, gsign;
    int wd, centered, use_momentum;
} etk_rmsprop_coef;

typedef struct etk_adagrad_coef {
    double neg_clr, eps, weight_decay, gsign;
    int wd;
} etk_adagrad_coef;

typedef union etk_coef {
    etk_sgd_coef sgd;
    etk_adam_coef adam;
    etk_rmsprop_coef rmsprop;
    etk_adagrad_coef adagrad;
} etk_coef;

/* Update elements [lo, hi) of one tensor. */
typedef void (*etk_chunk_fn)(const etk_tensor *t, size_t lo, size_t hi, const etk_coef *c);

enum { ETK_RULE_SGD, ETK_RULE_ADAM, ETK_RULE_RMSPROP, ETK_RULE_ADAGRAD, ETK_RULE_PROBE, ETK_NRULES };

/* One SIMD variant: element loops indexed by rule and (param, state) dtype
 * combination (param * ETK_NDTYPES + state); NULL where not supported. */
typedef struct etk_kernels {
    const char *name;
    etk_chunk_fn fn[ETK_NRULES][ETK_NDTYPES * ETK_NDTYPES];
} etk_kernels;

extern const etk_kernels etk_kernels_baseline;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ETK_X86_DISPATCH 1
extern const etk_kernels etk_kernels_avx2;
extern const etk_kernels etk_kernels_avx512;
#else
#define ETK_X86_DISPATCH 0
#endif

#endif /* ETK_INTERNAL_H */
