/*
 * rules/rmsprop.h -- RMSprop (torch.optim.RMSprop).
 *
 *   g = -grad if maximize else grad;  g += weight_decay * p
 *   s = alpha s + (1 - alpha) g^2
 *   avg = sqrt(s - ga^2) (centered: ga = ga + (1 - alpha)(g - ga)) or sqrt(s);  avg += eps
 *   buf = momentum buf + g / avg; p -= lr buf   (momentum > 0)   or   p -= lr g / avg
 */
#ifndef ETK_RULE_RMSPROP_COMMON
#define ETK_RULE_RMSPROP_COMMON
typedef struct etk_rmsprop_coef {
    double neg_lr, alpha, one_minus_alpha, eps, weight_decay, momentum, gsign;
    int wd, centered, use_momentum;
} etk_rmsprop_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info rmsprop_fields[] = {
    ETK_NONNEG(etk_rmsprop_hp, lr, 1),
    ETK_UNIT(etk_rmsprop_hp, alpha, 0),
    ETK_NONNEG(etk_rmsprop_hp, eps, 0),
    ETK_NONNEG(etk_rmsprop_hp, weight_decay, 1),
    ETK_NONNEG(etk_rmsprop_hp, momentum, 1),
    ETK_FLAG(etk_rmsprop_hp, centered),
    ETK_FLAG(etk_rmsprop_hp, maximize),
};
static const etk_slot_info rmsprop_slots[] = {
    {"square_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0, 0, 0.0, 1},
    {"momentum_buffer", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
    {"grad_avg", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
};

static unsigned rmsprop_needs(const void *hp)
{
    const etk_rmsprop_hp *h = (const etk_rmsprop_hp *)hp;
    return 1u | (h->momentum > 0.0 ? 2u : 0u) | (h->centered ? 4u : 0u);
}
static void rmsprop_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_rmsprop_hp *h = (const etk_rmsprop_hp *)hp;
    etk_rmsprop_coef *c = (etk_rmsprop_coef *)cf;
    (void)phase, (void)t, (void)red;
    c->neg_lr = -h->lr;
    c->alpha = h->alpha;
    c->one_minus_alpha = 1.0 - h->alpha;
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->momentum = h->momentum;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
    c->centered = h->centered;
    c->use_momentum = h->momentum > 0.0;
}
ETK_COEF_FITS(etk_rmsprop_coef);

static const etk_rule_desc etk_rule_desc_rmsprop = {
    {"rmsprop", sizeof(etk_rmsprop_hp), rmsprop_fields, ETK_NFIELDS(rmsprop_fields), rmsprop_slots, 3, 0u, NULL, 0},
    1, {0}, NULL, rmsprop_needs, rmsprop_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(rmsprop_loop)(T *restrict p, const T *restrict g, S *restrict sq,
                                                       S *restrict buf, S *restrict ga, size_t n,
                                                       const etk_rmsprop_coef *c, const int wd,
                                                       const int centered, const int mom)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, nlr = (T)c->neg_lr;
    const T alpha = (T)c->alpha, oma = (T)c->one_minus_alpha, eps = (T)c->eps, mu = (T)c->momentum;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T si, avg;
        if (wd) gi = gi + wdv * pi;
        si = LD(sq[i]) * alpha + (oma * gi) * gi;
        sq[i] = ST(si);
        if (centered) {
            T ai = LD(ga[i]);
            ai = ai + oma * (gi - ai);
            ga[i] = ST(ai);
            avg = ETK_SQRT(si - ai * ai);
        } else {
            avg = ETK_SQRT(si);
        }
        avg = avg + eps;
        if (mom) {
            T b = LD(buf[i]) * mu + gi / avg;
            buf[i] = ST(b);
            p[i] = pi + nlr * b;
        } else {
            p[i] = pi + (nlr * gi) / avg;
        }
    }
}

#define ETK_RMS_CALL(W, C, M) FN(rmsprop_loop)(p, g, sq, buf, ga, n, c, W, C, M)
ETK_TGT static void FN(rmsprop_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_rmsprop_coef *c = (const etk_rmsprop_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *sq = (S *)t->state[0] + lo;
    S *buf = c->use_momentum ? (S *)t->state[1] + lo : (S *)0;
    S *ga = c->centered ? (S *)t->state[2] + lo : (S *)0;
    size_t n = hi - lo;
    (void)red;
    switch ((c->wd << 2) | (c->centered << 1) | c->use_momentum) {
    case 0: ETK_RMS_CALL(0, 0, 0); break;
    case 1: ETK_RMS_CALL(0, 0, 1); break;
    case 2: ETK_RMS_CALL(0, 1, 0); break;
    case 3: ETK_RMS_CALL(0, 1, 1); break;
    case 4: ETK_RMS_CALL(1, 0, 0); break;
    case 5: ETK_RMS_CALL(1, 0, 1); break;
    case 6: ETK_RMS_CALL(1, 1, 0); break;
    default: ETK_RMS_CALL(1, 1, 1); break;
    }
}
#undef ETK_RMS_CALL

#elif defined(ETK_RULE_ROW)
[ETK_RULE_RMSPROP] = {{ETK_FNS(rmsprop_p0)}},
#endif
