/*
 * rules/radam.h -- RAdam (Liu et al. 2020, "On the Variance of the Adaptive
 * Learning Rate and Beyond"), as torch.optim.RAdam.
 *
 *   g = -grad if maximize else grad
 *   g += weight_decay * p   (L2)   or   p *= 1 - lr * weight_decay   (decoupled)
 *   m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2
 *   rho_inf = 2 / (1 - beta2) - 1;  rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
 *   u = m / (1 - beta1^t) * lr
 *   rho_t > 5:  u = u * (sqrt(1 - beta2^t) / (sqrt(v) + eps)) * r_t,
 *               r_t = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
 *   p -= u
 *
 * Whether the step is rectified depends on t only: `prepare` decides it on
 * the host and the loop has a variant for each case.  The products are
 * rounded one at a time in torch's order; the square roots of host scalars
 * are pow(x, 0.5), as Python's x ** 0.5.
 */
#ifndef ETK_RULE_RADAM_COMMON
#define ETK_RULE_RADAM_COMMON
#ifndef ETK_WD_NONE
#error "rules/adam.h (ETK_WD_*) must come before rules/radam.h in rules/all.h"
#endif
typedef struct etk_radam_coef {
    double one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay;
    double lr, bias_correction1, bias_correction2_sqrt, rect, gsign;
    int wd, rectify; /* wd: ETK_WD_* (rules/adam.h, included before this file) */
} etk_radam_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info radam_fields[] = {
    ETK_NONNEG(etk_radam_hp, lr, 1),
    ETK_UNIT_OPEN(etk_radam_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_radam_hp, beta2, 0),
    ETK_NONNEG(etk_radam_hp, eps, 0),
    ETK_NONNEG(etk_radam_hp, weight_decay, 1),
    ETK_FLAG(etk_radam_hp, decoupled_weight_decay),
    ETK_FLAG(etk_radam_hp, maximize),
};
static const etk_slot_info radam_slots[] = {
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
};

static unsigned radam_needs(const void *hp) { (void)hp; return 3u; }
static void radam_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_radam_hp *h = (const etk_radam_hp *)hp;
    etk_radam_coef *c = (etk_radam_coef *)cf;
    double k = (double)t->step;
    double beta2_t = pow(h->beta2, k);
    double bias_correction2 = 1.0 - beta2_t;
    double rho_inf = 2.0 / (1.0 - h->beta2) - 1.0;
    double rho_t = rho_inf - 2.0 * k * beta2_t / bias_correction2;
    (void)phase, (void)red;
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->beta2 = h->beta2;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->decay = 1.0 - h->lr * h->weight_decay;
    c->lr = h->lr;
    c->bias_correction1 = 1.0 - pow(h->beta1, k);
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay == 0.0 ? ETK_WD_NONE : h->decoupled_weight_decay ? ETK_WD_DECOUPLED : ETK_WD_L2;
    c->rectify = rho_t > 5.0;
    c->bias_correction2_sqrt = pow(bias_correction2, 0.5);
    c->rect = c->rectify ? pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t),
                               0.5)
                         : 1.0;
}
ETK_COEF_FITS(etk_radam_coef);

static const etk_rule_desc etk_rule_desc_radam = {
    {"radam", sizeof(etk_radam_hp), radam_fields, ETK_NFIELDS(radam_fields), radam_slots, 2, ETK_RULE_USES_STEP,
     NULL, 0},
    1, {0}, NULL, radam_needs, radam_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(radam_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                     S *restrict v, size_t n, const etk_radam_coef *c, const int wd,
                                                     const int rectify)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, decay = (T)c->decay;
    const T omb1 = (T)c->one_minus_beta1, b2 = (T)c->beta2, omb2 = (T)c->one_minus_beta2;
    const T bc1 = (T)c->bias_correction1, lr = (T)c->lr, bc2s = (T)c->bias_correction2_sqrt;
    const T eps = (T)c->eps, rect = (T)c->rect;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T mi = LD(m[i]), vi = LD(v[i]), u;
        if (wd == ETK_WD_L2) gi = gi + wdv * pi;
        if (wd == ETK_WD_DECOUPLED) pi = pi * decay;
        mi = mi + omb1 * (gi - mi);
        vi = vi * b2 + (omb2 * gi) * gi;
        m[i] = ST(mi);
        v[i] = ST(vi);
        u = (mi / bc1) * lr;
        if (rectify) {
            u = u * (bc2s / (ETK_SQRT(vi) + eps));
            u = u * rect;
        }
        p[i] = pi - u;
    }
}

ETK_TGT static void FN(radam_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_radam_coef *c = (const etk_radam_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *v = (S *)t->state[1] + lo;
    size_t n = hi - lo;
    (void)red;
    switch (c->wd * 2 + c->rectify) {
    case 0: FN(radam_loop)(p, g, m, v, n, c, ETK_WD_NONE, 0); break;
    case 1: FN(radam_loop)(p, g, m, v, n, c, ETK_WD_NONE, 1); break;
    case 2: FN(radam_loop)(p, g, m, v, n, c, ETK_WD_L2, 0); break;
    case 3: FN(radam_loop)(p, g, m, v, n, c, ETK_WD_L2, 1); break;
    case 4: FN(radam_loop)(p, g, m, v, n, c, ETK_WD_DECOUPLED, 0); break;
    default: FN(radam_loop)(p, g, m, v, n, c, ETK_WD_DECOUPLED, 1); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_RADAM] = {{ETK_FNS(radam_p0)}},
#endif
