/*
 * rules/lion.h -- Lion (Chen et al. 2023, "Symbolic Discovery of
 * Optimization Algorithms"), as pytorch_optimizer.Lion.
 *
 *   g = -grad if maximize else grad
 *   p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)
 *   or g += weight_decay * p                               (coupled)
 *   p -= lr * sign(m + (1 - beta1) (g - m));  m = m + (1 - beta2) (g - m)
 * sign is numpy's: 0 for +-0, NaN for NaN.
 */
#ifndef ETK_RULE_LION_COMMON
#define ETK_RULE_LION_COMMON
typedef struct etk_lion_coef {
    double neg_lr, one_minus_beta1, one_minus_beta2, weight_decay, decay, gsign;
    int wd; /* 0 none, 1 coupled (L2), 2 decoupled */
} etk_lion_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info lion_fields[] = {
    ETK_NONNEG(etk_lion_hp, lr, 1),
    ETK_UNIT_OPEN(etk_lion_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_lion_hp, beta2, 0),
    ETK_NONNEG(etk_lion_hp, weight_decay, 1),
    ETK_FLAG(etk_lion_hp, weight_decouple),
    ETK_FLAG(etk_lion_hp, fixed_decay),
    ETK_FLAG(etk_lion_hp, maximize),
};
static const etk_slot_info lion_slots[] = {{"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0}};

static unsigned lion_needs(const void *hp) { (void)hp; return 1u; }
static void lion_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_lion_hp *h = (const etk_lion_hp *)hp;
    etk_lion_coef *c = (etk_lion_coef *)cf;
    (void)phase, (void)t, (void)red;
    c->neg_lr = -h->lr;
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->weight_decay = h->weight_decay;
    c->decay = 1.0 - h->weight_decay * (h->fixed_decay ? 1.0 : h->lr);
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay == 0.0 ? 0 : h->weight_decouple ? 2 : 1;
}
ETK_COEF_FITS(etk_lion_coef);

static const etk_rule_desc etk_rule_desc_lion = {
    {"lion", sizeof(etk_lion_hp), lion_fields, ETK_NFIELDS(lion_fields), lion_slots, 1, 0u, NULL, 0},
    1, {0}, NULL, lion_needs, lion_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(lion_loop)(T *restrict p, const T *restrict g, S *restrict m, size_t n,
                                                    const etk_lion_coef *c, const int wd)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, decay = (T)c->decay, nlr = (T)c->neg_lr;
    const T omb1 = (T)c->one_minus_beta1, omb2 = (T)c->one_minus_beta2, one = (T)1, zero = (T)0;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T mi = LD(m[i]), u;
        if (wd == 1) gi = gi + wdv * pi;
        if (wd == 2) pi = pi * decay;
        u = mi + omb1 * (gi - mi);
        u = u > zero ? one : u < zero ? -one : u == u ? zero : u;
        m[i] = ST(mi + omb2 * (gi - mi));
        p[i] = pi + nlr * u;
    }
}

ETK_TGT static void FN(lion_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_lion_coef *c = (const etk_lion_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo;
    size_t n = hi - lo;
    (void)red;
    switch (c->wd) {
    case 0: FN(lion_loop)(p, g, m, n, c, 0); break;
    case 1: FN(lion_loop)(p, g, m, n, c, 1); break;
    default: FN(lion_loop)(p, g, m, n, c, 2); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_LION] = {{ETK_FNS(lion_p0)}},
#endif
