/*
 * rules/adam.h -- Adam and AdamW (torch.optim.Adam, torch.optim.AdamW).
 *
 *   g = -grad if maximize else grad
 *   g += weight_decay * p   (L2)   or   p *= 1 - lr * weight_decay   (decoupled: AdamW)
 *   m = m + (1 - beta1) (g - m);  v = beta2 v + (1 - beta2) g^2;  vmax = max(vmax, v) if amsgrad
 *   p -= lr / (1 - beta1^t) * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)
 */
#ifndef ETK_RULE_ADAM_COMMON
#define ETK_RULE_ADAM_COMMON
/* Weight-decay modes of the element loops. */
#define ETK_WD_NONE 0
#define ETK_WD_L2 1        /* grad += weight_decay * param */
#define ETK_WD_DECOUPLED 2 /* param *= 1 - lr * weight_decay */
typedef struct etk_adam_coef {
    double one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, decay;
    double bias_correction2_sqrt, neg_step_size, gsign;
    int wd, amsgrad;
} etk_adam_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info adam_fields[] = {
    ETK_NONNEG(etk_adam_hp, lr, 1),
    ETK_UNIT_OPEN(etk_adam_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_adam_hp, beta2, 0),
    ETK_NONNEG(etk_adam_hp, eps, 0),
    ETK_NONNEG(etk_adam_hp, weight_decay, 1),
    ETK_FLAG(etk_adam_hp, amsgrad),
    ETK_FLAG(etk_adam_hp, maximize),
    ETK_FLAG(etk_adam_hp, decoupled_weight_decay),
};
static const etk_slot_info adam_slots[] = {
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
    {"max_exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
};

static unsigned adam_needs(const void *hp) { return ((const etk_adam_hp *)hp)->amsgrad ? 7u : 3u; }
static void adam_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_adam_hp *h = (const etk_adam_hp *)hp;
    etk_adam_coef *c = (etk_adam_coef *)cf;
    double k = (double)t->step;
    double bias_correction1 = 1.0 - pow(h->beta1, k);
    double bias_correction2 = 1.0 - pow(h->beta2, k);
    (void)phase, (void)red;
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->beta2 = h->beta2;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->decay = 1.0 - h->lr * h->weight_decay;
    c->bias_correction2_sqrt = sqrt(bias_correction2);
    c->neg_step_size = -(h->lr / bias_correction1);
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay == 0.0 ? ETK_WD_NONE : h->decoupled_weight_decay ? ETK_WD_DECOUPLED : ETK_WD_L2;
    c->amsgrad = h->amsgrad;
}
ETK_COEF_FITS(etk_adam_coef);

static const etk_rule_desc etk_rule_desc_adam = {
    {"adam", sizeof(etk_adam_hp), adam_fields, ETK_NFIELDS(adam_fields), adam_slots, 3, ETK_RULE_USES_STEP, NULL, 0},
    1, {0}, NULL, adam_needs, adam_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(adam_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                    S *restrict v, S *restrict vmax, size_t n,
                                                    const etk_adam_coef *c, const int wd, const int ams)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, decay = (T)c->decay;
    const T omb1 = (T)c->one_minus_beta1, b2 = (T)c->beta2, omb2 = (T)c->one_minus_beta2;
    const T bc2s = (T)c->bias_correction2_sqrt, eps = (T)c->eps, nss = (T)c->neg_step_size;
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
        if (ams) {
            T vm = LD(vmax[i]);
            vm = vm > vi ? vm : vi;
            vmax[i] = ST(vm);
            vi = vm;
        }
        den = ETK_SQRT(vi) / bc2s + eps;
        p[i] = pi + (nss * mi) / den;
    }
}

ETK_TGT static void FN(adam_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adam_coef *c = (const etk_adam_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *v = (S *)t->state[1] + lo;
    S *vmax = c->amsgrad ? (S *)t->state[2] + lo : (S *)0;
    size_t n = hi - lo;
    (void)red;
    switch (c->wd * 2 + c->amsgrad) {
    case 0: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_NONE, 0); break;
    case 1: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_NONE, 1); break;
    case 2: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_L2, 0); break;
    case 3: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_L2, 1); break;
    case 4: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_DECOUPLED, 0); break;
    default: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_DECOUPLED, 1); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ADAM] = {{ETK_FNS(adam_p0)}},
#endif
