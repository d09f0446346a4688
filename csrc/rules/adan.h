/*
 * rules/adan.h -- Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum
 * Algorithm for Faster Optimizing Deep Models"), as pytorch_optimizer.Adan.
 *
 *   clip = min(1, max_grad_norm / (sqrt(sum of grad^2) + eps))   (max_grad_norm > 0; else 1)
 *   g = (-grad if maximize else grad) * clip
 *   d = prev + g                     (prev = -(grad * clip) when just created)
 *   m = m + (1 - beta1) (g - m);  n = n + (1 - beta2) (d - n)
 *   u = beta2 d + g;  v = beta3 v + (1 - beta3) u^2
 *   den = sqrt(v) / sqrt(1 - beta3^t) + eps
 *   p *= 1 - lr wd                                    (weight_decouple)
 *   p += -lr / (1 - beta1^t) m / den;  p += -lr beta2 / (1 - beta2^t) n / den
 *   p /= 1 + lr wd                                    (otherwise: proximal decay)
 *   prev = -g
 *
 * Two phases.  Phase 0 sums grad^2 for the tensors of groups with
 * max_grad_norm > 0 (a loop that returns at once for the others); the clip
 * uses the sum over every tensor of the call, as the reference clips by the
 * norm of all gradients.  Phase 1 is the update, one pass.  The fresh bit of
 * previous_grad stands for the reference's first step, where it starts as
 * -(grad * clip) (taken before maximize, as there).
 */
#ifndef ETK_RULE_ADAN_COMMON
#define ETK_RULE_ADAN_COMMON
#define ETK_ADAN_PREV 3 /* slot of previous_grad */
typedef struct etk_adan_coef {
    double gsign, clip, one_minus_beta1, one_minus_beta2, beta2, beta3, one_minus_beta3;
    double bias_correction3_sqrt, eps, neg_step_size, neg_diff_step_size, decay, prox;
    int reduce; /* phase 0: sum grad^2 */
    int wd;     /* 0 none, 1 proximal (divide after), 2 decoupled (multiply before) */
    int fresh;  /* previous_grad was just created */
} etk_adan_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info adan_fields[] = {
    ETK_NONNEG(etk_adan_hp, lr, 1),
    ETK_UNIT_OPEN(etk_adan_hp, beta1, 1),
    ETK_UNIT_OPEN(etk_adan_hp, beta2, 0),
    /* the reference allows beta3 = 1, which divides by 1 - beta3^t = 0 */
    ETK_UNIT_OPEN(etk_adan_hp, beta3, 0),
    ETK_NONNEG(etk_adan_hp, weight_decay, 1),
    ETK_NONNEG(etk_adan_hp, max_grad_norm, 0),
    ETK_NONNEG(etk_adan_hp, eps, 0),
    ETK_FLAG(etk_adan_hp, weight_decouple),
    ETK_FLAG(etk_adan_hp, maximize),
};
static const etk_slot_info adan_slots[] = {
    {"exp_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"exp_avg_diff", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"previous_grad", ETK_SLOT_FULL, ETK_INIT_ZERO, 0}, /* written whole at the fresh step */
};

static unsigned adan_needs(const void *hp) { (void)hp; return 15u; }
static void adan_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_adan_hp *h = (const etk_adan_hp *)hp;
    etk_adan_coef *c = (etk_adan_coef *)cf;
    double k = (double)t->step;
    c->reduce = h->max_grad_norm > 0.0;
    if (phase == 0) return;
    c->clip = 1.0;
    if (h->max_grad_norm > 0.0) {
        double x = h->max_grad_norm / (sqrt(red->call[0]) + h->eps);
        c->clip = x > 1.0 ? 1.0 : x; /* NaN stays NaN, as torch.clamp */
    }
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->beta2 = h->beta2;
    c->beta3 = h->beta3;
    c->one_minus_beta3 = 1.0 - h->beta3;
    c->bias_correction3_sqrt = sqrt(1.0 - pow(h->beta3, k));
    c->eps = h->eps;
    c->neg_step_size = -(h->lr / (1.0 - pow(h->beta1, k)));
    c->neg_diff_step_size = -(h->lr * h->beta2 / (1.0 - pow(h->beta2, k)));
    c->decay = 1.0 - h->lr * h->weight_decay;
    c->prox = 1.0 + h->lr * h->weight_decay;
    c->wd = h->weight_decay == 0.0 ? 0 : h->weight_decouple ? 2 : 1;
    c->fresh = (t->flags & ETK_FRESH_SLOT(ETK_ADAN_PREV)) != 0;
}
ETK_COEF_FITS(etk_adan_coef);

static const etk_rule_desc etk_rule_desc_adan = {
    {"adan", sizeof(etk_adan_hp), adan_fields, ETK_NFIELDS(adan_fields), adan_slots, 4, ETK_RULE_USES_STEP, NULL,
     0},
    2, {1, 0}, NULL, adan_needs, adan_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

/* Phase 0: this block's sum of grad^2, in double over fixed lanes. */
ETK_TGT static void FN(adan_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adan_coef *c = (const etk_adan_coef *)cf;
    const T *g = (const T *)t->grad + lo;
    const size_t n = hi - lo;
    double acc[ETK_LANES];
    size_t i, j;
    red[0] = 0.0;
    if (!c->reduce) return;
    for (j = 0; j < ETK_LANES; j++) acc[j] = 0.0;
    for (i = 0; i + ETK_LANES <= n; i += ETK_LANES)
        for (j = 0; j < ETK_LANES; j++) {
            const double x = (double)g[i + j];
            acc[j] += x * x;
        }
    for (; i < n; i++) {
        const double x = (double)g[i];
        acc[i % ETK_LANES] += x * x;
    }
    red[0] = etk_lane_sum(acc);
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(adan_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                    S *restrict v, S *restrict dm, S *restrict prev, size_t n,
                                                    const etk_adan_coef *c, const int wd, const int fresh)
{
    const T gsign = (T)c->gsign, clip = (T)c->clip, nclip = (T)(-c->clip);
    const T omb1 = (T)c->one_minus_beta1, omb2 = (T)c->one_minus_beta2, b2 = (T)c->beta2;
    const T b3 = (T)c->beta3, omb3 = (T)c->one_minus_beta3, bc3s = (T)c->bias_correction3_sqrt;
    const T eps = (T)c->eps, nss = (T)c->neg_step_size, ndss = (T)c->neg_diff_step_size;
    const T decay = (T)c->decay, prox = (T)c->prox;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        const T gi = (g[i] * gsign) * clip;
        const T previ = fresh ? g[i] * nclip : LD(prev[i]);
        const T di = previ + gi;
        const T mi = LD(m[i]), dmi = LD(dm[i]);
        const T mn = mi + omb1 * (gi - mi);
        const T dmn = dmi + omb2 * (di - dmi);
        const T ui = di * b2 + gi;
        const T vn = LD(v[i]) * b3 + (omb3 * ui) * ui;
        const T den = ETK_SQRT(vn) / bc3s + eps;
        m[i] = ST(mn);
        dm[i] = ST(dmn);
        v[i] = ST(vn);
        prev[i] = ST(-gi);
        if (wd == 2) pi = pi * decay;
        pi = pi + (nss * mn) / den;
        pi = pi + (ndss * dmn) / den;
        if (wd == 1) pi = pi / prox;
        p[i] = pi;
    }
}

ETK_TGT static void FN(adan_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adan_coef *c = (const etk_adan_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *v = (S *)t->state[1] + lo, *dm = (S *)t->state[2] + lo;
    S *prev = (S *)t->state[ETK_ADAN_PREV] + lo;
    const size_t n = hi - lo;
    (void)red;
    if (c->fresh) {
        switch (c->wd) {
        case 0: FN(adan_loop)(p, g, m, v, dm, prev, n, c, 0, 1); break;
        case 1: FN(adan_loop)(p, g, m, v, dm, prev, n, c, 1, 1); break;
        default: FN(adan_loop)(p, g, m, v, dm, prev, n, c, 2, 1); break;
        }
    } else {
        switch (c->wd) {
        case 0: FN(adan_loop)(p, g, m, v, dm, prev, n, c, 0, 0); break;
        case 1: FN(adan_loop)(p, g, m, v, dm, prev, n, c, 1, 0); break;
        default: FN(adan_loop)(p, g, m, v, dm, prev, n, c, 2, 0); break;
        }
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ADAN] = {{ETK_FNS(adan_p0), ETK_FNS(adan_p1)}},
#endif
