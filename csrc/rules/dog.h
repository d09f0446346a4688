/*
 * rules/dog.h -- DoG, distance over gradients (Ivgi, Hinder and Carmon 2023,
 * "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size Schedule"),
 * as the authors' dog.DoG and, with layer_wise, dog.LDoG (dog-optimizer
 * 1.0.3).  Plain SGD whose step size needs no tuning:
 *
 *   g = grad + weight_decay p
 *   first step:  rbar = reps_rel (1 + ||p||)   (0 when init_eta is given);  G = ||g||^2 + eps
 *   later:       rbar = max(rbar, ||p - x0||);                             G = G + ||g||^2
 *   eta = lr rbar / sqrt(G)   (0 when G == 0; init_eta instead on the first step when given)
 *   p += -eta g
 *
 * x0 is the state slot init_buffer, a copy of the parameter before its first
 * step.  The norms are taken over every tensor of a group as one vector
 * (DoG: rbar, G and eta are the group's persistent scalars,
 * etk_step_opts.group_state), or over each tensor on its own (layer_wise:
 * scalar slots of the same names).  "First step" means G == 0 (a group or
 * tensor that has not stepped yet: G > 0 after any step with eps > 0 or a
 * non-zero gradient), so a group that joins later, or a checkpoint saved
 * before the first step, starts right.  A group (or, layer_wise, a tensor)
 * with no elements in a call is left as it is.
 *
 * Two phases:
 *   0: sums of g^2 and of (p - x0)^2 (p^2 on the first step, x0 not read),
 *      and the element count, per block (reads p, g and x0);
 *   1: p += -eta g (reads p and g, writes p).
 * Between them, `between` advances each group's rbar, G and eta from the
 * group's sums; layer_wise tensors form theirs in `prepare` from the
 * tensor's sums and store them in `finish`.  Sums are formed in double over
 * ETK_LANES fixed lanes per block (see etk_internal.h), of the values g and
 * p - x0 rounded to the tensor's dtype, as the reference forms them.
 */
#ifndef ETK_RULE_DOG_COMMON
#define ETK_RULE_DOG_COMMON
/* the slots and the group scalars, by index */
#define ETK_DOG_X0 0
#define ETK_DOG_RBAR 1
#define ETK_DOG_G 2
#define ETK_DOG_ETA 3
typedef struct etk_dog_coef {
    double weight_decay, neg_eta;
    int wd, first;
} etk_dog_coef;
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info dog_fields[] = {
    ETK_NONNEG(etk_dog_hp, reps_rel, 0),
    /* >= 0 (the reference asks > 0 at construction): a schedule of this multiplier may end at 0 */
    ETK_NONNEG(etk_dog_hp, lr, 1),
    ETK_NONNEG(etk_dog_hp, weight_decay, 1),
    ETK_NONNEG(etk_dog_hp, eps, 0),
    /* > 0, or None (NaN) */
    {"init_eta", (uint32_t)offsetof(etk_dog_hp, init_eta), ETK_FIELD_REAL_OR_NONE, 0, 1, 1, 0.0, ETK_INF},
    ETK_FLAG(etk_dog_hp, layer_wise),
};
static const etk_slot_info dog_slots[] = {
    {"init_buffer", ETK_SLOT_FULL, ETK_INIT_PARAM, 0},
    {"rbar", ETK_SLOT_SCALAR, ETK_INIT_ZERO, 0},
    {"G", ETK_SLOT_SCALAR, ETK_INIT_ZERO, 0},
    {"eta", ETK_SLOT_SCALAR, ETK_INIT_ZERO, 0},
};
/* a group's scalars, at the same indices less one (rbar, G, eta) */
static const char *const dog_group_state[] = {"rbar", "G", "eta"};

static int dog_check(const void *hp, etk_error *err)
{
    const etk_dog_hp *h = (const etk_dog_hp *)hp;
    if (h->reps_rel == 0.0 && h->init_eta != h->init_eta) {
        err->field = "reps_rel";
        err->message = "reps_rel must be > 0 unless init_eta is given (the first step size is "
                       "reps_rel (1 + ||x0||) / sqrt(G): with 0, DoG never moves)";
        return ETK_EHPARAM;
    }
    return ETK_OK;
}

static unsigned dog_needs(const void *hp) { return ((const etk_dog_hp *)hp)->layer_wise ? 15u : 1u; }

/* Advance (rbar, G) by one step whose sums are d2 (squared distance from x0,
 * or squared norm of p on the first step) and g2 (squared gradient norm);
 * returns the step's eta.  The first step is the one that finds G == 0. */
static double dog_advance(const etk_dog_hp *h, double *rbar, double *G, double d2, double g2)
{
    const int first = *G == 0.0, given = h->init_eta == h->init_eta;
    double eta;
    if (first) {
        *rbar = given ? 0.0 : h->reps_rel * (1.0 + sqrt(d2));
        *G = g2 + h->eps;
    } else {
        const double d = sqrt(d2);
        if (d > *rbar || d != d) *rbar = d; /* torch.maximum: NaN wins */
        *G = *G + g2;
    }
    eta = *G == 0.0 ? 0.0 : h->lr * *rbar / sqrt(*G);
    return first && given ? h->init_eta : eta;
}

static void dog_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_dog_hp *h = (const etk_dog_hp *)hp;
    etk_dog_coef *c = (etk_dog_coef *)cf;
    c->weight_decay = h->weight_decay;
    c->wd = h->weight_decay != 0.0;
    c->first = 0;
    c->neg_eta = 0.0;
    if (phase == 0) {
        c->first = (h->layer_wise ? *(const double *)t->state[ETK_DOG_G] : red->gstate[ETK_DOG_G - 1]) == 0.0;
    } else if (h->layer_wise) {
        double rbar = *(const double *)t->state[ETK_DOG_RBAR], G = *(const double *)t->state[ETK_DOG_G];
        c->neg_eta = -dog_advance(h, &rbar, &G, red->tensor[1], red->tensor[0]);
    } else {
        c->neg_eta = -red->gstate[ETK_DOG_ETA - 1];
    }
}

/* After phase 0, once per group: the group's rbar, G and eta (not layer_wise). */
static void dog_between(unsigned phase, const void *hp, const double *sums, double *gs)
{
    const etk_dog_hp *h = (const etk_dog_hp *)hp;
    if (phase != 0 || h->layer_wise || sums[2] == 0.0) return;
    gs[ETK_DOG_ETA - 1] = dog_advance(h, &gs[ETK_DOG_RBAR - 1], &gs[ETK_DOG_G - 1], sums[1], sums[0]);
}

/* After the step, layer_wise: the tensor's rbar, G and eta, as its phase 1 used them. */
static void dog_finish(const void *hp, const etk_tensor *t, const etk_reduced *red)
{
    const etk_dog_hp *h = (const etk_dog_hp *)hp;
    if (!h->layer_wise || t->n == 0) return;
    *(double *)t->state[ETK_DOG_ETA] =
        dog_advance(h, (double *)t->state[ETK_DOG_RBAR], (double *)t->state[ETK_DOG_G], red->tensor[1], red->tensor[0]);
}
ETK_COEF_FITS(etk_dog_coef);

static const etk_rule_desc etk_rule_desc_dog = {
    {"dog", sizeof(etk_dog_hp), dog_fields, ETK_NFIELDS(dog_fields), dog_slots, 4, 0u, dog_group_state, 3},
    2, {3, 0}, dog_check, dog_needs, dog_prepare, dog_between, dog_finish,
};

#elif defined(ETK_RULE_LOOPS)

/* red = {sum of g^2, sum of (p - x0)^2 (p^2 when FIRST), elements} over one block */
ETK_TGT static ETK_ALWAYS_INLINE void FN(dog_sums)(const T *restrict p, const T *restrict g, const S *restrict x0,
                                                   size_t n, const etk_dog_coef *c, const int wd, const int first,
                                                   double *red)
{
    const T wdv = (T)c->weight_decay;
    double accg[ETK_LANES] = {0.0}, accd[ETK_LANES] = {0.0};
    size_t i = 0;
    int j;
    for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
        for (j = 0; j < ETK_LANES; j++) {
            const size_t k = i + (size_t)j;
            const T pk = p[k];
            const T gk = wd ? g[k] + wdv * pk : g[k];
            const T dk = first ? pk : pk - LD(x0[k]);
            const double gd = (double)gk, dd = (double)dk;
            accg[j] += gd * gd;
            accd[j] += dd * dd;
        }
    }
    for (j = 0; i < n; i++, j++) {
        const T pk = p[i];
        const T gk = wd ? g[i] + wdv * pk : g[i];
        const T dk = first ? pk : pk - LD(x0[i]);
        const double gd = (double)gk, dd = (double)dk;
        accg[j] += gd * gd;
        accd[j] += dd * dd;
    }
    red[0] = etk_lane_sum(accg);
    red[1] = etk_lane_sum(accd);
    red[2] = (double)n;
}

ETK_TGT static void FN(dog_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_dog_coef *c = (const etk_dog_coef *)cf;
    const T *p = (const T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    const S *x0 = (const S *)t->state[ETK_DOG_X0] + lo;
    const size_t n = hi - lo;
    switch (c->wd * 2 + c->first) {
    case 0: FN(dog_sums)(p, g, x0, n, c, 0, 0, red); break;
    case 1: FN(dog_sums)(p, g, x0, n, c, 0, 1, red); break;
    case 2: FN(dog_sums)(p, g, x0, n, c, 1, 0, red); break;
    default: FN(dog_sums)(p, g, x0, n, c, 1, 1, red); break;
    }
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(dog_loop)(T *restrict p, const T *restrict g, size_t n,
                                                   const etk_dog_coef *c, const int wd)
{
    const T wdv = (T)c->weight_decay, neta = (T)c->neg_eta;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        const T pi = p[i];
        const T gi = wd ? g[i] + wdv * pi : g[i];
        p[i] = pi + neta * gi;
    }
}

ETK_TGT static void FN(dog_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_dog_coef *c = (const etk_dog_coef *)cf;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    (void)red;
    if (c->wd) FN(dog_loop)(p, g, hi - lo, c, 1);
    else FN(dog_loop)(p, g, hi - lo, c, 0);
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_DOG] = {{ETK_FNS(dog_p0), ETK_FNS(dog_p1)}},
#endif
