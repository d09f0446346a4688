/*
 * rules/prodigy.h -- Prodigy (Mishchenko and Defazio 2024, "Prodigy: An
 * Expeditiously Adaptive Parameter-Free Learner"), as prodigyopt.Prodigy 1.1.2.
 *
 * Adam whose step size d is estimated, every step, from how far the
 * parameters have moved from where they started (p0).  d, d_max,
 * d_numerator and the step count k are per-group scalars that every group
 * shares (the reference reads the first group's and writes them into every
 * group); so are betas, beta3, d_coef, growth_rate, decouple and
 * use_bias_correction (check_groups refuses groups that differ), and lr, the
 * largest group lr (a group may have lr 0: its statistics stand still).
 *
 *   g = grad + weight_decay p   (unless decouple)
 *   dlr = d lr bc,  bc = sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) with use_bias_correction, else 1
 *   phase 0, groups with lr > 0, on every slice_p-th element (the slots s and p0 keep those only):
 *       num += (d / d0) dlr <g, p0 - p>
 *       s = beta3 s + (d / d0) (d if safeguard_warmup else dlr) g;    den += |s|_1
 *   d_numerator = beta3 d_numerator + num;  den == 0: no update (the reference returns)
 *   d_hat = d_coef d_numerator / den;  d = max(d, d_hat) while d == d0 (of the last group);
 *   d_max = max(d_max, d_hat);  d' = min(d_max, d growth_rate)
 *   phase 1:  groups with lr > 0:  exp_avg = beta1 exp_avg + d (1 - beta1) g,
 *                                  exp_avg_sq = beta2 exp_avg_sq + d^2 (1 - beta2) g^2
 *             unless den == 0:     p -= weight_decay dlr p   (decouple)
 *                                  p -= dlr exp_avg / (sqrt(exp_avg_sq) + d' eps)
 *                                  (beta1 == 0: p -= dlr d' g / (sqrt(exp_avg_sq) + d' eps))
 *
 * The update needs d', which needs the sums over every tensor, so a step is
 * two passes.  The moments are updated in the second (the reference updates
 * them in its first loop, with the same d): phase 0 reads g, p, p0 and s and
 * writes s (5 accesses per element with slice_p = 1); phase 1 reads g, p,
 * exp_avg and exp_avg_sq and writes all but g (7); 12 in all.  The shared
 * scalars are worked out by `prodigy_shared` between the phases, in double,
 * from the group sums in group order.
 */
#ifndef ETK_RULE_PRODIGY_COMMON
#define ETK_RULE_PRODIGY_COMMON
/* group_state, in order */
enum { ETK_PD_D, ETK_PD_D_MAX, ETK_PD_D_NUMERATOR, ETK_PD_K, ETK_PD_D_DENOM, ETK_PD_D_HAT, ETK_PD_NGS };
/* etk_reduced.shared */
enum { ETK_PD_SH_D, ETK_PD_SH_DLR, ETK_PD_SH_D_NEW, ETK_PD_SH_SKIP };
/* weight decay */
#define ETK_PD_WD_NONE 0
#define ETK_PD_WD_L2 1    /* g += weight_decay p */
#define ETK_PD_WD_DECAY 2 /* p -= weight_decay dlr p */
typedef struct etk_prodigy_coef {
    double weight_decay, beta3, s_coef;                      /* phase 0 */
    double beta1, beta2, m_coef, v_coef, eps_d, decay, neg_dlr, neg_dlr_d; /* phase 1 */
    size_t stride;
    int adapt, wd, mom, update;
} etk_prodigy_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info prodigy_fields[] = {
    ETK_NONNEG(etk_prodigy_hp, lr, 1),
    ETK_UNIT_OPEN(etk_prodigy_hp, beta1, 0),
    ETK_UNIT_OPEN(etk_prodigy_hp, beta2, 0),
    ETK_NONNEG_OR_NONE(etk_prodigy_hp, beta3),
    ETK_REAL(etk_prodigy_hp, eps, 0, 0.0, ETK_INF, 1, 1),
    ETK_NONNEG(etk_prodigy_hp, weight_decay, 1),
    ETK_REAL(etk_prodigy_hp, d0, 0, 0.0, ETK_INF, 1, 1),
    ETK_NONNEG(etk_prodigy_hp, d_coef, 0),
    ETK_REAL(etk_prodigy_hp, growth_rate, 0, 0.0, ETK_INF, 1, 0), /* > 0, +inf (no limit) included */
    ETK_FLAG(etk_prodigy_hp, decouple),
    ETK_FLAG(etk_prodigy_hp, use_bias_correction),
    ETK_FLAG(etk_prodigy_hp, safeguard_warmup),
    ETK_INT(etk_prodigy_hp, slice_p, 1.0, 2147483647.0),
};
#define ETK_PD_SLICE_P 12 /* index of slice_p above */
static const etk_slot_info prodigy_slots[] = {
    {"s", ETK_SLOT_STRIDED, ETK_INIT_ZERO, 0, ETK_PD_SLICE_P, 0.0},
    {"p0", ETK_SLOT_STRIDED, ETK_INIT_PARAM, 0, ETK_PD_SLICE_P, 0.0},
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0},
};
static const char *const prodigy_group_state[] = {"d", "d_max", "d_numerator", "k", "d_denom", "d_hat"};

static unsigned prodigy_needs(const void *hp)
{
    const etk_prodigy_hp *h = (const etk_prodigy_hp *)hp;
    return h->beta1 > 0.0 ? 15u : 11u; /* exp_avg only with beta1 > 0 */
}

/* Values the reference reads from one group only: every group must have them (and lr is the
 * largest group lr, or 0). */
static int prodigy_check_groups(const unsigned char *hps, size_t nhps, etk_error *err)
{
    const etk_prodigy_hp *h0 = (const etk_prodigy_hp *)hps;
    double lr = h0->lr;
    size_t g;
    for (g = 1; g < nhps; g++) lr = etk_py_max(lr, ((const etk_prodigy_hp *)hps + g)->lr);
    for (g = 0; g < nhps; g++) {
        const etk_prodigy_hp *h = (const etk_prodigy_hp *)hps + g;
        const char *field = NULL;
        if (h->lr != lr && h->lr != 0.0) {
            err->group = (int32_t)g;
            err->field = "lr";
            err->message = "must be, in every group, the largest group lr or 0 (a group whose statistics stand "
                           "still), as prodigyopt requires: lr is one multiplier of the step size d that all "
                           "groups share";
            return ETK_EHPARAM;
        }
        if (h->beta1 != h0->beta1) field = "beta1";
        else if (h->beta2 != h0->beta2) field = "beta2";
        else if (!etk_same_real(h->beta3, h0->beta3)) field = "beta3";
        else if (h->d_coef != h0->d_coef) field = "d_coef";
        else if (h->growth_rate != h0->growth_rate) field = "growth_rate";
        else if (h->decouple != h0->decouple) field = "decouple";
        else if (h->use_bias_correction != h0->use_bias_correction) field = "use_bias_correction";
        if (field) {
            err->group = (int32_t)g;
            err->field = field;
            err->message = "must be the same in every group: it shapes the step size d that all groups share "
                           "(prodigyopt reads the first group's and ignores the others)";
            return ETK_EHPARAM;
        }
    }
    return ETK_OK;
}

static void prodigy_shared(unsigned phase, const etk_call_info *call, double *sh)
{
    const etk_prodigy_hp *h0 = (const etk_prodigy_hp *)call->hps;
    const size_t nhps = call->nhps;
    double *gs0 = call->gstate;
    size_t g;
    if (phase == 0) {
        double lr = h0->lr, bc = 1.0;
        const double k = gs0[ETK_PD_K];
        for (g = 1; g < nhps; g++) lr = etk_py_max(lr, ((const etk_prodigy_hp *)call->hps + g)->lr);
        if (h0->use_bias_correction) bc = sqrt(1.0 - pow(h0->beta2, k + 1.0)) / (1.0 - pow(h0->beta1, k + 1.0));
        sh[ETK_PD_SH_D] = gs0[ETK_PD_D];
        sh[ETK_PD_SH_DLR] = gs0[ETK_PD_D] * lr * bc;
    } else if (phase == 1) {
        const double d = sh[ETK_PD_SH_D], dlr = sh[ETK_PD_SH_DLR];
        const double beta3 = h0->beta3 == h0->beta3 ? h0->beta3 : sqrt(h0->beta2);
        const etk_prodigy_hp *last = (const etk_prodigy_hp *)call->hps + (nhps - 1);
        double num = 0.0, den = 0.0, d_numerator, d_hat, d_max, dn = d;
        for (g = 0; g < nhps; g++) {
            const etk_prodigy_hp *h = (const etk_prodigy_hp *)call->hps + g;
            const double *sums = call->group + g * (ETK_MAX_PHASES * ETK_MAX_RED);
            if (h->lr > 0.0) {
                num += d / h->d0 * dlr * sums[0];
                den += sums[1];
            }
        }
        d_numerator = gs0[ETK_PD_D_NUMERATOR] * beta3 + num;
        sh[ETK_PD_SH_D_NEW] = d;
        if (den == 0.0) {
            sh[ETK_PD_SH_SKIP] = 1.0; /* the reference returns: nothing but the moments changes */
            return;
        }
        d_hat = h0->d_coef * d_numerator / den;
        if (dn == last->d0) dn = etk_py_max(dn, d_hat);
        d_max = etk_py_max(gs0[ETK_PD_D_MAX], d_hat);
        dn = etk_py_min(d_max, dn * h0->growth_rate);
        for (g = 0; g < nhps; g++) {
            double *gs = call->gstate + g * ETK_PD_NGS;
            gs[ETK_PD_D] = dn;
            gs[ETK_PD_D_MAX] = d_max;
            gs[ETK_PD_D_NUMERATOR] = d_numerator;
            gs[ETK_PD_K] = gs[ETK_PD_K] + 1.0;
            gs[ETK_PD_D_DENOM] = den;
            gs[ETK_PD_D_HAT] = d_hat;
        }
        sh[ETK_PD_SH_D_NEW] = dn;
    }
}

static void prodigy_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_prodigy_hp *h = (const etk_prodigy_hp *)hp;
    etk_prodigy_coef *c = (etk_prodigy_coef *)cf;
    const double d = red->shared[ETK_PD_SH_D], dlr = red->shared[ETK_PD_SH_DLR];
    (void)t;
    c->adapt = h->lr > 0.0;
    c->wd = h->weight_decay == 0.0 ? ETK_PD_WD_NONE : h->decouple ? ETK_PD_WD_DECAY : ETK_PD_WD_L2;
    c->weight_decay = h->weight_decay;
    if (phase == 0) {
        c->beta3 = h->beta3 == h->beta3 ? h->beta3 : sqrt(h->beta2);
        c->s_coef = d / h->d0 * (h->safeguard_warmup ? d : dlr);
        c->stride = (size_t)h->slice_p;
    } else {
        const double dn = red->shared[ETK_PD_SH_D_NEW];
        c->mom = h->beta1 > 0.0;
        c->update = red->shared[ETK_PD_SH_SKIP] == 0.0;
        c->beta1 = h->beta1;
        c->beta2 = h->beta2;
        c->m_coef = d * (1.0 - h->beta1);
        c->v_coef = d * d * (1.0 - h->beta2);
        c->eps_d = dn * h->eps;
        c->decay = -h->weight_decay * dlr;
        c->neg_dlr = -dlr;
        c->neg_dlr_d = -dlr * dn;
    }
}
ETK_COEF_FITS(etk_prodigy_coef);

static const etk_rule_desc etk_rule_desc_prodigy = {
    .info = {"prodigy", sizeof(etk_prodigy_hp), prodigy_fields, ETK_NFIELDS(prodigy_fields), prodigy_slots, 4, 0u,
             prodigy_group_state, ETK_PD_NGS},
    .nphases = 2,
    .nred = {2, 0},
    .needs = prodigy_needs,
    .prepare = prodigy_prepare,
    .shared = prodigy_shared,
    .check_groups = prodigy_check_groups,
};

#elif defined(ETK_RULE_LOOPS)

/* phase 0 over the kept elements j of [lo, hi) (parameter element j stride):
 * red[0] = sum of g (p0 - p), red[1] = sum of |s| after its update */
ETK_TGT static ETK_ALWAYS_INLINE void FN(prodigy_sums)(const T *restrict p, const T *restrict g, S *restrict s,
                                                       const S *restrict p0, size_t j0, size_t j1,
                                                       const etk_prodigy_coef *c, double *red, const int l2,
                                                       const int strided)
{
    const size_t k = strided ? c->stride : 1;
    const T wdv = (T)c->weight_decay, b3 = (T)c->beta3, sc = (T)c->s_coef;
    const size_t m = j1 - j0;
    double accn[ETK_LANES] = {0.0}, accd[ETK_LANES] = {0.0};
    size_t u = 0;
    int l;
#define ETK_PD_ELEMENT(jj, lane)                                                \
    {                                                                           \
        const size_t j = (jj), i = strided ? j * k : j;                         \
        T gi = g[i], si;                                                        \
        if (l2) gi = gi + wdv * p[i];                                           \
        accn[lane] += (double)gi * (double)(LD(p0[j]) - p[i]);                  \
        si = LD(s[j]) * b3 + sc * gi;                                           \
        s[j] = ST(si);                                                          \
        accd[lane] += fabs((double)si);                                         \
    }
    for (; u + ETK_LANES <= m; u += ETK_LANES) {
#pragma omp simd
        for (l = 0; l < ETK_LANES; l++) ETK_PD_ELEMENT(j0 + u + (size_t)l, l)
    }
    for (l = 0; u < m; u++, l++) ETK_PD_ELEMENT(j0 + u, l)
#undef ETK_PD_ELEMENT
    red[0] = etk_lane_sum(accn);
    red[1] = etk_lane_sum(accd);
}

ETK_TGT static void FN(prodigy_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_prodigy_coef *c = (const etk_prodigy_coef *)cf;
    const T *p = (const T *)t->param, *g = (const T *)t->grad;
    S *s = (S *)t->state[0];
    const S *p0 = (const S *)t->state[1];
    const size_t k = c->stride;
    const size_t j0 = (lo + k - 1) / k, j1 = (hi + k - 1) / k; /* the kept elements of the block */
    if (!c->adapt) {
        red[0] = red[1] = 0.0;
        return;
    }
    switch ((c->wd == ETK_PD_WD_L2) * 2 + (k != 1)) {
    case 0: FN(prodigy_sums)(p, g, s, p0, j0, j1, c, red, 0, 0); break;
    case 1: FN(prodigy_sums)(p, g, s, p0, j0, j1, c, red, 0, 1); break;
    case 2: FN(prodigy_sums)(p, g, s, p0, j0, j1, c, red, 1, 0); break;
    default: FN(prodigy_sums)(p, g, s, p0, j0, j1, c, red, 1, 1); break;
    }
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(prodigy_update)(T *restrict p, const T *restrict g, S *restrict m,
                                                         S *restrict v, size_t n, const etk_prodigy_coef *c,
                                                         const int adapt, const int wd, const int mom,
                                                         const int update)
{
    const T wdv = (T)c->weight_decay, b1 = (T)c->beta1, b2 = (T)c->beta2, mc = (T)c->m_coef, vc = (T)c->v_coef;
    const T epsd = (T)c->eps_d, decay = (T)c->decay, ndlr = (T)c->neg_dlr, ndlrd = (T)c->neg_dlr_d;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i], gi = g[i], mi = (T)0, vi;
        if (wd == ETK_PD_WD_L2) gi = gi + wdv * pi;
        if (mom) mi = LD(m[i]);
        vi = LD(v[i]);
        if (adapt) {
            if (mom) {
                mi = mi * b1 + mc * gi;
                m[i] = ST(mi);
            }
            vi = vi * b2 + (vc * gi) * gi;
            v[i] = ST(vi);
        }
        if (update) {
            const T den = ETK_SQRT(vi) + epsd;
            if (wd == ETK_PD_WD_DECAY) pi = pi + decay * pi;
            pi = mom ? pi + (ndlr * mi) / den : pi + (ndlrd * gi) / den;
            p[i] = pi;
        }
    }
}

ETK_TGT static void FN(prodigy_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_prodigy_coef *c = (const etk_prodigy_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = c->mom ? (S *)t->state[2] + lo : NULL, *v = (S *)t->state[3] + lo;
    const size_t n = hi - lo;
    (void)red;
    if (!c->adapt && !c->update) return;
#define ETK_PD_CASE(a, w, mo, u)                                                                     \
    case (((a) * 3 + (w)) * 2 + (mo)) * 2 + (u): FN(prodigy_update)(p, g, m, v, n, c, a, w, mo, u); break;
#define ETK_PD_CASES(a, w) ETK_PD_CASE(a, w, 0, 0) ETK_PD_CASE(a, w, 0, 1) ETK_PD_CASE(a, w, 1, 0) ETK_PD_CASE(a, w, 1, 1)
    switch (((c->adapt * 3 + c->wd) * 2 + c->mom) * 2 + c->update) {
        ETK_PD_CASES(0, 0)
        ETK_PD_CASES(0, 1)
        ETK_PD_CASES(0, 2)
        ETK_PD_CASES(1, 0)
        ETK_PD_CASES(1, 1)
        ETK_PD_CASES(1, 2)
    default: break;
    }
#undef ETK_PD_CASES
#undef ETK_PD_CASE
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_PRODIGY] = {{ETK_FNS(prodigy_p0), ETK_FNS(prodigy_p1)}},
#endif
