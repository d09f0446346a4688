/*
 * rules/schedulefree.h -- Schedule-Free AdamW, SGD and RAdam (Defazio et al.
 * 2024, "The Road Less Scheduled"), as schedulefree.AdamWScheduleFree,
 * SGDScheduleFree and RAdamScheduleFree (the schedulefree package, 1.4.1).
 * Three rules in one file: they share their element loops.
 *
 * The parameters hold y, a point between the base iterate z (state "z") and
 * the weighted average x of the z's, which is never stored: y = (1 - beta1) z
 * + beta1 x (beta1 is SGD's momentum).  Per group and step, from the group's
 * scalars before it (k steps taken, lr_max, weight_sum):
 *
 *   lr_t   = lr * min(1, (k + 1) / warmup_steps)             (AdamW, SGD)
 *          = lr * rect_t                                      (RAdam: its rectification
 *            while rho_t > 4, else 0 with silent_sgd_phase, 1 without)
 *   lr_max = max(lr_t, lr_max);  weight = (k + 1)^r lr_max^weight_lr_power
 *   weight_sum += weight;  ckp1 = weight / weight_sum   (0 when weight_sum is 0)
 *
 * and per element (one pass: read g, y, z, v; write y, z, v):
 *
 *   v = v beta2 + ((1 - beta2) g) g;  g = g / (sqrt(v / (1 - beta2^(k+1))) + eps)
 *                                     (AdamW; RAdam updates v always, divides while rho_t > 4)
 *   g = g + weight_decay * y          (weight decay at y)
 *   y = lerp(y, z, ckp1);  y = y + lr_t (beta1 (1 - ckp1) - 1) g;  z = z + (-lr_t) g
 *
 * lerp is torch.lerp's: a + w (b - a) when |w| < 0.5, else b - (b - a)(1 - w).
 *
 * The group's scalars are per-group state (etk_rule_info.group_state: k,
 * lr_max, weight_sum, scheduled_lr, train_mode, doubles).  `prepare` derives
 * the step's scalars from them, a pure function of the hyperparameters and
 * the state before the step, for every tensor piece; `between`, after the
 * step's one phase, computes the same values once per group and commits them.
 *
 * Side phases (etk_rule_desc.nside), which read no gradient and run only when
 * named in etk_step_opts.phases: phase 1 (eval) moves the parameters of every
 * group in train mode to x, p = lerp(p, z, 1 - 1/beta1); phase 2 (train)
 * those of every group in eval mode back to y, p = lerp(p, z, 1 - beta1).
 * Each then sets its groups' train_mode.  One pass: read p, z; write p.
 */
#ifndef ETK_RULE_SCHEDULEFREE_COMMON
#define ETK_RULE_SCHEDULEFREE_COMMON
/* group state, by index */
#define ETK_SF_K 0
#define ETK_SF_LR_MAX 1
#define ETK_SF_WEIGHT_SUM 2
#define ETK_SF_SCHEDULED_LR 3
#define ETK_SF_TRAIN_MODE 4
/* side phases */
#define ETK_SF_EVAL 1u  /* y -> x */
#define ETK_SF_TRAIN 2u /* x -> y */
/* what an element's step does with the gradient */
#define ETK_SF_PLAIN 0 /* SGD: no second moment */
#define ETK_SF_ADAM 1  /* v updated, g divided by its bias-corrected root */
#define ETK_SF_RAW 2   /* v updated, g used as it is (RAdam while rho_t <= 4) */
typedef struct etk_sf_coef {
    double w, one_minus_w; /* the lerp toward z */
    double beta2, one_minus_beta2, bias_correction2, eps, weight_decay, y_lr, neg_lr;
    int mode, small, wd;
    int skip; /* side phase: the group is in the target mode already */
} etk_sf_coef;
/* one group's step, from its scalars before it */
typedef struct etk_sf_scalars {
    double lr, lr_max, weight_sum, ckp1, bias_correction2;
    int mode;
} etk_sf_scalars;
#endif

#if defined(ETK_RULE_HOST)

#define ETK_SF_COMMON_FIELDS(S)                                                                                     \
    ETK_REAL(S, r, 0, -ETK_INF, ETK_INF, 1, 1), ETK_NONNEG(S, weight_lr_power, 0)

static const etk_field_info schedulefree_adamw_fields[] = {
    ETK_NONNEG(etk_schedulefree_adamw_hp, lr, 1),
    ETK_REAL(etk_schedulefree_adamw_hp, beta1, 0, 0.0, 1.0, 1, 0),
    ETK_UNIT_OPEN(etk_schedulefree_adamw_hp, beta2, 0),
    ETK_NONNEG(etk_schedulefree_adamw_hp, eps, 0),
    ETK_NONNEG(etk_schedulefree_adamw_hp, weight_decay, 1),
    ETK_SF_COMMON_FIELDS(etk_schedulefree_adamw_hp),
    ETK_INT(etk_schedulefree_adamw_hp, warmup_steps, 0, 2147483647),
};
static const etk_field_info schedulefree_sgd_fields[] = {
    ETK_NONNEG(etk_schedulefree_sgd_hp, lr, 1),
    ETK_REAL(etk_schedulefree_sgd_hp, momentum, 0, 0.0, 1.0, 1, 1),
    ETK_NONNEG(etk_schedulefree_sgd_hp, weight_decay, 1),
    ETK_SF_COMMON_FIELDS(etk_schedulefree_sgd_hp),
    ETK_INT(etk_schedulefree_sgd_hp, warmup_steps, 0, 2147483647),
};
static const etk_field_info schedulefree_radam_fields[] = {
    ETK_NONNEG(etk_schedulefree_radam_hp, lr, 1),
    ETK_REAL(etk_schedulefree_radam_hp, beta1, 0, 0.0, 1.0, 1, 0),
    ETK_UNIT_OPEN(etk_schedulefree_radam_hp, beta2, 0),
    ETK_NONNEG(etk_schedulefree_radam_hp, eps, 0),
    ETK_NONNEG(etk_schedulefree_radam_hp, weight_decay, 1),
    ETK_SF_COMMON_FIELDS(etk_schedulefree_radam_hp),
    ETK_FLAG(etk_schedulefree_radam_hp, silent_sgd_phase),
};
#undef ETK_SF_COMMON_FIELDS

static const etk_slot_info schedulefree_slots[] = {
    {"z", ETK_SLOT_FULL, ETK_INIT_PARAM, 0},
    {"exp_avg_sq", ETK_SLOT_FULL, ETK_INIT_ZERO, 0},
};
static const char *const schedulefree_group_state[] = {"k", "lr_max", "weight_sum", "scheduled_lr", "train_mode"};

static unsigned schedulefree_adam_needs(const void *hp) { (void)hp; return 3u; }
static unsigned schedulefree_sgd_needs(const void *hp) { (void)hp; return 1u; }

/* The weight of this step in the average, as the reference forms it. */
static void sf_average(double k, double lr, double r, double power, const double *gs, etk_sf_scalars *s)
{
    double weight;
    s->lr = lr;
    s->lr_max = gs[ETK_SF_LR_MAX] > lr ? gs[ETK_SF_LR_MAX] : lr; /* Python's max(lr, lr_max) */
    weight = pow(k + 1.0, r) * pow(s->lr_max, power);
    s->weight_sum = gs[ETK_SF_WEIGHT_SUM] + weight;
    s->ckp1 = s->weight_sum == 0.0 ? 0.0 : weight / s->weight_sum;
}

static double sf_warmup(double k, int warmup_steps)
{
    return k < (double)warmup_steps ? (k + 1.0) / (double)warmup_steps : 1.0;
}

static void sf_adamw_scalars(const void *hp, const double *gs, etk_sf_scalars *s)
{
    const etk_schedulefree_adamw_hp *h = (const etk_schedulefree_adamw_hp *)hp;
    const double k = gs[ETK_SF_K];
    s->bias_correction2 = 1.0 - pow(h->beta2, k + 1.0);
    s->mode = ETK_SF_ADAM;
    sf_average(k, h->lr * sf_warmup(k, h->warmup_steps), h->r, h->weight_lr_power, gs, s);
}

static void sf_sgd_scalars(const void *hp, const double *gs, etk_sf_scalars *s)
{
    const etk_schedulefree_sgd_hp *h = (const etk_schedulefree_sgd_hp *)hp;
    const double k = gs[ETK_SF_K];
    s->bias_correction2 = 1.0;
    s->mode = ETK_SF_PLAIN;
    sf_average(k, h->lr * sf_warmup(k, h->warmup_steps), h->r, h->weight_lr_power, gs, s);
}

static void sf_radam_scalars(const void *hp, const double *gs, etk_sf_scalars *s)
{
    const etk_schedulefree_radam_hp *h = (const etk_schedulefree_radam_hp *)hp;
    const double k = gs[ETK_SF_K], step = k + 1.0;
    const double beta2_t = pow(h->beta2, step);
    const double bias_correction2 = 1.0 - beta2_t;
    const double rho_inf = 2.0 / (1.0 - h->beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * step * beta2_t / bias_correction2;
    double rect;
    if (rho_t > 4.0) {
        rect = pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5);
        s->mode = ETK_SF_ADAM;
    } else {
        rect = h->silent_sgd_phase ? 0.0 : 1.0;
        s->mode = ETK_SF_RAW;
    }
    s->bias_correction2 = bias_correction2;
    sf_average(k, h->lr * rect, h->r, h->weight_lr_power, gs, s);
}

static void sf_prepare(unsigned phase, const etk_sf_scalars *s, double beta1, double beta2, double eps,
                       double weight_decay, const double *gs, etk_sf_coef *c)
{
    if (phase == 0) {
        c->w = s->ckp1;
        c->beta2 = beta2;
        c->one_minus_beta2 = 1.0 - beta2;
        c->bias_correction2 = s->bias_correction2;
        c->eps = eps;
        c->weight_decay = weight_decay;
        c->wd = weight_decay != 0.0;
        c->y_lr = s->lr * (beta1 * (1.0 - s->ckp1) - 1.0);
        c->neg_lr = -s->lr;
        c->mode = s->mode;
        c->skip = 0;
    } else {
        c->w = phase == ETK_SF_EVAL ? 1.0 - 1.0 / beta1 : 1.0 - beta1;
        c->skip = (gs[ETK_SF_TRAIN_MODE] != 0.0) != (phase == ETK_SF_EVAL);
    }
    c->one_minus_w = 1.0 - c->w;
    c->small = fabs(c->w) < 0.5;
}

/* After phase 0, once per group: the step's scalars become the group's.
 * After a side phase: the group's mode. */
static void sf_between(unsigned phase, const void *hp, double *gs,
                       void (*scalars)(const void *, const double *, etk_sf_scalars *))
{
    if (phase == 0) {
        etk_sf_scalars s;
        scalars(hp, gs, &s);
        gs[ETK_SF_K] += 1.0;
        gs[ETK_SF_LR_MAX] = s.lr_max;
        gs[ETK_SF_WEIGHT_SUM] = s.weight_sum;
        gs[ETK_SF_SCHEDULED_LR] = s.lr;
    } else {
        gs[ETK_SF_TRAIN_MODE] = phase == ETK_SF_TRAIN ? 1.0 : 0.0;
    }
}

static void schedulefree_adamw_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red,
                                       void *cf)
{
    const etk_schedulefree_adamw_hp *h = (const etk_schedulefree_adamw_hp *)hp;
    etk_sf_scalars s;
    (void)t;
    memset(&s, 0, sizeof s);
    if (phase == 0) sf_adamw_scalars(hp, red->gstate, &s);
    sf_prepare(phase, &s, h->beta1, h->beta2, h->eps, h->weight_decay, red->gstate, (etk_sf_coef *)cf);
}
static void schedulefree_sgd_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red,
                                     void *cf)
{
    const etk_schedulefree_sgd_hp *h = (const etk_schedulefree_sgd_hp *)hp;
    etk_sf_scalars s;
    (void)t;
    memset(&s, 0, sizeof s);
    if (phase == 0) sf_sgd_scalars(hp, red->gstate, &s);
    sf_prepare(phase, &s, h->momentum, 0.0, 0.0, h->weight_decay, red->gstate, (etk_sf_coef *)cf);
}
static void schedulefree_radam_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red,
                                       void *cf)
{
    const etk_schedulefree_radam_hp *h = (const etk_schedulefree_radam_hp *)hp;
    etk_sf_scalars s;
    (void)t;
    memset(&s, 0, sizeof s);
    if (phase == 0) sf_radam_scalars(hp, red->gstate, &s);
    sf_prepare(phase, &s, h->beta1, h->beta2, h->eps, h->weight_decay, red->gstate, (etk_sf_coef *)cf);
}

static void schedulefree_adamw_between(unsigned phase, const void *hp, const double *sums, double *gs)
{
    (void)sums;
    sf_between(phase, hp, gs, sf_adamw_scalars);
}
static void schedulefree_sgd_between(unsigned phase, const void *hp, const double *sums, double *gs)
{
    (void)sums;
    sf_between(phase, hp, gs, sf_sgd_scalars);
}
static void schedulefree_radam_between(unsigned phase, const void *hp, const double *sums, double *gs)
{
    (void)sums;
    sf_between(phase, hp, gs, sf_radam_scalars);
}
ETK_COEF_FITS(etk_sf_coef);

static const etk_rule_desc etk_rule_desc_schedulefree_adamw = {
    {"schedulefree_adamw", sizeof(etk_schedulefree_adamw_hp), schedulefree_adamw_fields,
     ETK_NFIELDS(schedulefree_adamw_fields), schedulefree_slots, 2, 0u, schedulefree_group_state, 5},
    1, {0}, NULL, schedulefree_adam_needs, schedulefree_adamw_prepare, schedulefree_adamw_between, NULL,
    0u, NULL, NULL, 2,
};
static const etk_rule_desc etk_rule_desc_schedulefree_sgd = {
    {"schedulefree_sgd", sizeof(etk_schedulefree_sgd_hp), schedulefree_sgd_fields,
     ETK_NFIELDS(schedulefree_sgd_fields), schedulefree_slots, 1, 0u, schedulefree_group_state, 5},
    1, {0}, NULL, schedulefree_sgd_needs, schedulefree_sgd_prepare, schedulefree_sgd_between, NULL,
    0u, NULL, NULL, 2,
};
static const etk_rule_desc etk_rule_desc_schedulefree_radam = {
    {"schedulefree_radam", sizeof(etk_schedulefree_radam_hp), schedulefree_radam_fields,
     ETK_NFIELDS(schedulefree_radam_fields), schedulefree_slots, 2, 0u, schedulefree_group_state, 5},
    1, {0}, NULL, schedulefree_adam_needs, schedulefree_radam_prepare, schedulefree_radam_between, NULL,
    0u, NULL, NULL, 2,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(sf_step_loop)(T *restrict y, const T *restrict g, S *restrict z,
                                                       S *restrict v, size_t n, const etk_sf_coef *c,
                                                       const int mode, const int wd, const int small)
{
    const T w = (T)c->w, omw = (T)c->one_minus_w, b2 = (T)c->beta2, omb2 = (T)c->one_minus_beta2;
    const T bc2 = (T)c->bias_correction2, eps = (T)c->eps, wdv = (T)c->weight_decay;
    const T ylr = (T)c->y_lr, nlr = (T)c->neg_lr;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T gi = g[i], yi = y[i], zi = LD(z[i]);
        if (mode != ETK_SF_PLAIN) {
            T vi = LD(v[i]) * b2 + (omb2 * gi) * gi;
            v[i] = ST(vi);
            if (mode == ETK_SF_ADAM) gi = gi / (ETK_SQRT(vi / bc2) + eps);
        }
        if (wd) gi = gi + wdv * yi;
        yi = small ? yi + w * (zi - yi) : zi - (zi - yi) * omw;
        y[i] = yi + ylr * gi;
        z[i] = ST(zi + nlr * gi);
    }
}

ETK_TGT static void FN(sf_step)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_sf_coef *c = (const etk_sf_coef *)cf;
    T *y = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *z = (S *)t->state[0] + lo;
    S *v = c->mode != ETK_SF_PLAIN ? (S *)t->state[1] + lo : (S *)0;
    size_t n = hi - lo;
    (void)red;
    switch (c->mode * 4 + c->wd * 2 + c->small) {
    case 0: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_PLAIN, 0, 0); break;
    case 1: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_PLAIN, 0, 1); break;
    case 2: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_PLAIN, 1, 0); break;
    case 3: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_PLAIN, 1, 1); break;
    case 4: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_ADAM, 0, 0); break;
    case 5: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_ADAM, 0, 1); break;
    case 6: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_ADAM, 1, 0); break;
    case 7: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_ADAM, 1, 1); break;
    case 8: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_RAW, 0, 0); break;
    case 9: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_RAW, 0, 1); break;
    case 10: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_RAW, 1, 0); break;
    default: FN(sf_step_loop)(y, g, z, v, n, c, ETK_SF_RAW, 1, 1); break;
    }
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(sf_switch_loop)(T *restrict p, const S *restrict z, size_t n,
                                                         const etk_sf_coef *c, const int small)
{
    const T w = (T)c->w, omw = (T)c->one_minus_w;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i], zi = LD(z[i]);
        p[i] = small ? pi + w * (zi - pi) : zi - (zi - pi) * omw;
    }
}

/* both side phases: the lerp toward z differs by its weight only */
ETK_TGT static void FN(sf_switch)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_sf_coef *c = (const etk_sf_coef *)cf;
    T *p = (T *)t->param + lo;
    const S *z = (const S *)t->state[0] + lo;
    size_t n = hi - lo;
    (void)red;
    if (c->skip) return;
    if (c->small) FN(sf_switch_loop)(p, z, n, c, 1);
    else FN(sf_switch_loop)(p, z, n, c, 0);
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_SCHEDULEFREE_ADAMW] = {{ETK_FNS(sf_step), ETK_FNS(sf_switch), ETK_FNS(sf_switch)}},
[ETK_RULE_SCHEDULEFREE_SGD] = {{ETK_FNS(sf_step), ETK_FNS(sf_switch), ETK_FNS(sf_switch)}},
[ETK_RULE_SCHEDULEFREE_RADAM] = {{ETK_FNS(sf_step), ETK_FNS(sf_switch), ETK_FNS(sf_switch)}},
#endif
