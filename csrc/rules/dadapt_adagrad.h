/*
 * rules/dadapt_adagrad.h -- D-Adapted AdaGrad (Defazio and Mishchenko 2023,
 * "Learning-Rate-Free Learning by D-Adaptation"), as
 * dadaptation.DAdaptAdaGrad 3.2 (dense gradients).
 *
 * Dual averaging with AdaGrad's scaling.  d, gsq_weighted, sksq_weighted,
 * skl1 and the step count k are per-group scalars that every group shares
 * (the reference reads the first group's and writes them into every group);
 * so are lr, momentum and growth_rate (check_groups).
 *
 *   dlr = d lr;  g = grad + weight_decay p
 *   phase 0, every group:  alphak += g^2  (alphak starts at 1e-6);  sk += dlr g
 *       sums of g^2 / (sqrt(alphak) + eps), and of the changes of sk^2 / (sqrt(alphak) + eps) and |sk|
 *   sksq_weighted += its change;  skl1 += its change;  skl1 == 0: no update (the reference returns)
 *   gsq_weighted += dlr^2 sum g^2 / (sqrt(alphak) + eps)
 *   d' = max(d, min((sksq_weighted - gsq_weighted) / skl1, d growth_rate))
 *   phase 1:  z = x0 - sk / (sqrt(alphak) + eps);  p = z, or (1 - ck) p + ck z with momentum (ck = 1 - momentum)
 *
 * The reference sums the new and the old sk^2 / (sqrt(alphak) + eps) of each
 * tensor and subtracts; etakit sums the change of each element (the same
 * quantity, rounded once per element, in double).  Two passes, as the
 * update is made only when skl1 > 0: phase 0 reads g, alphak and sk (and p
 * for the weight decay) and writes alphak and sk (5 accesses per element);
 * phase 1 reads x0, sk and alphak (and p with momentum) and writes p (4).
 */
#ifndef ETK_RULE_DADAPT_ADAGRAD_COMMON
#define ETK_RULE_DADAPT_ADAGRAD_COMMON
enum { ETK_DG_D, ETK_DG_GSQ_WEIGHTED, ETK_DG_SKSQ_WEIGHTED, ETK_DG_SKL1, ETK_DG_K, ETK_DG_NGS };
enum { ETK_DG_SH_DLR, ETK_DG_SH_SKIP };
typedef struct etk_dadapt_adagrad_coef {
    double weight_decay, eps, dlr, ck, one_minus_ck;
    int l2, mom, update;
} etk_dadapt_adagrad_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info dadapt_adagrad_fields[] = {
    ETK_NONNEG(etk_dadapt_adagrad_hp, lr, 1),
    ETK_NONNEG(etk_dadapt_adagrad_hp, momentum, 0),
    ETK_NONNEG(etk_dadapt_adagrad_hp, weight_decay, 1),
    ETK_REAL(etk_dadapt_adagrad_hp, eps, 0, 0.0, ETK_INF, 1, 1),
    ETK_REAL(etk_dadapt_adagrad_hp, growth_rate, 0, 0.0, ETK_INF, 1, 0), /* > 0, +inf (no limit) included */
};
static const etk_slot_info dadapt_adagrad_slots[] = {
    {"alphak", ETK_SLOT_FULL, ETK_INIT_VALUE, 0, 0, 1e-6},
    {"sk", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0},
    {"x0", ETK_SLOT_FULL, ETK_INIT_PARAM, 0, 0, 0.0},
};
static const char *const dadapt_adagrad_group_state[] = {"d", "gsq_weighted", "sksq_weighted", "skl1", "k"};

static unsigned dadapt_adagrad_needs(const void *hp) { (void)hp; return 7u; }

static int dadapt_adagrad_check_groups(const unsigned char *hps, size_t nhps, etk_error *err)
{
    const etk_dadapt_adagrad_hp *h0 = (const etk_dadapt_adagrad_hp *)hps;
    size_t g;
    for (g = 1; g < nhps; g++) {
        const etk_dadapt_adagrad_hp *h = (const etk_dadapt_adagrad_hp *)hps + g;
        const char *field = h->lr != h0->lr ? "lr"
                            : h->momentum != h0->momentum ? "momentum"
                            : h->growth_rate != h0->growth_rate ? "growth_rate"
                                                                 : NULL;
        if (field) {
            err->group = (int32_t)g;
            err->field = field;
            err->message = "must be the same in every group (dadaptation's DAdaptAdaGrad reads the first group's "
                           "and ignores the others)";
            return ETK_EHPARAM;
        }
    }
    return ETK_OK;
}

static void dadapt_adagrad_shared(unsigned phase, const etk_call_info *call, double *sh)
{
    const etk_dadapt_adagrad_hp *h0 = (const etk_dadapt_adagrad_hp *)call->hps;
    const double *gs0 = call->gstate;
    size_t g;
    if (phase == 0) {
        sh[ETK_DG_SH_DLR] = gs0[ETK_DG_D] * h0->lr;
    } else if (phase == 1) {
        const double dlr = sh[ETK_DG_SH_DLR];
        double dsq = 0.0, dl1 = 0.0, gsq = 0.0, sksq, skl1, gsqw, d = gs0[ETK_DG_D];
        for (g = 0; g < call->nhps; g++) {
            const double *sums = call->group + g * (ETK_MAX_PHASES * ETK_MAX_RED);
            dsq += sums[0];
            dl1 += sums[1];
            gsq += sums[2];
        }
        sksq = gs0[ETK_DG_SKSQ_WEIGHTED] + dsq;
        skl1 = gs0[ETK_DG_SKL1] + dl1;
        if (skl1 == 0.0) {
            sh[ETK_DG_SH_SKIP] = 1.0; /* the reference returns: nothing but alphak and sk changes */
            return;
        }
        gsqw = gs0[ETK_DG_GSQ_WEIGHTED] + dlr * dlr * gsq;
        if (h0->lr > 0.0) {
            const double d_hat = (sksq - gsqw) / skl1;
            d = etk_py_max(d, etk_py_min(d_hat, d * h0->growth_rate));
        }
        for (g = 0; g < call->nhps; g++) {
            double *gs = call->gstate + g * ETK_DG_NGS;
            gs[ETK_DG_D] = d;
            gs[ETK_DG_GSQ_WEIGHTED] = gsqw;
            gs[ETK_DG_SKSQ_WEIGHTED] = sksq;
            gs[ETK_DG_SKL1] = skl1;
            gs[ETK_DG_K] = gs[ETK_DG_K] + 1.0;
        }
    }
}

static void dadapt_adagrad_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red,
                                   void *cf)
{
    const etk_dadapt_adagrad_hp *h = (const etk_dadapt_adagrad_hp *)hp;
    etk_dadapt_adagrad_coef *c = (etk_dadapt_adagrad_coef *)cf;
    (void)t;
    c->l2 = h->weight_decay != 0.0;
    c->mom = h->momentum != 0.0;
    c->update = phase == 1 && red->shared[ETK_DG_SH_SKIP] == 0.0;
    c->weight_decay = h->weight_decay;
    c->eps = h->eps;
    c->dlr = red->shared[ETK_DG_SH_DLR];
    c->ck = 1.0 - h->momentum;
    c->one_minus_ck = 1.0 - c->ck;
}
ETK_COEF_FITS(etk_dadapt_adagrad_coef);

static const etk_rule_desc etk_rule_desc_dadapt_adagrad = {
    .info = {"dadapt_adagrad", sizeof(etk_dadapt_adagrad_hp), dadapt_adagrad_fields,
             ETK_NFIELDS(dadapt_adagrad_fields), dadapt_adagrad_slots, 3, 0u, dadapt_adagrad_group_state,
             ETK_DG_NGS},
    .nphases = 2,
    .nred = {3, 0},
    .needs = dadapt_adagrad_needs,
    .prepare = dadapt_adagrad_prepare,
    .shared = dadapt_adagrad_shared,
    .check_groups = dadapt_adagrad_check_groups,
};

#elif defined(ETK_RULE_LOOPS)

/* phase 0: red[0] = sum of the changes of sk^2 / (sqrt(alphak) + eps), red[1] = of |sk|,
 * red[2] = sum of g^2 / (sqrt(alphak) + eps) (the new alphak) */
ETK_TGT static ETK_ALWAYS_INLINE void FN(dadapt_adagrad_sums)(const T *restrict p, const T *restrict g,
                                                              S *restrict alpha, S *restrict sk, size_t n,
                                                              const etk_dadapt_adagrad_coef *c, double *red,
                                                              const int l2)
{
    const T wdv = (T)c->weight_decay, eps = (T)c->eps, dlr = (T)c->dlr;
    double accq[ETK_LANES] = {0.0}, accl[ETK_LANES] = {0.0}, accg[ETK_LANES] = {0.0};
    size_t i = 0;
    int l;
#define ETK_DG_ELEMENT(ii, lane)                                                \
    {                                                                           \
        const size_t e = (ii);                                                  \
        T gi = g[e], ai = LD(alpha[e]), ki = LD(sk[e]), qo, den, kn;            \
        if (l2) gi = gi + wdv * p[e];                                           \
        qo = (ki * ki) / (ETK_SQRT(ai) + eps);                                  \
        ai = ai + gi * gi;                                                      \
        den = ETK_SQRT(ai) + eps;                                               \
        kn = ki + dlr * gi;                                                     \
        alpha[e] = ST(ai);                                                      \
        sk[e] = ST(kn);                                                         \
        accq[lane] += (double)((kn * kn) / den) - (double)qo;                   \
        accl[lane] += fabs((double)kn) - fabs((double)ki);                      \
        accg[lane] += (double)((gi * gi) / den);                                \
    }
    for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
        for (l = 0; l < ETK_LANES; l++) ETK_DG_ELEMENT(i + (size_t)l, l)
    }
    for (l = 0; i < n; i++, l++) ETK_DG_ELEMENT(i, l)
#undef ETK_DG_ELEMENT
    red[0] = etk_lane_sum(accq);
    red[1] = etk_lane_sum(accl);
    red[2] = etk_lane_sum(accg);
}

ETK_TGT static void FN(dadapt_adagrad_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_dadapt_adagrad_coef *c = (const etk_dadapt_adagrad_coef *)cf;
    const T *p = (const T *)t->param + lo, *g = (const T *)t->grad + lo;
    S *alpha = (S *)t->state[0] + lo, *sk = (S *)t->state[1] + lo;
    if (c->l2)
        FN(dadapt_adagrad_sums)(p, g, alpha, sk, hi - lo, c, red, 1);
    else
        FN(dadapt_adagrad_sums)(p, g, alpha, sk, hi - lo, c, red, 0);
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(dadapt_adagrad_update)(T *restrict p, const S *restrict alpha,
                                                                const S *restrict sk, const S *restrict x0,
                                                                size_t n, const etk_dadapt_adagrad_coef *c,
                                                                const int mom)
{
    const T eps = (T)c->eps, ck = (T)c->ck, a = (T)c->one_minus_ck;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        const T zi = LD(x0[i]) - LD(sk[i]) / (ETK_SQRT(LD(alpha[i])) + eps);
        p[i] = mom ? p[i] * a + ck * zi : zi;
    }
}

ETK_TGT static void FN(dadapt_adagrad_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_dadapt_adagrad_coef *c = (const etk_dadapt_adagrad_coef *)cf;
    T *p = (T *)t->param + lo;
    const S *alpha = (const S *)t->state[0] + lo, *sk = (const S *)t->state[1] + lo;
    const S *x0 = (const S *)t->state[2] + lo;
    (void)red;
    if (!c->update) return;
    if (c->mom)
        FN(dadapt_adagrad_update)(p, alpha, sk, x0, hi - lo, c, 1);
    else
        FN(dadapt_adagrad_update)(p, alpha, sk, x0, hi - lo, c, 0);
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_DADAPT_ADAGRAD] = {{ETK_FNS(dadapt_adagrad_p0), ETK_FNS(dadapt_adagrad_p1)}},
#endif
