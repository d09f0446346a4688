/*
 * kernels_body.h -- the element loops, written once and instantiated by
 * kernels.c for every (SIMD variant, param type, state type).
 *
 * Expects: T (param/grad/compute type), S (state type), LD(x)/ST(x) (state
 * load/store conversions), ETK_SQRT, FN(name) (suffixes the name with the
 * variant and types) and ETK_TGT (the variant's target attribute).
 *
 * Each rule has one loop with its options as constant int arguments; the
 * chunk function calls it with literal constants, so every option
 * combination becomes its own branch-free vector loop after inlining.
 * Operation order follows PyTorch's single-tensor code and etakit.reference
 * exactly, one correctly rounded operation at a time (no contraction).
 */

/* ------------------------------------------------------------------ SGD */
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
ETK_TGT static void FN(sgd)(const etk_tensor *t, size_t lo, size_t hi, const etk_coef *cf)
{
    const etk_sgd_coef *c = &cf->sgd;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *buf = c->use_momentum ? (S *)t->state[0] + lo : (S *)0;
    size_t n = hi - lo;
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

/* ----------------------------------------------------------------- Adam */
ETK_TGT static ETK_ALWAYS_INLINE void FN(adam_loop)(T *restrict p, const T *restrict g, S *restrict m,
                                                    S *restrict v, S *restrict vmax, size_t n,
                                                    const etk_adam_coef *c, const int wd, const int ams)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, decay = (T)c->decay;
    const T omb1 = (T)c->one_minus_beta1, b2 = (T)c->beta2, omb2 = (T)c->one_minus_beta2;
    const T bc2s = (T)c->bias_correction2_sqrt, eps = (T)c->eps, nss = (T)c->neg_step_size;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T mi = LD(m[i]), vi = LD(v[i]), den;
        if (wd == ETK_WD_L2) gi = gi + wdv * pi;
        if (wd == ETK_WD_DECOUPLED) pi = pi * decay;
        mi = mi + omb1 * (gi - mi);
        vi = vi * b2 + (omb2 * gi) * gi;
        m[i] = ST(mi);
        v[i] = ST(vi);
        if (ams) {
            T vm = LD(vmax[i]);
            vm = vm > vi ? vm : vi;
            vmax[i] = ST(vm);
            vi = vm;
        }
        den = ETK_SQRT(vi) / bc2s + eps;
        p[i] = pi + (nss * mi) / den;
    }
}

ETK_TGT static void FN(adam)(const etk_tensor *t, size_t lo, size_t hi, const etk_coef *cf)
{
    const etk_adam_coef *c = &cf->adam;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *m = (S *)t->state[0] + lo, *v = (S *)t->state[1] + lo;
    S *vmax = c->amsgrad ? (S *)t->state[2] + lo : (S *)0;
    size_t n = hi - lo;
    switch (c->wd * 2 + c->amsgrad) {
    case 0: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_NONE, 0); break;
    case 1: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_NONE, 1); break;
    case 2: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_L2, 0); break;
    case 3: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_L2, 1); break;
    case 4: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_DECOUPLED, 0); break;
    default: FN(adam_loop)(p, g, m, v, vmax, n, c, ETK_WD_DECOUPLED, 1); break;
    }
}

/* -------------------------------------------------------------- RMSprop */
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
ETK_TGT static void FN(rmsprop)(const etk_tensor *t, size_t lo, size_t hi, const etk_coef *cf)
{
    const etk_rmsprop_coef *c = &cf->rmsprop;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *sq = (S *)t->state[0] + lo;
    S *buf = c->use_momentum ? (S *)t->state[1] + lo : (S *)0;
    S *ga = c->centered ? (S *)t->state[2] + lo : (S *)0;
    size_t n = hi - lo;
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

/* -------------------------------------------------------------- Adagrad */
ETK_TGT static ETK_ALWAYS_INLINE void FN(adagrad_loop)(T *restrict p, const T *restrict g, S *restrict sum,
                                                       size_t n, const etk_adagrad_coef *c, const int wd)
{
    const T gsign = (T)c->gsign, wdv = (T)c->weight_decay, nclr = (T)c->neg_clr, eps = (T)c->eps;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i];
        T gi = g[i] * gsign;
        T si;
        if (wd) gi = gi + wdv * pi;
        si = LD(sum[i]) + gi * gi;
        sum[i] = ST(si);
        p[i] = pi + (nclr * gi) / (ETK_SQRT(si) + eps);
    }
}

ETK_TGT static void FN(adagrad)(const etk_tensor *t, size_t lo, size_t hi, const etk_coef *cf)
{
    const etk_adagrad_coef *c = &cf->adagrad;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    S *sum = (S *)t->state[0] + lo;
    size_t n = hi - lo;
    if (c->wd) FN(adagrad_loop)(p, g, sum, n, c, 1);
    else FN(adagrad_loop)(p, g, sum, n, c, 0);
}

/* ---------------------------------------------------------------- probe */
/* The access pattern of a step with trivial arithmetic: the bandwidth roof. */
ETK_TGT static ETK_ALWAYS_INLINE void FN(probe_loop)(T *restrict p, const T *restrict g, S *restrict s0,
                                                     S *restrict s1, S *restrict s2, size_t n, const int k)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T gi = g[i];
        p[i] = p[i] + gi;
        if (k > 0) s0[i] = ST(LD(s0[i]) + gi);
        if (k > 1) s1[i] = ST(LD(s1[i]) + gi);
        if (k > 2) s2[i] = ST(LD(s2[i]) + gi);
    }
}

ETK_TGT static void FN(probe)(const etk_tensor *t, size_t lo, size_t hi, const etk_coef *cf)
{
    S *s[3] = {0, 0, 0};
    int k = 0, j;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    size_t n = hi - lo;
    (void)cf;
    for (j = 0; j < 3; j++)
        if (t->state[j]) s[k++] = (S *)t->state[j] + lo;
    switch (k) {
    case 0: FN(probe_loop)(p, g, s[0], s[1], s[2], n, 0); break;
    case 1: FN(probe_loop)(p, g, s[0], s[1], s[2], n, 1); break;
    case 2: FN(probe_loop)(p, g, s[0], s[1], s[2], n, 2); break;
    default: FN(probe_loop)(p, g, s[0], s[1], s[2], n, 3); break;
    }
}
