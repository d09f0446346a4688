/*
 * rules/adadelta.h -- Adadelta (Zeiler 2012), as torch.optim.Adadelta.
 *
 *   g = -grad if maximize else grad;  g += weight_decay * p
 *   v = rho v + ((1 - rho) g) g
 *   delta = sqrt(u + eps) / sqrt(v + eps) * g
 *   u = rho u + ((1 - rho) delta) delta
 *   p -= lr * delta
 * with v = square_avg, u = acc_delta, in PyTorch's order of operations.
 */
#ifndef ETK_RULE_ADADELTA_COMMON
#define ETK_RULE_ADADELTA_COMMON
typedef struct etk_adadelta_coef {
    double neg_lr, rho, one_minus_rho, eps, weight_decay, gsign;
    int wd;
} etk_adadelta_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info adadelta_fields[] = {
    ETK_NONNEG(etk_adadelta_hp, lr, 1),
    ETK_UNIT(etk_adadelta_hp, rho, 0),
    ETK_NONNEG(etk_adadelta_hp, eps, 0),
    ETK_NONNEG(etk_adadelta_hp, weight_decay, 1),
    ETK_FLAG(etk_adadelta_hp, maximize),
};
static const etk_slot_info adadelta_slots[] = {
    {"square_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
    {"acc_delta", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
};

static unsigned adadelta_needs(const void *hp) { (void)hp; return 3u; }
static void adadelta_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_adadelta_hp *h = (const etk_adadelta_hp *)hp;
    etk_adadelta_coef *c = (etk_adadelta_coef *)cf;
    (void)phase, (void)t, (void)red;
    c->neg_lr = -h->lr;
    c->rho = h->rho;
    c->one_minus_rho = 1.0 - h->rho;
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
}
ETK_COEF_FITS(etk_adadelta_coef);

static const etk_rule_desc etk_rule_desc_adadelta = {
    {"adadelta", sizeof(etk_adadelta_hp), adadelta_fields, ETK_NFIELDS(adadelta_fields), adadelta_slots, 2, 0u,
     NULL, 0},
    1, {0}, NULL, adadelta_needs, adadelta_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(adadelta_loop)(T *restrict p, const T *restrict g, S *restrict sq,
                                                        S *restrict acc, size_t n, const etk_adadelta_coef *c,
                                                        const int wd)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, nlr = (T)c->neg_lr;
    const T rho = (T)c->rho, omr = (T)c->one_minus_rho, eps = (T)c->eps;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T si, ui, d;
        if (wd) gi = gi + wdv * pi;
        si = LD(sq[i]) * rho + (omr * gi) * gi;
        sq[i] = ST(si);
        ui = LD(acc[i]);
        d = ETK_SQRT(ui + eps) / ETK_SQRT(si + eps) * gi;
        acc[i] = ST(ui * rho + (omr * d) * d);
        p[i] = pi + nlr * d;
    }
}

ETK_TGT static void FN(adadelta_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adadelta_coef *c = (const etk_adadelta_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *sq = (S *)t->state[0] + lo;
    S *acc = (S *)t->state[1] + lo;
    size_t n = hi - lo;
    (void)red;
    if (c->wd) FN(adadelta_loop)(p, g, sq, acc, n, c, 1);
    else FN(adadelta_loop)(p, g, sq, acc, n, c, 0);
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ADADELTA] = {{ETK_FNS(adadelta_p0)}},
#endif
