/*
 * rules/lamb.h -- LAMB (You et al. 2020, "Large Batch Optimization for Deep
 * Learning"), as pytorch_optimizer.Lamb (4.1.0).
 *
 *   c = min(max_grad_norm / (sqrt(S) + eps), 1)   (pre_norm; S = sum of grad^2 over every
 *       tensor of the call whose group has pre_norm; 1 when max_grad_norm == 0)
 *   g = c grad, negated if maximize
 *   m = beta1 m + beta3 g  (beta3 = 1 - beta1 if grad_averaging else 1);  v = beta2 v + (1 - beta2) g^2
 *   p *= 1 - weight_decay * (1 if fixed_decay else lr)   (weight_decouple)
 *   s = lr / (1 - beta1^t)  (lr with adam_debias), times RAdam's rt with rectify
 *   u = m / (sqrt(v) + eps) (+ weight_decay p, coupled, without rectify)
 *     rectify: u = p - s m / (sqrt(v) + eps), or p - s m below n_sma_threshold with
 *     degenerated_to_sgd; no update at all when s <= 0
 *   r = 1 if ||p|| == 0 or ||u|| == 0 else min(||p||, 10) / (||u|| + eps);  1 with adam
 *   p += -s r (u, or m / (sqrt(v) + eps), or m when rectified)
 *
 * Three phases, each one pass over memory, so that nothing is stored that
 * can be recomputed:
 *   0: sum grad^2 (tensors with pre_norm only; otherwise nothing is read);
 *   1: the moments, and the sums of p^2 and u^2 (u recomputed from the new
 *      moments, not stored); with adam, or when rectify skips the update, the
 *      trust ratio is not needed and p is written here;
 *   2: p from the new moments and the trust ratio (skipped in those cases).
 * Per tensor: 6 buffer passes (read g, p, m, v; write m, v) + 4 (read p, m,
 * v; write p), plus one read of g with pre_norm.  Sums are formed in double
 * over ETK_LANES fixed lanes per block (see etk_internal.h).
 */
#ifndef ETK_RULE_LAMB_COMMON
#define ETK_RULE_LAMB_COMMON
/* update forms */
#define ETK_LAMB_ADAM 0 /* u = m / (sqrt(v) + eps) */
#define ETK_LAMB_RECT 1 /* rectified: p - s m / (sqrt(v) + eps) */
#define ETK_LAMB_SGD 2  /* rectified below the threshold: p - s m */
#define ETK_LAMB_SKIP 3 /* rectified, s <= 0: the moments and the decay only */
/* weight decay */
#define ETK_LAMB_WD_NONE 0
#define ETK_LAMB_WD_L2 1    /* u += weight_decay p (not with rectify) */
#define ETK_LAMB_WD_DECAY 2 /* p *= decay */
typedef struct etk_lamb_coef {
    double gscale, beta1, beta3, beta2, one_minus_beta2, eps, weight_decay, decay;
    double neg_step;   /* phase 1: -s;  phase 2 (and fused phase 1): -s * trust ratio */
    int form, wd, fused, reduce;
} etk_lamb_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info lamb_fields[] = {
    ETK_NONNEG(etk_lamb_hp, lr, 1),
    ETK_UNIT_OPEN(etk_lamb_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_lamb_hp, beta2, 0),
    ETK_NONNEG(etk_lamb_hp, weight_decay, 1),
    ETK_NONNEG(etk_lamb_hp, max_grad_norm, 0),
    ETK_NONNEG(etk_lamb_hp, eps, 0),
    ETK_FLAG(etk_lamb_hp, weight_decouple),
    ETK_FLAG(etk_lamb_hp, fixed_decay),
    ETK_FLAG(etk_lamb_hp, rectify),
    ETK_FLAG(etk_lamb_hp, degenerated_to_sgd),
    {"n_sma_threshold", (uint32_t)offsetof(etk_lamb_hp, n_sma_threshold), ETK_FIELD_INT, 0, 0, 0, -2147483648.0,
     2147483647.0},
    ETK_FLAG(etk_lamb_hp, grad_averaging),
    ETK_FLAG(etk_lamb_hp, adam),
    ETK_FLAG(etk_lamb_hp, pre_norm),
    ETK_FLAG(etk_lamb_hp, maximize),
    ETK_FLAG(etk_lamb_hp, adam_debias),
};
static const etk_slot_info lamb_slots[] = {
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
};

static int lamb_check(const void *hp, etk_error *err)
{
    const etk_lamb_hp *h = (const etk_lamb_hp *)hp;
    /* rectify takes sqrt((n_sma - 4) (n_sma - 2) ...) once n_sma >= n_sma_threshold: below 4 the
     * radicand can be negative (the reference raises a math domain error mid-step) */
    if (h->rectify && h->n_sma_threshold < 4) {
        err->field = "n_sma_threshold";
        err->message = "rectify needs n_sma_threshold >= 4 (below, the rectification term can be the square root "
                       "of a negative number)";
        return ETK_EHPARAM;
    }
    return ETK_OK;
}

static unsigned lamb_needs(const void *hp) { (void)hp; return 3u; }

/* The step size s (negative: no update with rectify) and the update form at step t. */
static double lamb_step_size(const etk_lamb_hp *h, int64_t step, int *form)
{
    const double k = (double)step;
    double s = h->lr;
    *form = ETK_LAMB_ADAM;
    if (h->rectify) {
        const double n_sma_max = 2.0 / (1.0 - h->beta2) - 1.0;
        const double beta2_t = pow(h->beta2, k);
        const double n_sma = n_sma_max - 2.0 * k * beta2_t / (1.0 - beta2_t);
        double rt;
        if (n_sma >= (double)h->n_sma_threshold) {
            rt = sqrt((1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0) * (n_sma - 2.0) / n_sma * n_sma_max /
                      (n_sma_max - 2.0));
            *form = ETK_LAMB_RECT;
        } else {
            rt = h->degenerated_to_sgd ? 1.0 : -1.0;
            *form = ETK_LAMB_SGD;
        }
        s = s * rt;
    }
    if (!h->adam_debias) s = s / (1.0 - pow(h->beta1, k));
    if (h->rectify && s <= 0.0) *form = ETK_LAMB_SKIP;
    return s;
}

static void lamb_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_lamb_hp *h = (const etk_lamb_hp *)hp;
    etk_lamb_coef *c = (etk_lamb_coef *)cf;
    double s, scale = 1.0;
    int form;
    c->reduce = h->pre_norm;
    if (phase == 0) return;
    s = lamb_step_size(h, t->step, &form);
    if (h->pre_norm && h->max_grad_norm != 0.0) {
        const double d = sqrt(red->call[0]) + h->eps;
        if (d != 0.0) {
            scale = h->max_grad_norm / d;
            scale = scale > 1.0 ? 1.0 : scale;
        }
    }
    c->gscale = h->maximize ? -scale : scale;
    c->beta1 = h->beta1;
    c->beta3 = h->grad_averaging ? 1.0 - h->beta1 : 1.0;
    c->beta2 = h->beta2;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->decay = 1.0 - h->weight_decay * (h->fixed_decay ? 1.0 : h->lr);
    c->wd = h->weight_decay == 0.0 ? ETK_LAMB_WD_NONE
            : h->weight_decouple  ? ETK_LAMB_WD_DECAY
            : h->rectify          ? ETK_LAMB_WD_NONE /* the reference's rectified branch has no L2 term */
                                  : ETK_LAMB_WD_L2;
    c->form = form;
    /* no trust ratio needed: phase 1 writes p */
    c->fused = h->adam || form == ETK_LAMB_SKIP;
    if (phase == 1) {
        c->neg_step = -s;
    } else {
        const double *r = red->tensor + ETK_MAX_RED;
        double wn = sqrt(r[0]), un = sqrt(r[1]), ratio;
        wn = wn > 10.0 ? 10.0 : wn;
        ratio = wn == 0.0 || un == 0.0 ? 1.0 : wn / (un + h->eps);
        c->neg_step = -s * ratio;
    }
}
ETK_COEF_FITS(etk_lamb_coef);

static const etk_rule_desc etk_rule_desc_lamb = {
    {"lamb", sizeof(etk_lamb_hp), lamb_fields, ETK_NFIELDS(lamb_fields), lamb_slots, 2, ETK_RULE_USES_STEP, NULL,
     0},
    3, {1, 2, 0}, lamb_check, lamb_needs, lamb_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

/* phase 0: red[0] = sum of grad^2 over the block */
ETK_TGT static void FN(lamb_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_lamb_coef *c = (const etk_lamb_coef *)cf;
    const T *restrict g = (const T *)t->grad + lo;
    const size_t n = hi - lo;
    double acc[ETK_LANES] = {0.0};
    size_t i = 0;
    int j;
    if (c->reduce) {
        for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
            for (j = 0; j < ETK_LANES; j++) {
                const double x = (double)g[i + (size_t)j];
                acc[j] += x * x;
            }
        }
        for (j = 0; i < n; i++, j++) {
            const double x = (double)g[i];
            acc[j] += x * x;
        }
    }
    red[0] = etk_lane_sum(acc);
}

/* One element of phase 1 (the moments) and of the update.  Returns p after
 * the decoupled decay in *pd and the quantity whose norm is taken in *u;
 * FUSED: writes p as well. */
#define ETK_LAMB_ELEMENT(i)                                                      \
    T pi = p[i], gi = g[i] * gs, mi, vi, ui = zero;                             \
    mi = LD(m[i]) * b1 + b3 * gi;                                               \
    vi = LD(v[i]) * b2 + (omb2 * gi) * gi;                                      \
    m[i] = ST(mi);                                                              \
    v[i] = ST(vi);                                                              \
    if (wd == ETK_LAMB_WD_DECAY) pi = pi * decay;                                \
    if (form == ETK_LAMB_ADAM) {                                                \
        ui = mi / (ETK_SQRT(vi) + eps);                                         \
        if (wd == ETK_LAMB_WD_L2) ui = ui + wdv * pi;                            \
        if (fused) p[i] = pi + ns * ui;                                         \
    } else if (form == ETK_LAMB_RECT) {                                         \
        ui = (ns * mi) / (ETK_SQRT(vi) + eps);                                  \
        if (fused) p[i] = pi + ui;                                              \
        ui = pi + ui;                                                           \
    } else if (form == ETK_LAMB_SGD) {                                          \
        ui = ns * mi;                                                           \
        if (fused) p[i] = pi + ui;                                              \
        ui = pi + ui;                                                           \
    } else if (wd == ETK_LAMB_WD_DECAY) {                                       \
        p[i] = pi;                                                              \
    }

ETK_TGT static ETK_ALWAYS_INLINE void FN(lamb_moments)(T *restrict p, const T *restrict g, S *restrict m,
                                                       S *restrict v, size_t n, const etk_lamb_coef *c, double *red,
                                                       const int form, const int wd, const int fused)
{
    const T gs = (T)c->gscale, b1 = (T)c->beta1, b3 = (T)c->beta3, b2 = (T)c->beta2;
    const T omb2 = (T)c->one_minus_beta2, eps = (T)c->eps, wdv = (T)c->weight_decay, decay = (T)c->decay;
    const T ns = (T)c->neg_step, zero = (T)0;
    double accw[ETK_LANES] = {0.0}, accu[ETK_LANES] = {0.0};
    size_t i = 0;
    int j;
    if (fused) {
#pragma omp simd
        for (i = 0; i < n; i++) {
            ETK_LAMB_ELEMENT(i)
            (void)ui;
        }
        red[0] = red[1] = 0.0;
        return;
    }
    for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
        for (j = 0; j < ETK_LANES; j++) {
            const size_t k = i + (size_t)j;
            ETK_LAMB_ELEMENT(k)
            accw[j] += (double)pi * (double)pi;
            accu[j] += (double)ui * (double)ui;
        }
    }
    for (j = 0; i < n; i++, j++) {
        ETK_LAMB_ELEMENT(i)
        accw[j] += (double)pi * (double)pi;
        accu[j] += (double)ui * (double)ui;
    }
    red[0] = etk_lane_sum(accw);
    red[1] = etk_lane_sum(accu);
}
#undef ETK_LAMB_ELEMENT

/* phase 1: red[0] = sum of p^2 (after the decay), red[1] = sum of u^2 */
ETK_TGT static void FN(lamb_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_lamb_coef *c = (const etk_lamb_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *v = (S *)t->state[1] + lo;
    const size_t n = hi - lo;
#define ETK_LAMB_CALL(form, wd, fused) FN(lamb_moments)(p, g, m, v, n, c, red, form, wd, fused)
    switch ((c->form * 3 + c->wd) * 2 + c->fused) {
    case (ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_NONE) * 2: ETK_LAMB_CALL(ETK_LAMB_ADAM, ETK_LAMB_WD_NONE, 0); break;
    case (ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_NONE) * 2 + 1: ETK_LAMB_CALL(ETK_LAMB_ADAM, ETK_LAMB_WD_NONE, 1); break;
    case (ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_L2) * 2: ETK_LAMB_CALL(ETK_LAMB_ADAM, ETK_LAMB_WD_L2, 0); break;
    case (ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_L2) * 2 + 1: ETK_LAMB_CALL(ETK_LAMB_ADAM, ETK_LAMB_WD_L2, 1); break;
    case (ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_DECAY) * 2: ETK_LAMB_CALL(ETK_LAMB_ADAM, ETK_LAMB_WD_DECAY, 0); break;
    case (ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_DECAY) * 2 + 1: ETK_LAMB_CALL(ETK_LAMB_ADAM, ETK_LAMB_WD_DECAY, 1); break;
    case (ETK_LAMB_RECT * 3 + ETK_LAMB_WD_NONE) * 2: ETK_LAMB_CALL(ETK_LAMB_RECT, ETK_LAMB_WD_NONE, 0); break;
    case (ETK_LAMB_RECT * 3 + ETK_LAMB_WD_NONE) * 2 + 1: ETK_LAMB_CALL(ETK_LAMB_RECT, ETK_LAMB_WD_NONE, 1); break;
    case (ETK_LAMB_RECT * 3 + ETK_LAMB_WD_DECAY) * 2: ETK_LAMB_CALL(ETK_LAMB_RECT, ETK_LAMB_WD_DECAY, 0); break;
    case (ETK_LAMB_RECT * 3 + ETK_LAMB_WD_DECAY) * 2 + 1: ETK_LAMB_CALL(ETK_LAMB_RECT, ETK_LAMB_WD_DECAY, 1); break;
    case (ETK_LAMB_SGD * 3 + ETK_LAMB_WD_NONE) * 2: ETK_LAMB_CALL(ETK_LAMB_SGD, ETK_LAMB_WD_NONE, 0); break;
    case (ETK_LAMB_SGD * 3 + ETK_LAMB_WD_NONE) * 2 + 1: ETK_LAMB_CALL(ETK_LAMB_SGD, ETK_LAMB_WD_NONE, 1); break;
    case (ETK_LAMB_SGD * 3 + ETK_LAMB_WD_DECAY) * 2: ETK_LAMB_CALL(ETK_LAMB_SGD, ETK_LAMB_WD_DECAY, 0); break;
    case (ETK_LAMB_SGD * 3 + ETK_LAMB_WD_DECAY) * 2 + 1: ETK_LAMB_CALL(ETK_LAMB_SGD, ETK_LAMB_WD_DECAY, 1); break;
    case (ETK_LAMB_SKIP * 3 + ETK_LAMB_WD_DECAY) * 2 + 1: ETK_LAMB_CALL(ETK_LAMB_SKIP, ETK_LAMB_WD_DECAY, 1); break;
    default: ETK_LAMB_CALL(ETK_LAMB_SKIP, ETK_LAMB_WD_NONE, 1); break;
    }
#undef ETK_LAMB_CALL
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(lamb_apply)(T *restrict p, const S *restrict m, const S *restrict v,
                                                     size_t n, const etk_lamb_coef *c, const int form, const int wd)
{
    const T eps = (T)c->eps, wdv = (T)c->weight_decay, decay = (T)c->decay, ns = (T)c->neg_step;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i], mi = LD(m[i]), vi = LD(v[i]);
        if (wd == ETK_LAMB_WD_DECAY) pi = pi * decay;
        if (form == ETK_LAMB_ADAM) {
            T ui = mi / (ETK_SQRT(vi) + eps);
            if (wd == ETK_LAMB_WD_L2) ui = ui + wdv * pi;
            p[i] = pi + ns * ui;
        } else if (form == ETK_LAMB_RECT) {
            p[i] = pi + (ns * mi) / (ETK_SQRT(vi) + eps);
        } else {
            p[i] = pi + ns * mi;
        }
    }
}

/* phase 2: p from the new moments and the trust ratio */
ETK_TGT static void FN(lamb_p2)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_lamb_coef *c = (const etk_lamb_coef *)cf;
    T *p = (T *)t->param + lo;
    const S *m = (const S *)t->state[0] + lo, *v = (const S *)t->state[1] + lo;
    const size_t n = hi - lo;
    (void)red;
    if (c->fused) return;
    switch (c->form * 3 + c->wd) {
    case ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_NONE: FN(lamb_apply)(p, m, v, n, c, ETK_LAMB_ADAM, ETK_LAMB_WD_NONE); break;
    case ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_L2: FN(lamb_apply)(p, m, v, n, c, ETK_LAMB_ADAM, ETK_LAMB_WD_L2); break;
    case ETK_LAMB_ADAM * 3 + ETK_LAMB_WD_DECAY: FN(lamb_apply)(p, m, v, n, c, ETK_LAMB_ADAM, ETK_LAMB_WD_DECAY); break;
    case ETK_LAMB_RECT * 3 + ETK_LAMB_WD_NONE: FN(lamb_apply)(p, m, v, n, c, ETK_LAMB_RECT, ETK_LAMB_WD_NONE); break;
    case ETK_LAMB_RECT * 3 + ETK_LAMB_WD_DECAY: FN(lamb_apply)(p, m, v, n, c, ETK_LAMB_RECT, ETK_LAMB_WD_DECAY); break;
    case ETK_LAMB_SGD * 3 + ETK_LAMB_WD_NONE: FN(lamb_apply)(p, m, v, n, c, ETK_LAMB_SGD, ETK_LAMB_WD_NONE); break;
    default: FN(lamb_apply)(p, m, v, n, c, ETK_LAMB_SGD, ETK_LAMB_WD_DECAY); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_LAMB] = {{ETK_FNS(lamb_p0), ETK_FNS(lamb_p1), ETK_FNS(lamb_p2)}},
#endif
