/*
 * rules/dadapt_sgd.h -- D-Adapted SGD (Defazio and Mishchenko 2023,
 * "Learning-Rate-Free Learning by D-Adaptation"), as dadaptation.DAdaptSGD 3.2.
 *
 * Dual averaging: s sums the scaled gradients, z = x0 - s, and p follows z
 * with momentum.  d, numerator_weighted, g0_norm and the step count k are
 * per-group scalars that every group shares (the reference reads the first
 * group's and writes them into every group); so are momentum, weight_decay
 * and growth_rate (check_groups), and lr, the largest group lr (a group may
 * have lr 0: its s stands still).
 *
 *   phase 0, first step only (k == 0), groups with lr > 0:  g0_norm = sqrt(sum grad^2)
 *   dlr = d lr / g0_norm;  g = grad + weight_decay p
 *   phase 1:  groups with lr > 0:  num += dlr <g, s>;  s += dlr g;  den += |s|^2
 *             z = x0 - s;  p = (1 - ck) p + ck z,  ck = 1 - momentum
 *   numerator_weighted += num;  d' = max(d, min(2 numerator_weighted / sqrt(den), d growth_rate))
 *
 * The update does not depend on d', so a step is one pass (phase 1: read g,
 * p, s and x0, write s, z and p: 7 accesses per element); the first step
 * reads the gradients once more for g0_norm.  Where the reference raises
 * (ZeroDivisionError: g0_norm == 0 at the first step, or den == 0), etakit
 * skips the step (g0_norm == 0: nothing changes, the next step starts
 * over) or keeps d (den == 0).
 */
#ifndef ETK_RULE_DADAPT_SGD_COMMON
#define ETK_RULE_DADAPT_SGD_COMMON
enum { ETK_DS_D, ETK_DS_NUMERATOR_WEIGHTED, ETK_DS_K, ETK_DS_G0_NORM, ETK_DS_NGS };
enum { ETK_DS_SH_FIRST, ETK_DS_SH_SKIP, ETK_DS_SH_DLR, ETK_DS_SH_G0_NORM };
typedef struct etk_dadapt_sgd_coef {
    double weight_decay, dlr, ck, one_minus_ck;
    int reduce, adapt, l2, skip;
} etk_dadapt_sgd_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info dadapt_sgd_fields[] = {
    ETK_NONNEG(etk_dadapt_sgd_hp, lr, 1),
    ETK_UNIT_OPEN(etk_dadapt_sgd_hp, momentum, 0), /* [0, 1), as its docstring says */
    ETK_NONNEG(etk_dadapt_sgd_hp, weight_decay, 0),
    ETK_REAL(etk_dadapt_sgd_hp, growth_rate, 0, 0.0, ETK_INF, 1, 0), /* > 0, +inf (no limit) included */
};
static const etk_slot_info dadapt_sgd_slots[] = {
    {"z", ETK_SLOT_FULL, ETK_INIT_PARAM, 0, 0, 0.0},
    {"s", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0},
    {"x0", ETK_SLOT_FULL, ETK_INIT_PARAM, 0, 0, 0.0},
};
static const char *const dadapt_sgd_group_state[] = {"d", "numerator_weighted", "k", "g0_norm"};

static unsigned dadapt_sgd_needs(const void *hp) { (void)hp; return 7u; }

static int dadapt_sgd_check_groups(const unsigned char *hps, size_t nhps, etk_error *err)
{
    const etk_dadapt_sgd_hp *h0 = (const etk_dadapt_sgd_hp *)hps;
    double lr = h0->lr;
    size_t g;
    for (g = 1; g < nhps; g++) lr = etk_py_max(lr, ((const etk_dadapt_sgd_hp *)hps + g)->lr);
    for (g = 0; g < nhps; g++) {
        const etk_dadapt_sgd_hp *h = (const etk_dadapt_sgd_hp *)hps + g;
        const char *field = NULL;
        if (h->lr != lr && h->lr != 0.0) {
            err->group = (int32_t)g;
            err->field = "lr";
            err->message = "must be, in every group, the largest group lr or 0 (a group whose statistics stand "
                           "still), as dadaptation requires: lr is one multiplier of the step size d that all "
                           "groups share";
            return ETK_EHPARAM;
        }
        if (h->momentum != h0->momentum) field = "momentum";
        else if (h->weight_decay != h0->weight_decay) field = "weight_decay";
        else if (h->growth_rate != h0->growth_rate) field = "growth_rate";
        if (field) {
            err->group = (int32_t)g;
            err->field = field;
            err->message = "must be the same in every group (dadaptation's DAdaptSGD reads the first group's and "
                           "ignores the others)";
            return ETK_EHPARAM;
        }
    }
    return ETK_OK;
}

static void dadapt_sgd_shared(unsigned phase, const etk_call_info *call, double *sh)
{
    const etk_dadapt_sgd_hp *h0 = (const etk_dadapt_sgd_hp *)call->hps;
    const size_t nhps = call->nhps;
    const double *gs0 = call->gstate;
    size_t g;
    double lr = h0->lr;
    for (g = 1; g < nhps; g++) lr = etk_py_max(lr, ((const etk_dadapt_sgd_hp *)call->hps + g)->lr);
    if (phase == 0) {
        sh[ETK_DS_SH_FIRST] = gs0[ETK_DS_K] == 0.0;
    } else if (phase == 1) {
        double g0 = gs0[ETK_DS_G0_NORM];
        if (sh[ETK_DS_SH_FIRST] != 0.0) {
            double gsq = 0.0;
            for (g = 0; g < nhps; g++)
                if (((const etk_dadapt_sgd_hp *)call->hps + g)->lr > 0.0)
                    gsq += call->group[g * (ETK_MAX_PHASES * ETK_MAX_RED)];
            g0 = sqrt(gsq);
        }
        if (g0 == 0.0) { /* the reference divides by zero */
            sh[ETK_DS_SH_SKIP] = 1.0;
            return;
        }
        sh[ETK_DS_SH_G0_NORM] = g0;
        sh[ETK_DS_SH_DLR] = gs0[ETK_DS_D] * lr / g0;
    } else if (sh[ETK_DS_SH_SKIP] == 0.0) { /* after the update */
        const double dlr = sh[ETK_DS_SH_DLR];
        double num = 0.0, den = 0.0, nw, d = gs0[ETK_DS_D];
        const double k = gs0[ETK_DS_K];
        for (g = 0; g < nhps; g++) {
            const double *sums = call->group + g * (ETK_MAX_PHASES * ETK_MAX_RED) + ETK_MAX_RED;
            if (((const etk_dadapt_sgd_hp *)call->hps + g)->lr > 0.0) {
                num += sums[0];
                den += sums[1];
            }
        }
        nw = gs0[ETK_DS_NUMERATOR_WEIGHTED] + dlr * num;
        if (lr > 0.0 && den > 0.0) {
            const double d_hat = 2.0 * nw / sqrt(den);
            d = etk_py_max(d, etk_py_min(d_hat, d * h0->growth_rate));
        }
        for (g = 0; g < nhps; g++) {
            double *gs = call->gstate + g * ETK_DS_NGS;
            gs[ETK_DS_D] = d;
            gs[ETK_DS_NUMERATOR_WEIGHTED] = nw;
            gs[ETK_DS_K] = k + 1.0; /* the first group's count, in every group (as the reference) */
            gs[ETK_DS_G0_NORM] = sh[ETK_DS_SH_G0_NORM];
        }
    }
}

static void dadapt_sgd_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red,
                               void *cf)
{
    const etk_dadapt_sgd_hp *h = (const etk_dadapt_sgd_hp *)hp;
    etk_dadapt_sgd_coef *c = (etk_dadapt_sgd_coef *)cf;
    (void)t;
    c->adapt = h->lr > 0.0;
    c->reduce = phase == 0 && c->adapt && red->shared[ETK_DS_SH_FIRST] != 0.0;
    c->skip = red->shared[ETK_DS_SH_SKIP] != 0.0;
    c->l2 = h->weight_decay != 0.0;
    c->weight_decay = h->weight_decay;
    c->dlr = red->shared[ETK_DS_SH_DLR];
    c->ck = 1.0 - h->momentum;
    c->one_minus_ck = 1.0 - c->ck;
}
ETK_COEF_FITS(etk_dadapt_sgd_coef);

static const etk_rule_desc etk_rule_desc_dadapt_sgd = {
    .info = {"dadapt_sgd", sizeof(etk_dadapt_sgd_hp), dadapt_sgd_fields, ETK_NFIELDS(dadapt_sgd_fields),
             dadapt_sgd_slots, 3, 0u, dadapt_sgd_group_state, ETK_DS_NGS},
    .nphases = 2,
    .nred = {1, 2},
    .needs = dadapt_sgd_needs,
    .prepare = dadapt_sgd_prepare,
    .shared = dadapt_sgd_shared,
    .check_groups = dadapt_sgd_check_groups,
};

#elif defined(ETK_RULE_LOOPS)

/* phase 0 (the first step): red[0] = sum of grad^2 */
ETK_TGT static void FN(dadapt_sgd_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_dadapt_sgd_coef *c = (const etk_dadapt_sgd_coef *)cf;
    const T *restrict g = (const T *)t->grad + lo;
    const size_t n = hi - lo;
    double acc[ETK_LANES] = {0.0};
    size_t i = 0;
    int l;
    if (c->reduce) {
        for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
            for (l = 0; l < ETK_LANES; l++) {
                const double x = (double)g[i + (size_t)l];
                acc[l] += x * x;
            }
        }
        for (l = 0; i < n; i++, l++) {
            const double x = (double)g[i];
            acc[l] += x * x;
        }
    }
    red[0] = etk_lane_sum(acc);
}

/* phase 1: red[0] = sum of g s (before the update), red[1] = sum of s^2 after */
ETK_TGT static ETK_ALWAYS_INLINE void FN(dadapt_sgd_update)(T *restrict p, const T *restrict g, S *restrict z,
                                                            S *restrict s, const S *restrict x0, size_t n,
                                                            const etk_dadapt_sgd_coef *c, double *red,
                                                            const int adapt, const int l2)
{
    const T wdv = (T)c->weight_decay, dlr = (T)c->dlr, ck = (T)c->ck, a = (T)c->one_minus_ck;
    double accn[ETK_LANES] = {0.0}, accd[ETK_LANES] = {0.0};
    size_t i = 0;
    int l;
#define ETK_DS_ELEMENT(ii, lane)                                                \
    {                                                                           \
        const size_t e = (ii);                                                  \
        T pi = p[e], gi = g[e], si = LD(s[e]), zi;                              \
        if (l2) gi = gi + wdv * pi;                                             \
        if (adapt) {                                                            \
            accn[lane] += (double)gi * (double)si;                              \
            si = si + dlr * gi;                                                 \
            s[e] = ST(si);                                                      \
            accd[lane] += (double)si * (double)si;                              \
        }                                                                       \
        zi = LD(x0[e]) - si;                                                    \
        z[e] = ST(zi);                                                          \
        p[e] = pi * a + ck * zi;                                                \
    }
    for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
        for (l = 0; l < ETK_LANES; l++) ETK_DS_ELEMENT(i + (size_t)l, l)
    }
    for (l = 0; i < n; i++, l++) ETK_DS_ELEMENT(i, l)
#undef ETK_DS_ELEMENT
    red[0] = etk_lane_sum(accn);
    red[1] = etk_lane_sum(accd);
}

ETK_TGT static void FN(dadapt_sgd_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_dadapt_sgd_coef *c = (const etk_dadapt_sgd_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *z = (S *)t->state[0] + lo, *s = (S *)t->state[1] + lo;
    const S *x0 = (const S *)t->state[2] + lo;
    const size_t n = hi - lo;
    if (c->skip) {
        red[0] = red[1] = 0.0;
        return;
    }
    switch (c->adapt * 2 + c->l2) {
    case 0: FN(dadapt_sgd_update)(p, g, z, s, x0, n, c, red, 0, 0); break;
    case 1: FN(dadapt_sgd_update)(p, g, z, s, x0, n, c, red, 0, 1); break;
    case 2: FN(dadapt_sgd_update)(p, g, z, s, x0, n, c, red, 1, 0); break;
    default: FN(dadapt_sgd_update)(p, g, z, s, x0, n, c, red, 1, 1); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_DADAPT_SGD] = {{ETK_FNS(dadapt_sgd_p0), ETK_FNS(dadapt_sgd_p1)}},
#endif
