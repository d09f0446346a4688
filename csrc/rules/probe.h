/*
 * rules/probe.h -- the memory-bandwidth probe (etk_probe_multi): the access
 * pattern of a step (read grad, read and write param and every non-NULL
 * element-wise state buffer) with trivial arithmetic, x += grad.  Not a
 * rule users call by id; it runs through the same engine, threads and SIMD
 * variant as the rules, so its bandwidth is the roof of theirs.
 */
#if defined(ETK_RULE_HOST)

static const etk_rule_desc etk_rule_desc_probe = {
    {"probe", 0, NULL, 0, NULL, 0, 0u, NULL, 0}, 1, {0}, NULL, NULL, NULL, NULL, NULL,
};

#elif defined(ETK_RULE_LOOPS)

ETK_TGT static ETK_ALWAYS_INLINE void FN(probe_loop)(T *restrict p, const T *restrict g, S *restrict s0,
                                                     S *restrict s1, S *restrict s2, S *restrict s3, size_t n,
                                                     const int k)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T gi = g[i];
        p[i] = p[i] + gi;
        if (k > 0) s0[i] = ST(LD(s0[i]) + gi);
        if (k > 1) s1[i] = ST(LD(s1[i]) + gi);
        if (k > 2) s2[i] = ST(LD(s2[i]) + gi);
        if (k > 3) s3[i] = ST(LD(s3[i]) + gi);
    }
}

ETK_TGT static void FN(probe_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    S *s[4] = {0, 0, 0, 0};
    int k = 0, j;
    T *p = (T *)t->param + lo;
    const T *g = (const T *)t->grad + lo;
    size_t n = hi - lo;
    (void)cf, (void)red;
    for (j = 0; j < ETK_MAX_SLOTS && k < 4; j++)
        if (t->state[j]) s[k++] = (S *)t->state[j] + lo;
    switch (k) {
    case 0: FN(probe_loop)(p, g, s[0], s[1], s[2], s[3], n, 0); break;
    case 1: FN(probe_loop)(p, g, s[0], s[1], s[2], s[3], n, 1); break;
    case 2: FN(probe_loop)(p, g, s[0], s[1], s[2], s[3], n, 2); break;
    case 3: FN(probe_loop)(p, g, s[0], s[1], s[2], s[3], n, 3); break;
    default: FN(probe_loop)(p, g, s[0], s[1], s[2], s[3], n, 4); break;
    }
}

#elif defined(ETK_RULE_ROW)
[ETK_RULE_PROBE] = {{ETK_FNS(probe_p0)}},
#endif
