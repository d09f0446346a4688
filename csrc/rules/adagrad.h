/*
 * rules/adagrad.h -- Adagrad (torch.optim.Adagrad).
 *
 *   g = -grad if maximize else grad;  g += weight_decay * p
 *   clr = lr / (1 + (t - 1) lr_decay);  sum += g^2;  p -= clr g / (sqrt(sum) + eps)
 * `sum` starts at initial_accumulator_value.
 */
#ifndef ETK_RULE_ADAGRAD_COMMON
#define ETK_RULE_ADAGRAD_COMMON
typedef struct etk_adagrad_coef {
    double neg_clr, eps, weight_decay, gsign;
    int wd;
} etk_adagrad_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info adagrad_fields[] = {
    ETK_NONNEG(etk_adagrad_hp, lr, 1),
    ETK_NONNEG(etk_adagrad_hp, lr_decay, 0),
    ETK_NONNEG(etk_adagrad_hp, weight_decay, 1),
    ETK_NONNEG(etk_adagrad_hp, eps, 0),
    ETK_NONNEG(etk_adagrad_hp, initial_accumulator_value, 0),
    ETK_FLAG(etk_adagrad_hp, maximize),
};
/* sum starts at field 4, initial_accumulator_value */
static const etk_slot_info adagrad_slots[] = {{"sum", ETK_SLOT_FULL, ETK_INIT_FIELD, 4, 0, 0.0, 1}};

static unsigned adagrad_needs(const void *hp) { (void)hp; return 1u; }
static void adagrad_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_adagrad_hp *h = (const etk_adagrad_hp *)hp;
    etk_adagrad_coef *c = (etk_adagrad_coef *)cf;
    (void)phase, (void)red;
    c->neg_clr = -(h->lr / (1.0 + (double)(t->step - 1) * h->lr_decay));
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
}
ETK_COEF_FITS(etk_adagrad_coef);

static const etk_rule_desc etk_rule_desc_adagrad = {
    {"adagrad", sizeof(etk_adagrad_hp), adagrad_fields, ETK_NFIELDS(adagrad_fields), adagrad_slots, 1,
     ETK_RULE_USES_STEP, NULL, 0},
    1, {0}, NULL, adagrad_needs, adagrad_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(adagrad_loop)(T *restrict p, const T *restrict g, S *restrict sum,
                                                       size_t n, const etk_adagrad_coef *c, const int wd)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, nclr = (T)c->neg_clr, eps = (T)c->eps;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T si;
        if (wd) gi = gi + wdv * pi;
        si = LD(sum[i]) + gi * gi;
        sum[i] = ST(si);
        p[i] = pi + (nclr * gi) / (ETK_SQRT(si) + eps);
    }
}

ETK_TGT static void FN(adagrad_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adagrad_coef *c = (const etk_adagrad_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *sum = (S *)t->state[0] + lo;
    size_t n = hi - lo;
    (void)red;
    if (c->wd) FN(adagrad_loop)(p, g, sum, n, c, 1);
    else FN(adagrad_loop)(p, g, sum, n, c, 0);
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ADAGRAD] = {{ETK_FNS(adagrad_p0)}},
#endif
