/*
 * rules/sgd.h -- SGD with momentum, dampening and Nesterov (torch.optim.SGD).
 *
 *   g = -grad if maximize else grad;  g += weight_decay * p
 *   buf = g (first step) or momentum * buf + (1 - dampening) * g
 *   g = g + momentum * buf if nesterov else buf   (when momentum != 0)
 *   p -= lr * g
 */
#ifndef ETK_RULE_SGD_COMMON
#define ETK_RULE_SGD_COMMON
typedef struct etk_sgd_coef {
    double neg_lr, momentum, one_minus_dampening, weight_decay, gsign;
    int wd, use_momentum, nesterov, fresh;
} etk_sgd_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info sgd_fields[] = {
    ETK_NONNEG(etk_sgd_hp, lr, 1),
    ETK_NONNEG(etk_sgd_hp, momentum, 1),
    ETK_UNIT(etk_sgd_hp, dampening, 0),
    ETK_NONNEG(etk_sgd_hp, weight_decay, 1),
    ETK_FLAG(etk_sgd_hp, nesterov),
    ETK_FLAG(etk_sgd_hp, maximize),
};
static const etk_slot_info sgd_slots[] = {{"momentum_buffer", ETK_SLOT_FULL, ETK_INIT_ZERO, 0}};

static int sgd_check(const void *hp, etk_error *err)
{
    const etk_sgd_hp *h = (const etk_sgd_hp *)hp;
    if (h->nesterov && (h->momentum <= 0.0 || h->dampening != 0.0)) {
        err->field = "nesterov";
        err->message = "Nesterov momentum requires momentum > 0 and dampening == 0";
        return ETK_EHPARAM;
    }
    return ETK_OK;
}
static unsigned sgd_needs(const void *hp) { return ((const etk_sgd_hp *)hp)->momentum != 0.0 ? 1u : 0u; }
static void sgd_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_sgd_hp *h = (const etk_sgd_hp *)hp;
    etk_sgd_coef *c = (etk_sgd_coef *)cf;
    (void)phase, (void)red;
    c->neg_lr = -h->lr;
    c->momentum = h->momentum;
    c->one_minus_dampening = 1.0 - h->dampening;
    c->weight_decay = h->weight_decay;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
    c->use_momentum = h->momentum != 0.0;
    c->nesterov = h->nesterov;
    c->fresh = (t->flags & ETK_FRESH_SLOT(0)) != 0;
}
ETK_COEF_FITS(etk_sgd_coef);

static const etk_rule_desc etk_rule_desc_sgd = {
    {"sgd", sizeof(etk_sgd_hp), sgd_fields, ETK_NFIELDS(sgd_fields), sgd_slots, 1, 0u, NULL, 0},
    1, {0}, sgd_check, sgd_needs, sgd_prepare, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(sgd_loop)(T *restrict p, const T *restrict g, S *restrict buf,
                                                   size_t n, const etk_sgd_coef *c, const int wd,
                                                   const int mom, const int fresh, const int nesterov)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, nlr = (T)c->neg_lr;
    const T mu = (T)c->momentum, omd = (T)c->one_minus_dampening;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        if (wd) gi = gi + wdv * pi;
        if (mom) {
            T b = fresh ? gi : LD(buf[i]) * mu + omd * gi;
            buf[i] = ST(b);
            gi = nesterov ? gi + mu * b : b;
        }
        p[i] = pi + nlr * gi;
    }
}

#define ETK_SGD_CALL(W, M, F, N) FN(sgd_loop)(p, g, buf, n, c, W, M, F, N)
ETK_TGT static void FN(sgd_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_sgd_coef *c = (const etk_sgd_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *buf = c->use_momentum ? (S *)t->state[0] + lo : (S *)0;
    size_t n = hi - lo;
    (void)red;
    if (!c->use_momentum) {
        if (c->wd) ETK_SGD_CALL(1, 0, 0, 0); else ETK_SGD_CALL(0, 0, 0, 0);
        return;
    }
    switch ((c->wd << 2) | (c->fresh << 1) | c->nesterov) {
    case 0: ETK_SGD_CALL(0, 1, 0, 0); break;
    case 1: ETK_SGD_CALL(0, 1, 0, 1); break;
    case 2: ETK_SGD_CALL(0, 1, 1, 0); break;
    case 3: ETK_SGD_CALL(0, 1, 1, 1); break;
    case 4: ETK_SGD_CALL(1, 1, 0, 0); break;
    case 5: ETK_SGD_CALL(1, 1, 0, 1); break;
    case 6: ETK_SGD_CALL(1, 1, 1, 0); break;
    default: ETK_SGD_CALL(1, 1, 1, 1); break;
    }
}
#undef ETK_SGD_CALL

#elif defined(ETK_RULE_ROW)
[ETK_RULE_SGD] = {{ETK_FNS(sgd_p0)}},
#endif
