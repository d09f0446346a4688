/*
 * rules/lars.h -- LARS (You et al. 2017, "Large Batch Training of
 * Convolutional Networks"), as pytorch_optimizer.LARS (4.1.0).
 *
 *   g = -grad if maximize else grad
 *   tensors of two or more dimensions (rows > 0; scalars and vectors are left as they are):
 *     r = trust_coefficient ||p|| / d  if ||p|| > 0 and d = ||g|| + weight_decay ||p|| > 0, else 1
 *     g = (g + weight_decay p) r
 *   momentum > 0:  buf = momentum buf + (1 - dampening) g  (buf starts at zero);
 *                  g = g + momentum buf if nesterov else buf
 *   p -= lr g
 *
 * Two phases: phase 0 sums p^2 and g^2 of the tensors with rows > 0 (reads p
 * and g) and updates every other tensor completely; phase 1 updates the
 * tensors with rows > 0 with their trust ratio.  Sums are formed in double
 * over ETK_LANES fixed lanes per block (see etk_internal.h).
 */
#ifndef ETK_RULE_LARS_COMMON
#define ETK_RULE_LARS_COMMON
typedef struct etk_lars_coef {
    double gsign, weight_decay, ratio, momentum, one_minus_dampening, neg_lr;
    int matrix, use_momentum, nesterov;
} etk_lars_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info lars_fields[] = {
    ETK_NONNEG(etk_lars_hp, lr, 1),
    ETK_NONNEG(etk_lars_hp, weight_decay, 1),
    ETK_UNIT_OPEN(etk_lars_hp, momentum, 1),
    ETK_UNIT_OPEN(etk_lars_hp, dampening, 0),
    ETK_NONNEG(etk_lars_hp, trust_coefficient, 0),
    ETK_FLAG(etk_lars_hp, nesterov),
    ETK_FLAG(etk_lars_hp, maximize),
};
static const etk_slot_info lars_slots[] = {{"momentum_buffer", ETK_SLOT_FULL, ETK_INIT_ZERO, 0}};

static unsigned lars_needs(const void *hp) { return ((const etk_lars_hp *)hp)->momentum > 0.0 ? 1u : 0u; }
static void lars_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_lars_hp *h = (const etk_lars_hp *)hp;
    etk_lars_coef *c = (etk_lars_coef *)cf;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->weight_decay = h->weight_decay;
    c->momentum = h->momentum;
    c->one_minus_dampening = 1.0 - h->dampening;
    c->neg_lr = -h->lr;
    c->matrix = t->rows > 0;
    c->use_momentum = h->momentum > 0.0;
    c->nesterov = h->nesterov;
    c->ratio = 1.0;
    if (phase == 1 && c->matrix) {
        const double pn = sqrt(red->tensor[0]), gn = sqrt(red->tensor[1]);
        const double d = gn + h->weight_decay * pn;
        if (pn > 0.0 && d > 0.0) c->ratio = h->trust_coefficient * pn / d;
    }
}
ETK_COEF_FITS(etk_lars_coef);

static const etk_rule_desc etk_rule_desc_lars = {
    {"lars", sizeof(etk_lars_hp), lars_fields, ETK_NFIELDS(lars_fields), lars_slots, 1, ETK_RULE_MATRIX, NULL, 0},
    2, {2, 0}, NULL, lars_needs, lars_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

/* the update of one tensor; TRUST: with weight decay and the trust ratio (rows > 0) */
ETK_TGT static ETK_ALWAYS_INLINE void FN(lars_loop)(T *restrict p, const T *restrict g, S *restrict buf, size_t n,
                                                    const etk_lars_coef *c, const int trust, const int mom,
                                                    const int nesterov)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, ratio = (T)c->ratio, mu = (T)c->momentum;
    const T omd = (T)c->one_minus_dampening, nlr = (T)c->neg_lr;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i], gi = g[i] * gsign;
        if (trust) gi = (gi + wdv * pi) * ratio;
        if (mom) {
            T b = LD(buf[i]) * mu + omd * gi;
            buf[i] = ST(b);
            gi = nesterov ? gi + mu * b : b;
        }
        p[i] = pi + nlr * gi;
    }
}

ETK_TGT static void FN(lars_update)(const etk_tensor *t, size_t lo, size_t hi, const etk_lars_coef *c,
                                    const int trust)
{
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *buf = c->use_momentum ? (S *)t->state[0] + lo : (S *)0;
    const size_t n = hi - lo;
    switch (c->use_momentum * 2 + c->nesterov) {
    case 0:
    case 1: FN(lars_loop)(p, g, buf, n, c, trust, 0, 0); break;
    case 2: FN(lars_loop)(p, g, buf, n, c, trust, 1, 0); break;
    default: FN(lars_loop)(p, g, buf, n, c, trust, 1, 1); break;
    }
}

/* red = {sum of p^2, sum of g^2} over the block */
ETK_TGT static void FN(lars_norms)(const T *restrict p, const T *restrict g, size_t n, double *red)
{
    double accp[ETK_LANES] = {0.0}, accg[ETK_LANES] = {0.0};
    size_t i = 0;
    int j;
    for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
        for (j = 0; j < ETK_LANES; j++) {
            const double x = (double)p[i + (size_t)j], y = (double)g[i + (size_t)j];
            accp[j] += x * x;
            accg[j] += y * y;
        }
    }
    for (j = 0; i < n; i++, j++) {
        const double x = (double)p[i], y = (double)g[i];
        accp[j] += x * x;
        accg[j] += y * y;
    }
    red[0] = etk_lane_sum(accp);
    red[1] = etk_lane_sum(accg);
}

/* phase 0: rows > 0: red = {sum of p^2, sum of g^2}; otherwise the whole update */
ETK_TGT static void FN(lars_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_lars_coef *c = (const etk_lars_coef *)cf;
    if (!c->matrix) {
        FN(lars_update)(t, lo, hi, c, 0);
        red[0] = red[1] = 0.0;
    } else {
        FN(lars_norms)((const T *)t->param + lo, (const T *)t->grad + lo, hi - lo, red);
    }
}

/* phase 1: the tensors with rows > 0 */
ETK_TGT static void FN(lars_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_lars_coef *c = (const etk_lars_coef *)cf;
    (void)red;
    if (c->matrix) FN(lars_update)(t, lo, hi, c, 1);
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_LARS] = {{ETK_FNS(lars_p0), ETK_FNS(lars_p1)}},
#endif
