/*
 * rules/asgd.h -- averaged SGD (Polyak and Juditsky 1992), as torch.optim.ASGD.
 *
 *   g = -grad if maximize else grad;  g += weight_decay * p
 *   p *= 1 - lambd * eta;  p -= eta * g
 *   ax = ax + (p - ax) * mu   (mu != 1)   or   ax = p   (mu == 1)
 * then, after the step t (the `finish` hook, once per tensor and step):
 *   eta = lr / (1 + lambd * lr * t)^alpha;  mu = 1 / max(1, t - t0)
 * eta and mu are per-tensor scalar state (double; PyTorch keeps them in its
 * default dtype): the step reads the values the previous step left, eta
 * starting at lr and mu at 1.
 */
#ifndef ETK_RULE_ASGD_COMMON
#define ETK_RULE_ASGD_COMMON
typedef struct etk_asgd_coef {
    double neg_eta, decay, mu, weight_decay, gsign;
    int wd, avg;
} etk_asgd_coef;
#endif

#if defined(ETK_RULE_HOST)

/* lambd >= 0 (torch does not check it): with lambd < 0, 1 + lambd lr t can
 * be negative, where torch's eta becomes the real part of a complex power. */
static const etk_field_info asgd_fields[] = {
    ETK_NONNEG(etk_asgd_hp, lr, 1),
    ETK_NONNEG(etk_asgd_hp, lambd, 0),
    ETK_REAL(etk_asgd_hp, alpha, 0, -ETK_INF, ETK_INF, 1, 1),
    ETK_REAL(etk_asgd_hp, t0, 0, -ETK_INF, ETK_INF, 1, 1),
    ETK_NONNEG(etk_asgd_hp, weight_decay, 1),
    ETK_FLAG(etk_asgd_hp, maximize),
};
/* eta starts at field 0, lr */
static const etk_slot_info asgd_slots[] = {
    {"eta", ETK_SLOT_SCALAR, ETK_INIT_FIELD, 0},
    {"mu", ETK_SLOT_SCALAR, ETK_INIT_ONE, 0},
    {"ax", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
};

static unsigned asgd_needs(const void *hp) { (void)hp; return 7u; }
static void asgd_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_asgd_hp *h = (const etk_asgd_hp *)hp;
    etk_asgd_coef *c = (etk_asgd_coef *)cf;
    const double eta = *(const double *)t->state[0], mu = *(const double *)t->state[1];
    (void)phase, (void)red;
    c->neg_eta = -eta;
    c->decay = 1.0 - h->lambd * eta;
    c->mu = mu;
    c->weight_decay = h->weight_decay;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
    c->avg = mu != 1.0;
}
/* After the step t: the eta and mu of step t + 1. */
static void asgd_finish(const void *hp, const etk_tensor *t, const etk_reduced *red)
{
    const etk_asgd_hp *h = (const etk_asgd_hp *)hp;
    const double step = (double)t->step;
    double *eta = (double *)t->state[0], *mu = (double *)t->state[1];
    (void)red;
    *eta = h->lr / pow(1.0 + h->lambd * h->lr * step, h->alpha);
    *mu = 1.0 / (step - h->t0 > 1.0 ? step - h->t0 : 1.0);
}
ETK_COEF_FITS(etk_asgd_coef);

static const etk_rule_desc etk_rule_desc_asgd = {
    {"asgd", sizeof(etk_asgd_hp), asgd_fields, ETK_NFIELDS(asgd_fields), asgd_slots, 3, ETK_RULE_USES_STEP, NULL,
     0},
    1, {0}, NULL, asgd_needs, asgd_prepare, NULL, asgd_finish,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(asgd_loop)(T *restrict p, const T *restrict g, S *restrict ax, size_t n,
                                                    const etk_asgd_coef *c, const int wd, const int avg)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, decay = (T)c->decay, neta = (T)c->neg_eta;
    const T mu = (T)c->mu;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        if (wd) gi = gi + wdv * pi;
        pi = pi * decay;
        pi = pi + neta * gi;
        p[i] = pi;
        if (avg) {
            T ai = LD(ax[i]);
            ax[i] = ST(ai + (pi - ai) * mu);
        } else {
            ax[i] = ST(pi);
        }
    }
}

ETK_TGT static void FN(asgd_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_asgd_coef *c = (const etk_asgd_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *ax = (S *)t->state[2] + lo;
    size_t n = hi - lo;
    (void)red;
    switch ((c->wd << 1) | c->avg) {
    case 0: FN(asgd_loop)(p, g, ax, n, c, 0, 0); break;
    case 1: FN(asgd_loop)(p, g, ax, n, c, 0, 1); break;
    case 2: FN(asgd_loop)(p, g, ax, n, c, 1, 0); break;
    default: FN(asgd_loop)(p, g, ax, n, c, 1, 1); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ASGD] = {{ETK_FNS(asgd_p0)}},
#endif
