/*
 * rules/adamax.h -- Adamax (Kingma and Ba 2015, section 7), as torch.optim.Adamax.
 *
 *   g = -grad if maximize else grad;  g += weight_decay * p
 *   m = m + (1 - beta1) (g - m)
 *   u = max(beta2 u, |g| + eps)          (NaN if either is NaN, as torch.maximum)
 *   p += -(lr / (1 - beta1^t)) * m / u
 */
#ifndef ETK_RULE_ADAMAX_COMMON
#define ETK_RULE_ADAMAX_COMMON
typedef struct etk_adamax_coef {
    double one_minus_beta1, beta2, eps, weight_decay, neg_clr, gsign;
    int wd;
} etk_adamax_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info adamax_fields[] = {
    ETK_NONNEG(etk_adamax_hp, lr, 1),
    ETK_UNIT_OPEN(etk_adamax_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_adamax_hp, beta2, 0),
    ETK_NONNEG(etk_adamax_hp, eps, 0),
    ETK_NONNEG(etk_adamax_hp, weight_decay, 1),
    ETK_FLAG(etk_adamax_hp, maximize),
};
static const etk_slot_info adamax_slots[] = {
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_inf", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
};

static unsigned adamax_needs(const void *hp) { (void)hp; return 3u; }
static void adamax_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_adamax_hp *h = (const etk_adamax_hp *)hp;
    etk_adamax_coef *c = (etk_adamax_coef *)cf;
    double bias_correction = 1.0 - pow(h->beta1, (double)t->step);
    (void)phase, (void)red;
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->beta2 = h->beta2;
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->neg_clr = -(h->lr / bias_correction);
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
}
ETK_COEF_FITS(etk_adamax_coef);

static const etk_rule_desc etk_rule_desc_adamax = {
    {"adamax", sizeof(etk_adamax_hp), adamax_fields, ETK_NFIELDS(adamax_fields), adamax_slots, 2,
     ETK_RULE_USES_STEP, NULL, 0},
    1, {0}, NULL, adamax_needs, adamax_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(adamax_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                      S *restrict u, size_t n, const etk_adamax_coef *c, const int wd)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, omb1 = (T)c->one_minus_beta1;
    const T b2 = (T)c->beta2, eps = (T)c->eps, nclr = (T)c->neg_clr, zero = (T)0;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T mi = LD(m[i]), a = LD(u[i]) * b2, b;
        if (wd) gi = gi + wdv * pi;
        mi = mi + omb1 * (gi - mi);
        /* |g| + eps: a -0 left as it is becomes +0 once eps (>= +0) is added */
        b = (gi < zero ? -gi : gi) + eps;
        a = (a > b || a != a) ? a : b;
        m[i] = ST(mi);
        u[i] = ST(a);
        p[i] = pi + (nclr * mi) / a;
    }
}

ETK_TGT static void FN(adamax_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adamax_coef *c = (const etk_adamax_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *u = (S *)t->state[1] + lo;
    size_t n = hi - lo;
    (void)red;
    if (c->wd)
        FN(adamax_loop)(p, g, m, u, n, c, 1);
    else
        FN(adamax_loop)(p, g, m, u, n, c, 0);
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ADAMAX] = {{ETK_FNS(adamax_p0)}},
#endif
