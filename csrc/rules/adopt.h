/*
 * rules/adopt.h -- ADOPT (Taniguchi et al. 2024, "ADOPT: Modified Adam Can
 * Converge with Any beta2 with the Optimal Rate"), as pytorch_optimizer.ADOPT.
 *
 *   g = -grad if maximize else grad
 *   p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)   or   g += weight_decay * p
 *   step 1:  v = v + g^2   (nothing else: p changes only by a decoupled decay)
 *   later:   u = g / max(sqrt(v), eps), clipped to [-t^0.25, t^0.25] (clip_lambda)
 *            m = m + (1 - beta1) (u - m);  p -= lr m;  v = beta2 v + (1 - beta2) g^2
 *
 * The normalisation uses v from before this step's gradient, which is what
 * sets ADOPT apart from Adam.  The step-1 test is on the tensor's step, as the
 * reference's is on its group's.
 */
#ifndef ETK_RULE_ADOPT_COMMON
#define ETK_RULE_ADOPT_COMMON
typedef struct etk_adopt_coef {
    double gsign, weight_decay, decay, eps, clip, neg_lr, one_minus_beta1, beta2, one_minus_beta2;
    int wd; /* 0 none, 1 coupled (L2), 2 decoupled */
    int first, clipped;
} etk_adopt_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info adopt_fields[] = {
    ETK_NONNEG(etk_adopt_hp, lr, 1),
    ETK_UNIT_OPEN(etk_adopt_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_adopt_hp, beta2, 0),
    ETK_NONNEG(etk_adopt_hp, weight_decay, 1),
    ETK_NONNEG(etk_adopt_hp, eps, 0),
    ETK_FLAG(etk_adopt_hp, clip_lambda),
    ETK_FLAG(etk_adopt_hp, weight_decouple),
    ETK_FLAG(etk_adopt_hp, fixed_decay),
    ETK_FLAG(etk_adopt_hp, maximize),
};
static const etk_slot_info adopt_slots[] = {
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
};

static unsigned adopt_needs(const void *hp) { (void)hp; return 3u; }
static void adopt_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_adopt_hp *h = (const etk_adopt_hp *)hp;
    etk_adopt_coef *c = (etk_adopt_coef *)cf;
    (void)phase, (void)red;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->weight_decay = h->weight_decay;
    c->decay = 1.0 - h->weight_decay * (h->fixed_decay ? 1.0 : h->lr);
    c->wd = h->weight_decay == 0.0 ? 0 : h->weight_decouple ? 2 : 1;
    c->eps = h->eps;
    c->clip = pow((double)t->step, 0.25);
    c->clipped = h->clip_lambda;
    c->neg_lr = -h->lr;
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->beta2 = h->beta2;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->first = t->step == 1;
}
ETK_COEF_FITS(etk_adopt_coef);

static const etk_rule_desc etk_rule_desc_adopt = {
    {"adopt", sizeof(etk_adopt_hp), adopt_fields, ETK_NFIELDS(adopt_fields), adopt_slots, 2, ETK_RULE_USES_STEP,
     NULL, 0},
    1, {0}, NULL, adopt_needs, adopt_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(adopt_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                     S *restrict v, size_t n, const etk_adopt_coef *c,
                                                     const int wd, const int first, const int clipped)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, decay = (T)c->decay, eps = (T)c->eps;
    const T hi = (T)c->clip, lo = (T)(-c->clip), nlr = (T)c->neg_lr;
    const T omb1 = (T)c->one_minus_beta1, b2 = (T)c->beta2, omb2 = (T)c->one_minus_beta2;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        const T vi = LD(v[i]);
        if (wd == 1) gi = gi + wdv * pi;
        if (wd == 2) pi = pi * decay;
        if (first) {
            v[i] = ST(vi + gi * gi);
        } else {
            T den = ETK_SQRT(vi), u, mi = LD(m[i]);
            den = den < eps ? eps : den; /* NaN stays NaN, as clamp_min */
            u = gi / den;
            if (clipped) {
                u = u < lo ? lo : u;
                u = u > hi ? hi : u;
            }
            mi = mi + omb1 * (u - mi);
            m[i] = ST(mi);
            pi = pi + nlr * mi;
            v[i] = ST(vi * b2 + (omb2 * gi) * gi);
        }
        if (!first || wd == 2) p[i] = pi; /* the first step moves p only by a decoupled decay */
    }
}

ETK_TGT static void FN(adopt_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adopt_coef *c = (const etk_adopt_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *v = (S *)t->state[1] + lo;
    const size_t n = hi - lo;
    const int wd = c->wd;
    (void)red;
    if (c->first) {
        switch (wd) {
        case 0: FN(adopt_loop)(p, g, m, v, n, c, 0, 1, 0); break;
        case 1: FN(adopt_loop)(p, g, m, v, n, c, 1, 1, 0); break;
        default: FN(adopt_loop)(p, g, m, v, n, c, 2, 1, 0); break;
        }
    } else if (c->clipped) {
        switch (wd) {
        case 0: FN(adopt_loop)(p, g, m, v, n, c, 0, 0, 1); break;
        case 1: FN(adopt_loop)(p, g, m, v, n, c, 1, 0, 1); break;
        default: FN(adopt_loop)(p, g, m, v, n, c, 2, 0, 1); break;
        }
    } else {
        switch (wd) {
        case 0: FN(adopt_loop)(p, g, m, v, n, c, 0, 0, 0); break;
        case 1: FN(adopt_loop)(p, g, m, v, n, c, 1, 0, 0); break;
        default: FN(adopt_loop)(p, g, m, v, n, c, 2, 0, 0); break;
        }
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ADOPT] = {{ETK_FNS(adopt_p0)}},
#endif
