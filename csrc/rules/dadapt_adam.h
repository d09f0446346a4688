/*
 * rules/dadapt_adam.h -- D-Adapted Adam (Defazio and Mishchenko 2023,
 * "Learning-Rate-Free Learning by D-Adaptation"), as dadaptation.DAdaptAdam 3.2.
 *
 * d, numerator_weighted and the step count k are per-group scalars that
 * every group shares (the reference reads the first group's and writes them
 * into every group); so are betas, decouple, use_bias_correction and
 * growth_rate (check_groups), and lr, the largest group lr (a group may have
 * lr 0: its statistics stand still).  r = layer_scale scales a group's step.
 *
 *   g = grad + weight_decay p   (unless decouple)
 *   dlr = d lr bc,  bc = sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) with use_bias_correction, else 1
 *   phase 0, groups with lr > 0:
 *       num += r dlr <g, s / (sqrt(exp_avg_sq) + eps)>                (the old s and exp_avg_sq)
 *       exp_avg = beta1 exp_avg + r dlr (1 - beta1) g;  exp_avg_sq = beta2 exp_avg_sq + (1 - beta2) g^2
 *       s = sqrt(beta2) s + dlr (1 - sqrt(beta2)) g;     den += r |s|_1
 *   numerator_weighted = sqrt(beta2) numerator_weighted + (1 - sqrt(beta2)) num
 *   den == 0: no update (the reference returns)
 *   d' = max(d, min(numerator_weighted / ((1 - sqrt(beta2)) den), d growth_rate))
 *   phase 1:  p -= weight_decay dlr p  (decouple);  p -= exp_avg / (sqrt(exp_avg_sq) + eps)
 *
 * The update does not use d', but the reference makes it only when den > 0,
 * which is known once every tensor is summed: two passes.  Phase 0 reads g,
 * s, exp_avg and exp_avg_sq (and p for the coupled decay) and writes all but
 * g (7 accesses per element); phase 1 reads p, exp_avg and exp_avg_sq and
 * writes p (4); 11 in all.
 */
#ifndef ETK_RULE_DADAPT_ADAM_COMMON
#define ETK_RULE_DADAPT_ADAM_COMMON
enum { ETK_DA_D, ETK_DA_NUMERATOR_WEIGHTED, ETK_DA_K, ETK_DA_NGS };
enum { ETK_DA_SH_DLR, ETK_DA_SH_SKIP };
typedef struct etk_dadapt_adam_coef {
    double weight_decay, eps, beta1, beta2, sqrt_beta2, m_coef, one_minus_beta2, s_coef, decay;
    int adapt, l2, decoupled, update;
} etk_dadapt_adam_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info dadapt_adam_fields[] = {
    ETK_NONNEG(etk_dadapt_adam_hp, lr, 1),
    ETK_UNIT_OPEN(etk_dadapt_adam_hp, beta1, 0),
    ETK_UNIT_OPEN(etk_dadapt_adam_hp, beta2, 0),
    ETK_REAL(etk_dadapt_adam_hp, eps, 0, 0.0, ETK_INF, 1, 1),
    ETK_NONNEG(etk_dadapt_adam_hp, weight_decay, 1),
    ETK_REAL(etk_dadapt_adam_hp, growth_rate, 0, 0.0, ETK_INF, 1, 0), /* > 0, +inf (no limit) included */
    ETK_NONNEG(etk_dadapt_adam_hp, layer_scale, 0),
    ETK_FLAG(etk_dadapt_adam_hp, decouple),
    ETK_FLAG(etk_dadapt_adam_hp, use_bias_correction),
};
static const etk_slot_info dadapt_adam_slots[] = {
    {"s", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0},
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0},
};
static const char *const dadapt_adam_group_state[] = {"d", "numerator_weighted", "k"};

static unsigned dadapt_adam_needs(const void *hp) { (void)hp; return 7u; }

static int dadapt_adam_check_groups(const unsigned char *hps, size_t nhps, etk_error *err)
{
    const etk_dadapt_adam_hp *h0 = (const etk_dadapt_adam_hp *)hps;
    double lr = h0->lr;
    size_t g;
    for (g = 1; g < nhps; g++) lr = etk_py_max(lr, ((const etk_dadapt_adam_hp *)hps + g)->lr);
    for (g = 0; g < nhps; g++) {
        const etk_dadapt_adam_hp *h = (const etk_dadapt_adam_hp *)hps + g;
        const char *field = NULL;
        if (h->lr != lr && h->lr != 0.0) {
            err->group = (int32_t)g;
            err->field = "lr";
            err->message = "must be, in every group, the largest group lr or 0 (a group whose statistics stand "
                           "still), as dadaptation requires; to scale one group's step, set its layer_scale";
            return ETK_EHPARAM;
        }
        if (h->beta1 != h0->beta1) field = "beta1";
        else if (h->beta2 != h0->beta2) field = "beta2";
        else if (h->growth_rate != h0->growth_rate) field = "growth_rate";
        else if (h->decouple != h0->decouple) field = "decouple";
        else if (h->use_bias_correction != h0->use_bias_correction) field = "use_bias_correction";
        if (field) {
            err->group = (int32_t)g;
            err->field = field;
            err->message = "must be the same in every group: it shapes the step size d that all groups share "
                           "(dadaptation reads the first group's and ignores the others)";
            return ETK_EHPARAM;
        }
    }
    return ETK_OK;
}

static void dadapt_adam_shared(unsigned phase, const etk_call_info *call, double *sh)
{
    const etk_dadapt_adam_hp *h0 = (const etk_dadapt_adam_hp *)call->hps;
    const size_t nhps = call->nhps;
    const double *gs0 = call->gstate;
    size_t g;
    double lr = h0->lr;
    for (g = 1; g < nhps; g++) lr = etk_py_max(lr, ((const etk_dadapt_adam_hp *)call->hps + g)->lr);
    if (phase == 0) {
        double bc = 1.0;
        const double k = gs0[ETK_DA_K];
        if (h0->use_bias_correction) bc = sqrt(1.0 - pow(h0->beta2, k + 1.0)) / (1.0 - pow(h0->beta1, k + 1.0));
        sh[ETK_DA_SH_DLR] = gs0[ETK_DA_D] * lr * bc;
    } else if (phase == 1) {
        const double dlr = sh[ETK_DA_SH_DLR], sb2 = sqrt(h0->beta2);
        double num = 0.0, den = 0.0, nw, d = gs0[ETK_DA_D];
        for (g = 0; g < nhps; g++) {
            const etk_dadapt_adam_hp *h = (const etk_dadapt_adam_hp *)call->hps + g;
            const double *sums = call->group + g * (ETK_MAX_PHASES * ETK_MAX_RED);
            if (h->lr > 0.0) {
                num += h->layer_scale * dlr * sums[0];
                den += h->layer_scale * sums[1];
            }
        }
        nw = sb2 * gs0[ETK_DA_NUMERATOR_WEIGHTED] + (1.0 - sb2) * num;
        if (den == 0.0) {
            sh[ETK_DA_SH_SKIP] = 1.0; /* the reference returns: nothing but the moments and s changes */
            return;
        }
        if (lr > 0.0) {
            const double d_hat = nw / ((1.0 - sb2) * den);
            d = etk_py_max(d, etk_py_min(d_hat, d * h0->growth_rate));
        }
        for (g = 0; g < nhps; g++) {
            double *gs = call->gstate + g * ETK_DA_NGS;
            gs[ETK_DA_D] = d;
            gs[ETK_DA_NUMERATOR_WEIGHTED] = nw;
            gs[ETK_DA_K] = gs[ETK_DA_K] + 1.0;
        }
    }
}

static void dadapt_adam_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red,
                                void *cf)
{
    const etk_dadapt_adam_hp *h = (const etk_dadapt_adam_hp *)hp;
    etk_dadapt_adam_coef *c = (etk_dadapt_adam_coef *)cf;
    const double dlr = red->shared[ETK_DA_SH_DLR];
    (void)t;
    c->adapt = h->lr > 0.0;
    c->l2 = h->weight_decay != 0.0 && !h->decouple;
    c->decoupled = h->weight_decay != 0.0 && h->decouple;
    c->update = phase == 1 && red->shared[ETK_DA_SH_SKIP] == 0.0;
    c->weight_decay = h->weight_decay;
    c->eps = h->eps;
    c->beta1 = h->beta1;
    c->beta2 = h->beta2;
    c->sqrt_beta2 = sqrt(h->beta2);
    c->m_coef = h->layer_scale * dlr * (1.0 - h->beta1);
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->s_coef = dlr * (1.0 - c->sqrt_beta2);
    c->decay = -h->weight_decay * dlr;
}
ETK_COEF_FITS(etk_dadapt_adam_coef);

static const etk_rule_desc etk_rule_desc_dadapt_adam = {
    .info = {"dadapt_adam", sizeof(etk_dadapt_adam_hp), dadapt_adam_fields, ETK_NFIELDS(dadapt_adam_fields),
             dadapt_adam_slots, 3, 0u, dadapt_adam_group_state, ETK_DA_NGS},
    .nphases = 2,
    .nred = {2, 0},
    .needs = dadapt_adam_needs,
    .prepare = dadapt_adam_prepare,
    .shared = dadapt_adam_shared,
    .check_groups = dadapt_adam_check_groups,
};

#elif defined(ETK_RULE_LOOPS)

/* phase 0: red[0] = sum of g s / (sqrt(exp_avg_sq) + eps) (before the update), red[1] = sum of |s| after */
ETK_TGT static ETK_ALWAYS_INLINE void FN(dadapt_adam_moments)(const T *restrict p, const T *restrict g,
                                                              S *restrict s, S *restrict m, S *restrict v, size_t n,
                                                              const etk_dadapt_adam_coef *c, double *red,
                                                              const int l2)
{
    const T wdv = (T)c->weight_decay, eps = (T)c->eps, b1 = (T)c->beta1, b2 = (T)c->beta2, sb2 = (T)c->sqrt_beta2;
    const T mc = (T)c->m_coef, omb2 = (T)c->one_minus_beta2, sc = (T)c->s_coef;
    double accn[ETK_LANES] = {0.0}, accd[ETK_LANES] = {0.0};
    size_t i = 0;
    int l;
#define ETK_DA_ELEMENT(ii, lane)                                                \
    {                                                                           \
        const size_t e = (ii);                                                  \
        T gi = g[e], si = LD(s[e]), vi = LD(v[e]);                              \
        if (l2) gi = gi + wdv * p[e];                                           \
        accn[lane] += (double)gi * (double)(si / (ETK_SQRT(vi) + eps));         \
        m[e] = ST(LD(m[e]) * b1 + mc * gi);                                     \
        v[e] = ST(vi * b2 + (omb2 * gi) * gi);                                  \
        si = si * sb2 + sc * gi;                                                \
        s[e] = ST(si);                                                          \
        accd[lane] += fabs((double)si);                                         \
    }
    for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
        for (l = 0; l < ETK_LANES; l++) ETK_DA_ELEMENT(i + (size_t)l, l)
    }
    for (l = 0; i < n; i++, l++) ETK_DA_ELEMENT(i, l)
#undef ETK_DA_ELEMENT
    red[0] = etk_lane_sum(accn);
    red[1] = etk_lane_sum(accd);
}

ETK_TGT static void FN(dadapt_adam_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_dadapt_adam_coef *c = (const etk_dadapt_adam_coef *)cf;
    const T *p = (const T *)t->param + lo, *g = (const T *)t->grad + lo;
    S *s = (S *)t->state[0] + lo, *m = (S *)t->state[1] + lo, *v = (S *)t->state[2] + lo;
    if (!c->adapt) {
        red[0] = red[1] = 0.0;
        return;
    }
    if (c->l2)
        FN(dadapt_adam_moments)(p, g, s, m, v, hi - lo, c, red, 1);
    else
        FN(dadapt_adam_moments)(p, g, s, m, v, hi - lo, c, red, 0);
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(dadapt_adam_update)(T *restrict p, const S *restrict m,
                                                             const S *restrict v, size_t n,
                                                             const etk_dadapt_adam_coef *c, const int decoupled)
{
    const T eps = (T)c->eps, decay = (T)c->decay;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        if (decoupled) pi = pi + decay * pi;
        p[i] = pi - LD(m[i]) / (ETK_SQRT(LD(v[i])) + eps);
    }
}

ETK_TGT static void FN(dadapt_adam_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_dadapt_adam_coef *c = (const etk_dadapt_adam_coef *)cf;
    T *p = (T *)t->param + lo;
    const S *m = (const S *)t->state[1] + lo, *v = (const S *)t->state[2] + lo;
    (void)red;
    if (!c->update) return;
    if (c->decoupled)
        FN(dadapt_adam_update)(p, m, v, hi - lo, c, 1);
    else
        FN(dadapt_adam_update)(p, m, v, hi - lo, c, 0);
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_DADAPT_ADAM] = {{ETK_FNS(dadapt_adam_p0), ETK_FNS(dadapt_adam_p1)}},
#endif
