/*
 * rules/ademamix.h -- AdEMAMix (Pagliardini et al. 2024, "The AdEMAMix
 * Optimizer: Better, Faster, Older"), as pytorch_optimizer.AdEMAMix.
 *
 *   g = -grad if maximize else grad
 *   p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)   or   g += weight_decay * p
 *   m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2;  s = s + (1 - beta3_t) (g - s)
 *   p -= lr (m / (1 - beta1^t) + alpha_t s) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 *
 * alpha_t and beta3_t are alpha and beta3, or with t_alpha_beta3 = T > 0 the
 * reference's warmups, per step in double:
 *   alpha_t = min(t alpha / T, alpha)
 *   beta3_t = min(exp(ln beta1 ln beta3 / ((1 - t/T) ln beta3 + (t/T) ln beta1)), beta3)
 */
#ifndef ETK_RULE_ADEMAMIX_COMMON
#define ETK_RULE_ADEMAMIX_COMMON
typedef struct etk_ademamix_coef {
    double gsign, weight_decay, decay, one_minus_beta1, beta2, one_minus_beta2, one_minus_beta3;
    double bias_correction1, bias_correction2_sqrt, alpha, eps, neg_lr;
    int wd; /* 0 none, 1 coupled (L2), 2 decoupled */
} etk_ademamix_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info ademamix_fields[] = {
    ETK_NONNEG(etk_ademamix_hp, lr, 1),
    ETK_UNIT_OPEN(etk_ademamix_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_ademamix_hp, beta2, 0),
    ETK_UNIT(etk_ademamix_hp, beta3, 0),
    ETK_NONNEG(etk_ademamix_hp, weight_decay, 1),
    ETK_NONNEG(etk_ademamix_hp, alpha, 0),
    ETK_NONNEG(etk_ademamix_hp, t_alpha_beta3, 0),
    ETK_NONNEG(etk_ademamix_hp, eps, 0),
    ETK_FLAG(etk_ademamix_hp, weight_decouple),
    ETK_FLAG(etk_ademamix_hp, fixed_decay),
    ETK_FLAG(etk_ademamix_hp, maximize),
};
static const etk_slot_info ademamix_slots[] = {
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
    {"exp_avg_slow", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
};

static int ademamix_check(const void *hp, etk_error *err)
{
    const etk_ademamix_hp *h = (const etk_ademamix_hp *)hp;
    if (h->t_alpha_beta3 > 0.0 && (h->beta1 <= 0.0 || h->beta3 <= 0.0)) {
        err->field = "t_alpha_beta3";
        err->message = "the beta3 warmup of t_alpha_beta3 > 0 takes log(beta1) and log(beta3): both must be > 0";
        return ETK_EHPARAM;
    }
    return ETK_OK;
}

static unsigned ademamix_needs(const void *hp) { (void)hp; return 7u; }

/* alpha and beta3 at step k (the reference's schedule_alpha and schedule_beta3). */
static double ademamix_alpha_t(const etk_ademamix_hp *h, double k)
{
    double a;
    if (h->t_alpha_beta3 == 0.0) return h->alpha;
    a = k * h->alpha / h->t_alpha_beta3;
    return h->alpha < a ? h->alpha : a;
}
static double ademamix_beta3_t(const etk_ademamix_hp *h, double k)
{
    double lb1, lb3, f, b;
    if (h->t_alpha_beta3 == 0.0) return h->beta3;
    lb1 = log(h->beta1), lb3 = log(h->beta3), f = k / h->t_alpha_beta3;
    b = exp(lb1 * lb3 / ((1.0 - f) * lb3 + f * lb1));
    return h->beta3 < b ? h->beta3 : b;
}

static void ademamix_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_ademamix_hp *h = (const etk_ademamix_hp *)hp;
    etk_ademamix_coef *c = (etk_ademamix_coef *)cf;
    const double k = (double)t->step;
    (void)phase, (void)red;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->weight_decay = h->weight_decay;
    c->decay = 1.0 - h->weight_decay * (h->fixed_decay ? 1.0 : h->lr);
    c->wd = h->weight_decay == 0.0 ? 0 : h->weight_decouple ? 2 : 1;
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->beta2 = h->beta2;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->one_minus_beta3 = 1.0 - ademamix_beta3_t(h, k);
    c->bias_correction1 = 1.0 - pow(h->beta1, k);
    c->bias_correction2_sqrt = sqrt(1.0 - pow(h->beta2, k));
    c->alpha = ademamix_alpha_t(h, k);
    c->eps = h->eps;
    c->neg_lr = -h->lr;
}
ETK_COEF_FITS(etk_ademamix_coef);

static const etk_rule_desc etk_rule_desc_ademamix = {
    {"ademamix", sizeof(etk_ademamix_hp), ademamix_fields, ETK_NFIELDS(ademamix_fields), ademamix_slots, 3,
     ETK_RULE_USES_STEP, NULL, 0},
    1, {0}, ademamix_check, ademamix_needs, ademamix_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(ademamix_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                        S *restrict v, S *restrict s, size_t n,
                                                        const etk_ademamix_coef *c, const int wd)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, decay = (T)c->decay;
    const T omb1 = (T)c->one_minus_beta1, b2 = (T)c->beta2, omb2 = (T)c->one_minus_beta2;
    const T omb3 = (T)c->one_minus_beta3, bc1 = (T)c->bias_correction1, bc2s = (T)c->bias_correction2_sqrt;
    const T alpha = (T)c->alpha, eps = (T)c->eps, nlr = (T)c->neg_lr;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T mi = LD(m[i]), vi = LD(v[i]), si = LD(s[i]), den, u;
        if (wd == 1) gi = gi + wdv * pi;
        if (wd == 2) pi = pi * decay;
        mi = mi + omb1 * (gi - mi);
        vi = vi * b2 + (omb2 * gi) * gi;
        si = si + omb3 * (gi - si);
        den = ETK_SQRT(vi) / bc2s + eps;
        u = mi / bc1 + alpha * si;
        m[i] = ST(mi);
        v[i] = ST(vi);
        s[i] = ST(si);
        p[i] = pi + (nlr * u) / den;
    }
}

ETK_TGT static void FN(ademamix_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_ademamix_coef *c = (const etk_ademamix_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *v = (S *)t->state[1] + lo, *s = (S *)t->state[2] + lo;
    const size_t n = hi - lo;
    (void)red;
    switch (c->wd) {
    case 0: FN(ademamix_loop)(p, g, m, v, s, n, c, 0); break;
    case 1: FN(ademamix_loop)(p, g, m, v, s, n, c, 1); break;
    default: FN(ademamix_loop)(p, g, m, v, s, n, c, 2); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ADEMAMIX] = {{ETK_FNS(ademamix_p0)}},
#endif
