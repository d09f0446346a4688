/*
 * rules/rprop.h -- resilient backpropagation (Riedmiller and Braun 1993), as
 * torch.optim.Rprop.
 *
 *   g = -grad if maximize else grad
 *   f = etaplus if g * prev > 0, etaminus if g * prev < 0, else 1 (0 or NaN)
 *   step_size = min(max(step_size * f, step_size_min), step_size_max)
 *   g = 0 where f == etaminus  (the sign flipped: no move, and no flip next time)
 *   p += (-1 * sign(g)) * step_size;  prev = g
 * sign is PyTorch's: 0 for +-0 and for NaN.  step_size starts at lr.
 */
#ifndef ETK_RULE_RPROP_COMMON
#define ETK_RULE_RPROP_COMMON
typedef struct etk_rprop_coef {
    double etaminus, etaplus, step_size_min, step_size_max, gsign;
} etk_rprop_coef;
#endif

#if defined(ETK_RULE_HOST)

/* torch checks 0 < etaminus < 1 < etaplus and nothing of step_sizes */
static const etk_field_info rprop_fields[] = {
    ETK_NONNEG(etk_rprop_hp, lr, 0),
    ETK_REAL(etk_rprop_hp, etaminus, 0, 0.0, 1.0, 1, 1),
    ETK_REAL(etk_rprop_hp, etaplus, 0, 1.0, ETK_INF, 1, 1),
    ETK_REAL(etk_rprop_hp, step_size_min, 0, -ETK_INF, ETK_INF, 1, 1),
    ETK_REAL(etk_rprop_hp, step_size_max, 0, -ETK_INF, ETK_INF, 1, 1),
    ETK_FLAG(etk_rprop_hp, maximize),
};
/* step_size starts at field 0, lr */
static const etk_slot_info rprop_slots[] = {
    {"prev", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"step_size", ETK_SLOT_FULL, ETK_INIT_FIELD, 0, 0, 0.0, 1},
};

static unsigned rprop_needs(const void *hp) { (void)hp; return 3u; }
static void rprop_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_rprop_hp *h = (const etk_rprop_hp *)hp;
    etk_rprop_coef *c = (etk_rprop_coef *)cf;
    (void)phase, (void)t, (void)red;
    c->etaminus = h->etaminus;
    c->etaplus = h->etaplus;
    c->step_size_min = h->step_size_min;
    c->step_size_max = h->step_size_max;
    c->gsign = h->maximize ? -1.0 : 1.0;
}
ETK_COEF_FITS(etk_rprop_coef);

static const etk_rule_desc etk_rule_desc_rprop = {
    {"rprop", sizeof(etk_rprop_hp), rprop_fields, ETK_NFIELDS(rprop_fields), rprop_slots, 2, 0u, NULL, 0},
    1, {0}, NULL, rprop_needs, rprop_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static void FN(rprop_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_rprop_coef *c = (const etk_rprop_coef *)cf;
    T *restrict p = (T *)t->param + lo;
    const T *restrict g = (const T *)t->grad + lo;
    S *restrict prev = (S *)t->state[0] + lo;
    S *restrict ss = (S *)t->state[1] + lo;
    const T gsign = (T)c->gsign, etam = (T)c->etaminus, etap = (T)c->etaplus;
    const T smin = (T)c->step_size_min, smax = (T)c->step_size_max, one = (T)1, zero = (T)0;
    size_t i, n = hi - lo;
    (void)red;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T gi = g[i] * gsign;
        T s = gi * LD(prev[i]);
        T f = s > zero ? etap : s < zero ? etam : one;
        T si = LD(ss[i]) * f, u;
        si = si < smin ? smin : si;
        si = si > smax ? smax : si;
        ss[i] = ST(si);
        gi = f == etam ? zero : gi;
        u = gi > zero ? one : gi < zero ? -one : zero;
        p[i] = p[i] + (-one * u) * si;
        prev[i] = ST(gi);
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_RPROP] = {{ETK_FNS(rprop_p0)}},
#endif
