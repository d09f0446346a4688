/*
 * rules/nadam.h -- NAdam (Dozat 2016, "Incorporating Nesterov Momentum into
 * Adam"), as torch.optim.NAdam; decoupled_weight_decay gives NAdamW.
 *
 *   g = -grad if maximize else grad
 *   g += weight_decay * p   (L2)   or   p *= 1 - lr * weight_decay   (decoupled)
 *   mu_t = beta1 (1 - 0.96^(t momentum_decay) / 2);  mu_product *= mu_t
 *   m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2
 *   den = sqrt(v / (1 - beta2^t)) + eps
 *   p += -lr (1 - mu_t) / (1 - mu_product) * g / den
 *   p += -lr mu_{t+1} / (1 - mu_product mu_{t+1}) * m / den
 *
 * mu_product is a per-tensor scalar slot (float64; torch keeps it in its
 * default dtype).  `prepare` reads the value before this step and multiplies
 * in mu_t itself, so every piece of a tensor sees the same scalars whatever
 * the thread count; `finish` stores the product once, after a successful
 * step.  The two additions into p are rounded separately, as in torch.
 */
#ifndef ETK_RULE_NADAM_COMMON
#define ETK_RULE_NADAM_COMMON
#ifndef ETK_WD_NONE
#error "rules/adam.h (ETK_WD_*) must come before rules/nadam.h in rules/all.h"
#endif
typedef struct etk_nadam_coef {
    double one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay;
    double bias_correction2, grad_coef, avg_coef, gsign;
    int wd; /* ETK_WD_* (rules/adam.h, included before this file) */
} etk_nadam_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info nadam_fields[] = {
    ETK_NONNEG(etk_nadam_hp, lr, 1),
    ETK_UNIT_OPEN(etk_nadam_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_nadam_hp, beta2, 0),
    ETK_NONNEG(etk_nadam_hp, eps, 0),
    ETK_NONNEG(etk_nadam_hp, weight_decay, 1),
    ETK_NONNEG(etk_nadam_hp, momentum_decay, 0),
    ETK_FLAG(etk_nadam_hp, decoupled_weight_decay),
    ETK_FLAG(etk_nadam_hp, maximize),
};
static const etk_slot_info nadam_slots[] = {
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
    {"mu_product", ETK_SLOT_SCALAR, ETK_INIT_ONE, 0},
};

/* mu_t of step k (double k, as torch's float step) */
static double nadam_mu(const etk_nadam_hp *h, double k)
{
    return h->beta1 * (1.0 - 0.5 * pow(0.96, k * h->momentum_decay));
}

static unsigned nadam_needs(const void *hp) { (void)hp; return 7u; }
static void nadam_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_nadam_hp *h = (const etk_nadam_hp *)hp;
    etk_nadam_coef *c = (etk_nadam_coef *)cf;
    double k = (double)t->step;
    double mu = nadam_mu(h, k), mu_next = nadam_mu(h, k + 1.0);
    double mu_product = *(const double *)t->state[2] * mu;
    double mu_product_next = mu_product * mu_next;
    (void)phase, (void)red;
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->beta2 = h->beta2;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->decay = 1.0 - h->lr * h->weight_decay;
    c->bias_correction2 = 1.0 - pow(h->beta2, k);
    c->grad_coef = -h->lr * (1.0 - mu) / (1.0 - mu_product);
    c->avg_coef = -h->lr * mu_next / (1.0 - mu_product_next);
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay == 0.0 ? ETK_WD_NONE : h->decoupled_weight_decay ? ETK_WD_DECOUPLED : ETK_WD_L2;
}
/* After the step: mu_product *= mu_t, once per tensor (empty tensors too, as in torch). */
static void nadam_finish(const void *hp, const etk_tensor *t, const etk_reduced *red)
{
    const etk_nadam_hp *h = (const etk_nadam_hp *)hp;
    double *mu_product = (double *)t->state[2];
    (void)red;
    *mu_product = *mu_product * nadam_mu(h, (double)t->step);
}
ETK_COEF_FITS(etk_nadam_coef);

static const etk_rule_desc etk_rule_desc_nadam = {
    {"nadam", sizeof(etk_nadam_hp), nadam_fields, ETK_NFIELDS(nadam_fields), nadam_slots, 3, ETK_RULE_USES_STEP,
     NULL, 0},
    1, {0}, NULL, nadam_needs, nadam_prepare, NULL, nadam_finish,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(nadam_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                     S *restrict v, size_t n, const etk_nadam_coef *c, const int wd)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, decay = (T)c->decay;
    const T omb1 = (T)c->one_minus_beta1, b2 = (T)c->beta2, omb2 = (T)c->one_minus_beta2;
    const T bc2 = (T)c->bias_correction2, eps = (T)c->eps;
    const T cg = (T)c->grad_coef, cm = (T)c->avg_coef;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T mi = LD(m[i]), vi = LD(v[i]), den;
        if (wd == ETK_WD_L2) gi = gi + wdv * pi;
        if (wd == ETK_WD_DECOUPLED) pi = pi * decay;
        mi = mi + omb1 * (gi - mi);
        vi = vi * b2 + (omb2 * gi) * gi;
        m[i] = ST(mi);
        v[i] = ST(vi);
        den = ETK_SQRT(vi / bc2) + eps;
        pi = pi + (cg * gi) / den;
        p[i] = pi + (cm * mi) / den;
    }
}

ETK_TGT static void FN(nadam_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_nadam_coef *c = (const etk_nadam_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *v = (S *)t->state[1] + lo;
    size_t n = hi - lo;
    (void)red;
    switch (c->wd) {
    case ETK_WD_NONE: FN(nadam_loop)(p, g, m, v, n, c, ETK_WD_NONE); break;
    case ETK_WD_L2: FN(nadam_loop)(p, g, m, v, n, c, ETK_WD_L2); break;
    default: FN(nadam_loop)(p, g, m, v, n, c, ETK_WD_DECOUPLED); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_NADAM] = {{ETK_FNS(nadam_p0)}},
#endif
