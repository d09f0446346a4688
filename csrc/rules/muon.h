/*
 * rules/muon.h -- the element-wise parts of Muon (Jordan et al. 2024), as
 * torch.optim.Muon: 2-D parameters only (ETK_RULE_MATRIX_ONLY).
 *
 * A Muon step orthogonalises the momentum update by Newton-Schulz
 * iterations: matrix products, which belong on BLAS, not in element loops.
 * So the step is two phases with host work between them (etk_step_opts.phases):
 *
 *   phase 0: update = lerp(m', grad, ...) into the work slot "update", where
 *            m' = lerp(m, grad, 1 - momentum) and, with nesterov,
 *            update = lerp(grad, m', momentum), else update = m'
 *            (nothing persistent is written);
 *   host:    update = NS(update), in place (etakit.reference.zeropower_via_newtonschulz);
 *   phase 1: m = m' (recomputed, bit-identical);  p *= 1 - lr * weight_decay;
 *            p -= adjusted_lr * update,
 *            adjusted_lr = lr * sqrt(max(1, rows / cols))      (adjust_lr_fn 0: None, "original")
 *                       or lr * 0.2 * sqrt(max(rows, cols))    (adjust_lr_fn 1: "match_rms_adamw").
 *
 * Momentum and parameters change only in phase 1, after the host work has
 * succeeded.  lerp is torch.lerp's: a + w (b - a) when |w| < 0.5, else
 * b - (b - a)(1 - w).  Run in one call (phases = 0), the two phases make
 * Muon without the orthogonalisation.  eps, ns_a/b/c and ns_steps are the
 * host's (checked here, with the other fields); the loops do not read them.
 *
 * Serial (ETK_RULE_SERIAL): the two passes cost about 1% of a step on a
 * 1024 x 1024 matrix, while OpenMP threads left spinning after them would
 * contend with BLAS's threads for the cores during the matrix products.
 */
#ifndef ETK_RULE_MUON_COMMON
#define ETK_RULE_MUON_COMMON
typedef struct etk_muon_coef {
    double w, one_minus_w, mu, one_minus_mu, decay, neg_alr;
    int w_small, nesterov, decays; /* nesterov: 0 off, 1 small weight, 2 large weight */
} etk_muon_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info muon_fields[] = {
    ETK_NONNEG(etk_muon_hp, lr, 1),
    ETK_NONNEG(etk_muon_hp, weight_decay, 1),
    ETK_NONNEG(etk_muon_hp, momentum, 1),
    ETK_REAL(etk_muon_hp, ns_a, 0, -ETK_INF, ETK_INF, 1, 1),
    ETK_REAL(etk_muon_hp, ns_b, 0, -ETK_INF, ETK_INF, 1, 1),
    ETK_REAL(etk_muon_hp, ns_c, 0, -ETK_INF, ETK_INF, 1, 1),
    ETK_NONNEG(etk_muon_hp, eps, 0),
    ETK_FLAG(etk_muon_hp, nesterov),
    ETK_INT(etk_muon_hp, ns_steps, 0, 99),
    ETK_INT(etk_muon_hp, adjust_lr_fn, 0, 1),
};
static const etk_slot_info muon_slots[] = {
    {"momentum_buffer", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"update", ETK_SLOT_FULL, ETK_INIT_WORK, 0},
};

static unsigned muon_needs(const void *hp) { (void)hp; return 3u; }
static void muon_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_muon_hp *h = (const etk_muon_hp *)hp;
    etk_muon_coef *c = (etk_muon_coef *)cf;
    const double rows = (double)t->rows, cols = (double)t->cols;
    double ratio;
    (void)phase, (void)red;
    c->w = 1.0 - h->momentum;
    c->one_minus_w = 1.0 - c->w;
    c->w_small = fabs(c->w) < 0.5;
    c->mu = h->momentum;
    c->one_minus_mu = 1.0 - h->momentum;
    c->nesterov = !h->nesterov ? 0 : fabs(h->momentum) < 0.5 ? 1 : 2;
    c->decay = 1.0 - h->lr * h->weight_decay;
    c->decays = h->weight_decay != 0.0;
    if (h->adjust_lr_fn == 1) ratio = 0.2 * sqrt(rows > cols ? rows : cols);
    else ratio = sqrt(rows / cols > 1.0 ? rows / cols : 1.0);
    c->neg_alr = -(h->lr * ratio);
}
ETK_COEF_FITS(etk_muon_coef);

static const etk_rule_desc etk_rule_desc_muon = {
    {"muon", sizeof(etk_muon_hp), muon_fields, ETK_NFIELDS(muon_fields), muon_slots, 2,
     ETK_RULE_MATRIX | ETK_RULE_MATRIX_ONLY | ETK_RULE_SERIAL, NULL, 0},
    2, {0, 0}, NULL, muon_needs, muon_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

/* m' = lerp(m, g, w), omw = 1 - w */
ETK_TGT static ETK_ALWAYS_INLINE T FN(muon_momentum)(T m, T g, T w, T omw, const int w_small)
{
    return w_small ? m + w * (g - m) : g - (g - m) * omw;
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(muon_update_loop)(S *restrict u, const T *restrict g, const S *restrict m,
                                                           size_t n, const etk_muon_coef *c, const int w_small,
                                                           const int nesterov)
{
    const T w = (T)c->w, omw = (T)c->one_minus_w, mu = (T)c->mu, omu = (T)c->one_minus_mu;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T gi = g[i];
        T mi = LD(m[i]);
        T v = FN(muon_momentum)(mi, gi, w, omw, w_small);
        if (nesterov == 1) v = gi + mu * (v - gi);
        if (nesterov == 2) v = v - (v - gi) * omu;
        u[i] = ST(v);
    }
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(muon_apply_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                          const S *restrict o, size_t n, const etk_muon_coef *c,
                                                          const int w_small, const int decays)
{
    const T w = (T)c->w, omw = (T)c->one_minus_w, decay = (T)c->decay, nalr = (T)c->neg_alr;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T gi = g[i], pi = p[i];
        T mi = LD(m[i]);
        m[i] = ST(FN(muon_momentum)(mi, gi, w, omw, w_small));
        if (decays) pi = pi * decay;
        p[i] = pi + nalr * LD(o[i]);
    }
}

ETK_TGT static void FN(muon_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_muon_coef *c = (const etk_muon_coef *)cf;
    S *u = (S *)t->state[1] + lo;
    const T *g = (const T *)t->grad + lo;
    const S *m = (const S *)t->state[0] + lo;
    size_t n = hi - lo;
    (void)red;
    switch (c->w_small * 3 + c->nesterov) {
    case 0: FN(muon_update_loop)(u, g, m, n, c, 0, 0); break;
    case 1: FN(muon_update_loop)(u, g, m, n, c, 0, 1); break;
    case 2: FN(muon_update_loop)(u, g, m, n, c, 0, 2); break;
    case 3: FN(muon_update_loop)(u, g, m, n, c, 1, 0); break;
    case 4: FN(muon_update_loop)(u, g, m, n, c, 1, 1); break;
    default: FN(muon_update_loop)(u, g, m, n, c, 1, 2); break;
    }
}

ETK_TGT static void FN(muon_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_muon_coef *c = (const etk_muon_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo;
    const S *o = (const S *)t->state[1] + lo;
    size_t n = hi - lo;
    (void)red;
    switch (c->w_small * 2 + c->decays) {
    case 0: FN(muon_apply_loop)(p, g, m, o, n, c, 0, 0); break;
    case 1: FN(muon_apply_loop)(p, g, m, o, n, c, 0, 1); break;
    case 2: FN(muon_apply_loop)(p, g, m, o, n, c, 1, 0); break;
    default: FN(muon_apply_loop)(p, g, m, o, n, c, 1, 1); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_MUON] = {{ETK_FNS(muon_p0), ETK_FNS(muon_p1)}},
#endif
