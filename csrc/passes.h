/*
 * passes.h -- the element loops of the training loop's other passes, fused
 * with a step (etk_step_opts): the partial norm of one block of a gradient,
 * the scaled copy of a block that the rule's loop reads instead of the
 * gradient, and the EMA of the parameters.  Included by kernels_variant.h
 * once per SIMD variant and dtype (ETK_PASS_LOOPS, with T and ETK_TYPES),
 * and once for the variant's table row (ETK_PASS_ROW).
 *
 * Every loop is bit-identical across variants: the norm sums over
 * ETK_LANES fixed lanes (as a reducing phase does), a maximum does not depend
 * on the order, and the others are element-wise and correctly rounded.
 */
#if defined(ETK_PASS_LOOPS)

/* out[0]: the sum of squares over the block (inf = 0) or its largest
 * magnitude, NaN aside (inf = 1); out[1]: how many elements are inf or NaN;
 * out[2] (inf = 1 only): how many are NaN. */
ETK_TGT static void FN(pass_norm)(const void *gv, size_t n, int inf, double *out)
{
    const T *restrict g = (const T *)gv;
    double acc[ETK_LANES] = {0.0}, bad[ETK_LANES] = {0.0}, nan[ETK_LANES] = {0.0};
    size_t i = 0;
    int j;
    if (!inf) {
        for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
            for (j = 0; j < ETK_LANES; j++) {
                const double x = (double)g[i + (size_t)j];
                acc[j] += x * x;
                bad[j] += x - x != 0.0 ? 1.0 : 0.0;
            }
        }
        for (j = 0; i < n; i++, j++) {
            const double x = (double)g[i];
            acc[j] += x * x;
            bad[j] += x - x != 0.0 ? 1.0 : 0.0;
        }
        out[0] = etk_lane_sum(acc);
        out[1] = etk_lane_sum(bad);
        out[2] = 0.0;
        return;
    }
    for (; i + ETK_LANES <= n; i += ETK_LANES) {
#pragma omp simd
        for (j = 0; j < ETK_LANES; j++) {
            const double x = (double)g[i + (size_t)j], a = x < 0.0 ? -x : x;
            acc[j] = a > acc[j] ? a : acc[j];
            bad[j] += x - x != 0.0 ? 1.0 : 0.0;
            nan[j] += x != x ? 1.0 : 0.0;
        }
    }
    for (j = 0; i < n; i++, j++) {
        const double x = (double)g[i], a = x < 0.0 ? -x : x;
        acc[j] = a > acc[j] ? a : acc[j];
        bad[j] += x - x != 0.0 ? 1.0 : 0.0;
        nan[j] += x != x ? 1.0 : 0.0;
    }
    {
        double m = 0.0;
        for (j = 0; j < ETK_LANES; j++) m = acc[j] > m ? acc[j] : m;
        out[0] = m;
        out[1] = etk_lane_sum(bad);
        out[2] = etk_lane_sum(nan);
    }
}

/* pass_norm (inf = 0) of the four full blocks g[0 .. 4 ETK_BLOCK), into
 * out[3 k .. 3 k + 2] for block k: the same sums, formed in the same lanes
 * and order, with four read streams at once (a single stream does not keep
 * enough loads in flight to reach the memory bandwidth). */
ETK_TGT static void FN(pass_norm4)(const void *gv, double *out)
{
    const T *restrict g = (const T *)gv;
    double a0[ETK_LANES] = {0.0}, a1[ETK_LANES] = {0.0}, a2[ETK_LANES] = {0.0}, a3[ETK_LANES] = {0.0};
    double b0[ETK_LANES] = {0.0}, b1[ETK_LANES] = {0.0}, b2[ETK_LANES] = {0.0}, b3[ETK_LANES] = {0.0};
    size_t i;
    int j;
    for (i = 0; i < ETK_BLOCK; i += ETK_LANES) {
#pragma omp simd
        for (j = 0; j < ETK_LANES; j++) {
            const double x0 = (double)g[i + (size_t)j], x1 = (double)g[ETK_BLOCK + i + (size_t)j];
            const double x2 = (double)g[2 * ETK_BLOCK + i + (size_t)j], x3 = (double)g[3 * ETK_BLOCK + i + (size_t)j];
            a0[j] += x0 * x0;
            a1[j] += x1 * x1;
            a2[j] += x2 * x2;
            a3[j] += x3 * x3;
            b0[j] += x0 - x0 != 0.0 ? 1.0 : 0.0;
            b1[j] += x1 - x1 != 0.0 ? 1.0 : 0.0;
            b2[j] += x2 - x2 != 0.0 ? 1.0 : 0.0;
            b3[j] += x3 - x3 != 0.0 ? 1.0 : 0.0;
        }
    }
    out[0] = etk_lane_sum(a0), out[1] = etk_lane_sum(b0), out[2] = 0.0;
    out[3] = etk_lane_sum(a1), out[4] = etk_lane_sum(b1), out[5] = 0.0;
    out[6] = etk_lane_sum(a2), out[7] = etk_lane_sum(b2), out[8] = 0.0;
    out[9] = etk_lane_sum(a3), out[10] = etk_lane_sum(b3), out[11] = 0.0;
}

/* The largest magnitude in g[0 .. n) (NaN aside). */
ETK_TGT static double FN(pass_absmax)(const void *gv, size_t n)
{
    const T *restrict g = (const T *)gv;
    double m = 0.0;
    size_t i;
    for (i = 0; i < n; i++) {
        const double a = fabs((double)g[i]);
        m = a > m ? a : m;
    }
    return m;
}

/* out = g * m, in T */
ETK_TGT static void FN(pass_scale)(const void *gv, void *outv, size_t n, double mul)
{
    const T *restrict g = (const T *)gv;
    T *restrict out = (T *)outv;
    const T m = (T)mul;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) out[i] = g[i] * m;
}

/* e = torch.lerp(e, p, w): e + w (p - e) for w < 0.5, else p - (p - e) (1 - w), in T */
ETK_TGT static void FN(pass_ema)(void *ev, const void *pv, size_t n, double w)
{
    T *restrict e = (T *)ev;
    const T *restrict p = (const T *)pv;
    size_t i;
    if (w < 0.5) {
        const T wt = (T)w;
#pragma omp simd
        for (i = 0; i < n; i++) e[i] = e[i] + wt * (p[i] - e[i]);
    } else {
        const T omw = (T)(1.0 - w);
#pragma omp simd
        for (i = 0; i < n; i++) e[i] = p[i] - (p[i] - e[i]) * omw;
    }
}

/* acc = w g (first) or acc + w g, in T (w = 1: a copy or a plain sum) */
ETK_TGT static void FN(pass_axpy)(void *accv, const void *gv, size_t n, double w, int first)
{
    T *restrict acc = (T *)accv;
    const T *restrict g = (const T *)gv;
    const T wt = (T)w;
    size_t i;
    if (first && w == 1.0) {
#pragma omp simd
        for (i = 0; i < n; i++) acc[i] = g[i];
    } else if (first) {
#pragma omp simd
        for (i = 0; i < n; i++) acc[i] = g[i] * wt;
    } else if (w == 1.0) {
#pragma omp simd
        for (i = 0; i < n; i++) acc[i] = acc[i] + g[i];
    } else {
#pragma omp simd
        for (i = 0; i < n; i++) acc[i] = acc[i] + g[i] * wt;
    }
}

#elif defined(ETK_PASS_ROW)
{{ETK_CAT(pass_norm, ETK_LOOPS_OF, f32), ETK_CAT(pass_scale, ETK_LOOPS_OF, f32), ETK_CAT(pass_ema, ETK_LOOPS_OF, f32),
  ETK_CAT(pass_absmax, ETK_LOOPS_OF, f32), ETK_CAT(pass_axpy, ETK_LOOPS_OF, f32), ETK_CAT(pass_norm4, ETK_LOOPS_OF, f32)},
 {ETK_CAT(pass_norm, ETK_LOOPS_OF, f64), ETK_CAT(pass_scale, ETK_LOOPS_OF, f64), ETK_CAT(pass_ema, ETK_LOOPS_OF, f64),
  ETK_CAT(pass_absmax, ETK_LOOPS_OF, f64), ETK_CAT(pass_axpy, ETK_LOOPS_OF, f64), ETK_CAT(pass_norm4, ETK_LOOPS_OF, f64)}},
#endif
