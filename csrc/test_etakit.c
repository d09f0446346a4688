/*
 * test_etakit.c -- tests of the C API on its own (no Python): each rule
 * against a plain scalar transcription of PyTorch's update, bit-identical
 * results across thread counts and SIMD variants, and argument validation
 * that rejects bad calls before writing anything.  Built with -Werror and
 * run under AddressSanitizer and UndefinedBehaviorSanitizer by the Makefile.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "etakit.h"

static int failures;
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            failures++;                                                         \
            fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

static unsigned long long rng = 88172645463325252ULL;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

/* Scalar double-precision reference for one element of Adam (PyTorch). */
static void ref_adam(double *p, double g, double *m, double *v, double *vmax, const etk_adam_hp *h, int64_t k)
{
    double bc1 = 1.0 - pow(h->beta1, (double)k), bc2 = 1.0 - pow(h->beta2, (double)k), den, vv;
    if (h->maximize) g = -g;
    if (h->weight_decay != 0.0) {
        if (h->decoupled_weight_decay) *p *= 1.0 - h->lr * h->weight_decay;
        else g += h->weight_decay * *p;
    }
    *m = *m + (1.0 - h->beta1) * (g - *m);
    *v = *v * h->beta2 + ((1.0 - h->beta2) * g) * g;
    vv = *v;
    if (h->amsgrad) {
        *vmax = *vmax > *v ? *vmax : *v;
        vv = *vmax;
    }
    den = sqrt(vv) / sqrt(bc2) + h->eps;
    *p = *p + (-(h->lr / bc1) * *m) / den;
}

static void test_adam_f64_matches_reference(void)
{
    enum { N = 1001, STEPS = 50 };
    static double p[N], g[N], m[N], v[N], vm[N], rp[N], rm[N], rv[N], rvm[N];
    int amsgrad, mode, i;
    int64_t k;
    for (amsgrad = 0; amsgrad < 2; amsgrad++)
        for (mode = 0; mode < 3; mode++) {
            etk_adam_hp h = {1e-2, 0.9, 0.999, 1e-8, mode ? 0.1 : 0.0, amsgrad, mode == 2, mode == 1};
            for (i = 0; i < N; i++) {
                rp[i] = p[i] = urand();
                rm[i] = m[i] = rv[i] = v[i] = rvm[i] = vm[i] = 0.0;
            }
            for (k = 1; k <= STEPS; k++) {
                for (i = 0; i < N; i++) g[i] = urand() + 0.1 * p[i];
                void *st[3];
                st[0] = m, st[1] = v, st[2] = amsgrad ? vm : NULL;
                CHECK(etk_adam_f64(p, g, st, N, &h, k) == ETK_OK, "adam f64 step");
                for (i = 0; i < N; i++) ref_adam(&rp[i], g[i], &rm[i], &rv[i], &rvm[i], &h, k);
            }
            for (i = 0; i < N; i++) {
                if (p[i] != rp[i] || m[i] != rm[i] || v[i] != rv[i]) {
                    CHECK(0, "adam f64 amsgrad=%d mode=%d differs at %d: %.17g vs %.17g", amsgrad, mode, i,
                          p[i], rp[i]);
                    break;
                }
            }
        }
}

/* Scalar double transcriptions of NAdam, RAdam and Adamax (torch.optim), in
 * the kernels' order of operations: the f64 kernels must equal them bit for
 * bit.  mu_product (NAdam's scalar slot) advances once per step. */
static double nadam_mu_ref(const etk_nadam_hp *h, double k)
{
    return h->beta1 * (1.0 - 0.5 * pow(0.96, k * h->momentum_decay));
}

static void ref_nadam(double *p, double g, double *m, double *v, double mu_product, const etk_nadam_hp *h,
                      int64_t k)
{
    double t = (double)k, mu = nadam_mu_ref(h, t), mu_next = nadam_mu_ref(h, t + 1.0), den;
    double mp = mu_product * mu, mpn = mp * mu_next;
    if (h->maximize) g = -g;
    if (h->weight_decay != 0.0) {
        if (h->decoupled_weight_decay) *p *= 1.0 - h->lr * h->weight_decay;
        else g += h->weight_decay * *p;
    }
    *m = *m + (1.0 - h->beta1) * (g - *m);
    *v = *v * h->beta2 + ((1.0 - h->beta2) * g) * g;
    den = sqrt(*v / (1.0 - pow(h->beta2, t))) + h->eps;
    *p = *p + (-h->lr * (1.0 - mu) / (1.0 - mp) * g) / den;
    *p = *p + (-h->lr * mu_next / (1.0 - mpn) * *m) / den;
}

static void ref_radam(double *p, double g, double *m, double *v, const etk_radam_hp *h, int64_t k)
{
    double t = (double)k, bc2 = 1.0 - pow(h->beta2, t), rho_inf = 2.0 / (1.0 - h->beta2) - 1.0;
    double rho_t = rho_inf - 2.0 * t * pow(h->beta2, t) / bc2, u;
    if (h->maximize) g = -g;
    if (h->weight_decay != 0.0) {
        if (h->decoupled_weight_decay) *p *= 1.0 - h->lr * h->weight_decay;
        else g += h->weight_decay * *p;
    }
    *m = *m + (1.0 - h->beta1) * (g - *m);
    *v = *v * h->beta2 + ((1.0 - h->beta2) * g) * g;
    u = *m / (1.0 - pow(h->beta1, t)) * h->lr;
    if (rho_t > 5.0) {
        u = u * (pow(bc2, 0.5) / (sqrt(*v) + h->eps));
        u = u * pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5);
    }
    *p = *p - u;
}

static void ref_adamax(double *p, double g, double *m, double *u, const etk_adamax_hp *h, int64_t k)
{
    double b;
    if (h->maximize) g = -g;
    if (h->weight_decay != 0.0) g += h->weight_decay * *p;
    *m = *m + (1.0 - h->beta1) * (g - *m);
    *u = *u * h->beta2;
    b = fabs(g) + h->eps;
    *u = *u > b ? *u : b;
    *p = *p + (-(h->lr / (1.0 - pow(h->beta1, (double)k))) * *m) / *u;
}

static void test_nadam_radam_adamax_f64_match_reference(void)
{
    enum { N = 1001, STEPS = 50 };
    static double p[N], g[N], m[N], v[N], rp[N], rm[N], rv[N];
    int mode, i, bad;
    int64_t k;
    for (mode = 0; mode < 9; mode++) {
        const int rule = mode / 3, wd = mode % 3; /* wd: none, L2, decoupled (Adamax: L2 twice) */
        etk_nadam_hp nh = {1e-2, 0.9, 0.999, 1e-8, wd ? 0.1 : 0.0, 4e-3, wd == 2, wd == 1};
        etk_radam_hp rh = {1e-2, 0.8, wd == 1 ? 0.9 : 0.999, 1e-8, wd ? 0.1 : 0.0, wd == 2, wd == 1};
        etk_adamax_hp xh = {1e-2, 0.9, 0.999, 1e-8, wd ? 0.1 : 0.0, wd == 1};
        double mu_product = 1.0, rmu = 1.0;
        void *st[3];
        for (i = 0; i < N; i++) {
            rp[i] = p[i] = urand();
            rm[i] = m[i] = rv[i] = v[i] = 0.0;
        }
        st[0] = m, st[1] = v, st[2] = &mu_product;
        for (k = 1; k <= STEPS; k++) {
            for (i = 0; i < N; i++) g[i] = urand() + 0.1 * p[i];
            if (rule == 0) {
                CHECK(etk_nadam_f64(p, g, st, N, &nh, k) == ETK_OK, "nadam f64 step");
                for (i = 0; i < N; i++) ref_nadam(&rp[i], g[i], &rm[i], &rv[i], rmu, &nh, k);
                rmu *= nadam_mu_ref(&nh, (double)k);
                CHECK(mu_product == rmu, "nadam mu_product %.17g vs %.17g at step %d", mu_product, rmu, (int)k);
            } else if (rule == 1) {
                CHECK(etk_radam_f64(p, g, st, N, &rh, k) == ETK_OK, "radam f64 step");
                for (i = 0; i < N; i++) ref_radam(&rp[i], g[i], &rm[i], &rv[i], &rh, k);
            } else {
                CHECK(etk_adamax_f64(p, g, st, N, &xh, k) == ETK_OK, "adamax f64 step");
                for (i = 0; i < N; i++) ref_adamax(&rp[i], g[i], &rm[i], &rv[i], &xh, k);
            }
        }
        for (i = 0, bad = 0; i < N && !bad; i++) {
            if (p[i] != rp[i] || m[i] != rm[i] || v[i] != rv[i]) {
                CHECK(0, "rule %d wd %d differs at %d: %.17g vs %.17g", rule, wd, i, p[i], rp[i]);
                bad = 1;
            }
        }
    }
    {
        /* NAdam's mu_product: needed even for an empty tensor, advanced once per step
         * whatever the thread count, and untouched by a refused step */
        etk_nadam_hp h = {1e-3, 0.9, 0.999, 1e-8, 0.0, 4e-3, 0, 0}, badh;
        double mp = 1.0, q[1] = {1.0}, gq[1] = {1.0}, mq[1] = {0.0}, vq[1] = {0.0};
        void *st[3];
        st[0] = NULL, st[1] = NULL, st[2] = NULL;
        CHECK(etk_nadam_f64(NULL, NULL, st, 0, &h, 1) == ETK_ESTATE, "an empty tensor still needs mu_product");
        st[2] = &mp;
        CHECK(etk_nadam_f64(NULL, NULL, st, 0, &h, 1) == ETK_OK && mp == nadam_mu_ref(&h, 1.0),
              "an empty tensor advances mu_product");
        st[0] = mq, st[1] = vq;
        badh = h, badh.momentum_decay = -1.0;
        CHECK(etk_nadam_f64(q, gq, st, 1, &badh, 2) == ETK_EHPARAM && mp == nadam_mu_ref(&h, 1.0) && q[0] == 1.0,
              "a refused step leaves mu_product alone");
    }
}

static void test_sgd_f32_momentum_first_step(void)
{
    float p[5] = {1, 2, 3, 4, 5}, g[5] = {1, 1, 1, 1, 1}, buf[5] = {9, 9, 9, 9, 9};
    etk_sgd_hp h = {0.5, 0.9, 0.5, 0.0, 0, 0};
    void *st[1];
    int i;
    st[0] = buf;
    CHECK(etk_sgd_f32(p, g, st, 5, &h, 1) == ETK_OK, "sgd first step");
    for (i = 0; i < 5; i++) {
        CHECK(buf[i] == 1.0f, "first step copies grad into buffer, got %g", (double)buf[i]);
        CHECK(p[i] == (float)(i + 1) - 0.5f, "p[%d] = %g", i, (double)p[i]);
    }
    CHECK(etk_sgd_f32(p, g, st, 5, &h, 2) == ETK_OK, "sgd second step");
    /* buf = 0.9 * 1 + 0.5 * 1 = 1.4; p -= 0.5 * 1.4 */
    CHECK(fabsf(buf[0] - 1.4f) < 1e-6f, "buf %g", (double)buf[0]);
    CHECK(fabsf(p[0] - (0.5f - 0.7f)) < 1e-6f, "p %g", (double)p[0]);
}

/* Rprop's element-wise cases: same sign (grow, clamped at the top), flipped
 * sign (shrink, no move, prev = 0), a zero product (unchanged step size) and
 * a NaN gradient (PyTorch's sign(NaN) = 0: no move). */
static void test_rprop_f32_sign_cases(void)
{
    float p[4] = {0, 0, 0, 0}, g[4] = {2, 2, 2, NAN}, prev[4] = {1, -1, 0, 1};
    float ss[4] = {0.1f, 0.1f, 0.1f, 0.1f};
    etk_rprop_hp h = {0.1, 0.5, 1.2, 0.01, 0.11, 0};
    void *st[2];
    st[0] = prev, st[1] = ss;
    CHECK(etk_rprop_f32(p, g, st, 4, &h, 2) == ETK_OK, "rprop step");
    CHECK(ss[0] == 0.11f && p[0] == -0.11f && prev[0] == 2.0f, "grow and clamp: %g %g", (double)ss[0], (double)p[0]);
    CHECK(ss[1] == 0.05f && p[1] == 0.0f && prev[1] == 0.0f, "flip: %g %g %g", (double)ss[1], (double)p[1],
          (double)prev[1]);
    CHECK(ss[2] == 0.1f && p[2] == -0.1f && prev[2] == 2.0f, "zero product: %g %g", (double)ss[2], (double)p[2]);
    CHECK(ss[3] == 0.1f && p[3] == 0.0f && prev[3] != prev[3], "NaN gradient: %g %g", (double)ss[3], (double)p[3]);
    h.etaminus = 1.0;
    CHECK(etk_rprop_f32(p, g, st, 4, &h, 3) == ETK_EHPARAM, "etaminus must be < 1");
}

/* A mixed list of tensors, one call; compare thread counts and variants. */
enum { NT = 7 };
static const size_t sizes[NT] = {0, 1, 17, 1000, 40000, 70001, 3};

static void fill_tensors(etk_tensor *ts, float **bufs, size_t *total)
{
    size_t i, j;
    *total = 0;
    for (i = 0; i < NT; i++) {
        float *b = bufs[i];
        memset(&ts[i], 0, sizeof ts[i]);
        for (j = 0; j < 5 * sizes[i]; j++) b[j] = (float)urand();
        for (j = 3 * sizes[i]; j < 5 * sizes[i]; j++) b[j] = b[j] * b[j]; /* second moments >= 0 */
        ts[i].param = b;
        ts[i].grad = b + sizes[i];
        ts[i].state[0] = b + 2 * sizes[i];
        ts[i].state[1] = b + 3 * sizes[i];
        ts[i].state[2] = b + 4 * sizes[i];
        ts[i].n = sizes[i];
        ts[i].step = 3;
        ts[i].group = (uint32_t)(i % 2);
        ts[i].dtype = ETK_FLOAT32;
        ts[i].state_dtype = ETK_FLOAT32;
        *total += 5 * sizes[i];
    }
}

/* ASGD on the same tensors: ax is state[2]; eta and mu are double scalars
 * (slots 0 and 1), advanced once per tensor and step.  Three steps with an
 * averaging start t0 = 1, so both branches of ax's update run. */
static void run_asgd(etk_tensor *ts)
{
    etk_asgd_hp hh[2] = {{1e-2, 1e-4, 0.75, 1.0, 0.0, 0}, {1e-3, 0.1, 0.5, 1.0, 0.01, 1}};
    double eta[NT], mu[NT];
    void *saved[NT][2];
    size_t i;
    int k;
    for (i = 0; i < NT; i++) {
        eta[i] = hh[ts[i].group].lr, mu[i] = 1.0;
        saved[i][0] = ts[i].state[0], saved[i][1] = ts[i].state[1];
        ts[i].state[0] = &eta[i], ts[i].state[1] = &mu[i];
    }
    for (k = 0; k < 3; k++) {
        CHECK(etk_asgd_multi(ts, NT, hh, 2) == ETK_OK, "asgd multi");
        for (i = 0; i < NT; i++) ts[i].step++;
    }
    for (i = 0; i < NT; i++) {
        const etk_asgd_hp *h = &hh[ts[i].group];
        double t = (double)(ts[i].step - 1);
        CHECK(eta[i] == h->lr / pow(1.0 + h->lambd * h->lr * t, h->alpha), "asgd eta of tensor %zu", i);
        CHECK(mu[i] == 1.0 / (t - 1.0), "asgd mu of tensor %zu: %g", i, mu[i]);
        ts[i].state[0] = saved[i][0], ts[i].state[1] = saved[i][1];
        ts[i].step -= 3;
    }
}

static void run_all_rules(etk_tensor *ts)
{
    etk_adam_hp ah[2] = {{1e-3, 0.9, 0.999, 1e-8, 0.01, 1, 0, 1}, {1e-2, 0.8, 0.99, 1e-6, 0.1, 0, 1, 0}};
    etk_sgd_hp sh[2] = {{0.1, 0.9, 0.0, 1e-4, 1, 0}, {0.01, 0.5, 0.1, 0.0, 0, 1}};
    etk_rmsprop_hp rh[2] = {{1e-2, 0.99, 1e-8, 0.0, 0.9, 1, 0}, {1e-3, 0.9, 1e-6, 0.01, 0.0, 0, 1}};
    etk_adagrad_hp gh[2] = {{1e-2, 0.01, 0.0, 1e-10, 0.0, 0}, {0.1, 0.0, 0.1, 1e-10, 0.0, 1}};
    etk_lion_hp lh[2] = {{1e-4, 0.9, 0.99, 0.1, 1, 0, 0}, {1e-3, 0.5, 0.9, 0.01, 0, 0, 1}};
    /* lr, beta1, beta2, weight_decay, max_grad_norm, eps; weight_decouple, fixed_decay, rectify,
     * degenerated_to_sgd, n_sma_threshold, grad_averaging; adam, pre_norm, maximize, adam_debias */
    etk_lamb_hp mh[2] = {{1e-2, 0.9, 0.999, 0.01, 1.0, 1e-6, 1, 0, 0, 0, 5, 1, 0, 1, 0, 0},
                         {1e-3, 0.8, 0.9, 0.1, 0.5, 1e-8, 0, 0, 1, 1, 5, 0, 0, 1, 1, 1}};
    etk_lars_hp rl[2] = {{1e-2, 1e-2, 0.9, 0.0, 1e-3, 1, 0}, {1e-3, 0.0, 0.5, 0.1, 0.02, 0, 1}};
    /* the reducing rules first, while exp_avg_sq (state[1]) still holds the non-negative fill;
     * LARS with two tensors of two dimensions, one of them several blocks long */
    CHECK(etk_lamb_multi(ts, NT, mh, 2) == ETK_OK, "lamb multi");
    ts[3].rows = 10, ts[3].cols = 100;
    ts[4].rows = 200, ts[4].cols = 200;
    CHECK(etk_lars_multi(ts, NT, rl, 2) == ETK_OK, "lars multi");
    ts[3].rows = ts[3].cols = ts[4].rows = ts[4].cols = 0;
    etk_adadelta_hp dh[2] = {{1.0, 0.9, 1e-6, 0.0, 0}, {0.5, 0.5, 1e-4, 0.01, 1}};
    etk_rprop_hp ph[2] = {{1e-2, 0.5, 1.2, 1e-6, 50.0, 0}, {1e-3, 0.3, 2.0, 1e-4, 0.5, 1}};
    CHECK(etk_adam_multi(ts, NT, ah, 2) == ETK_OK, "adam multi");
    CHECK(etk_sgd_multi(ts, NT, sh, 2) == ETK_OK, "sgd multi");
    CHECK(etk_rmsprop_multi(ts, NT, rh, 2) == ETK_OK, "rmsprop multi");
    CHECK(etk_adagrad_multi(ts, NT, gh, 2) == ETK_OK, "adagrad multi");
    CHECK(etk_lion_multi(ts, NT, lh, 2) == ETK_OK, "lion multi");
    {
        /* RAdam rectified (step 7, beta2 0.999) and not (beta2 0.5); NAdam's scalar
         * slot lives apart from the float buffers */
        etk_radam_hp ra[2] = {{1e-3, 0.9, 0.999, 1e-8, 0.01, 1, 0}, {1e-2, 0.8, 0.5, 1e-6, 0.1, 0, 1}};
        etk_adamax_hp xa[2] = {{2e-3, 0.9, 0.999, 1e-8, 0.01, 0}, {1e-2, 0.5, 0.9, 1e-6, 0.0, 1}};
        etk_nadam_hp na[2] = {{2e-3, 0.9, 0.999, 1e-8, 0.01, 4e-3, 1, 0}, {1e-2, 0.5, 0.9, 1e-6, 0.1, 1e-2, 0, 1}};
        etk_tensor nt[NT];
        double mu[NT];
        size_t i;
        for (i = 0; i < NT; i++) {
            nt[i] = ts[i];
            nt[i].step = 7;
            nt[i].state[2] = &mu[i];
            mu[i] = 0.5;
        }
        CHECK(etk_radam_multi(nt, NT, ra, 2) == ETK_OK, "radam multi");
        CHECK(etk_adamax_multi(nt, NT, xa, 2) == ETK_OK, "adamax multi");
        CHECK(etk_nadam_multi(nt, NT, na, 2) == ETK_OK, "nadam multi");
        for (i = 0; i < NT; i++)
            CHECK(mu[i] == 0.5 * (na[i % 2].beta1 * (1.0 - 0.5 * pow(0.96, 7.0 * na[i % 2].momentum_decay))),
                  "mu_product of tensor %zu advanced once", i);
    }
    CHECK(etk_adadelta_multi(ts, NT, dh, 2) == ETK_OK, "adadelta multi");
    CHECK(etk_rprop_multi(ts, NT, ph, 2) == ETK_OK, "rprop multi");
    run_asgd(ts);
    {
        /* Muon takes matrices: the same buffers as 1 x n; its work slot is state[1] */
        etk_muon_hp mh[2] = {{2e-2, 0.1, 0.95, 3.4445, -4.775, 2.0315, 1e-7, 1, 5, 0},
                             {1e-2, 0.0, 0.3, 3.4445, -4.775, 2.0315, 1e-7, 1, 5, 1}};
        etk_tensor tm[NT];
        etk_step_opts o;
        size_t i;
        memcpy(tm, ts, sizeof tm);
        for (i = 0; i < NT; i++) tm[i].rows = tm[i].n ? 1 : 0, tm[i].cols = (int64_t)tm[i].n;
        memset(&o, 0, sizeof o);
        o.phases = 1u;
        CHECK(etk_step(ETK_RULE_MUON, tm, NT, mh, 2, &o, NULL) == ETK_OK, "muon phase 0");
        o.phases = 2u;
        CHECK(etk_step(ETK_RULE_MUON, tm, NT, mh, 2, &o, NULL) == ETK_OK, "muon phase 1");
        CHECK(etk_muon_multi(tm, NT, mh, 2) == ETK_OK, "muon multi (both phases)");
    }
    CHECK(etk_probe_multi(ts, NT) == ETK_OK, "probe multi");
}

/* Bitwise equal, except that any two NaNs match (payloads are not part of
 * the contract). */
static int same_floats(const float *a, const float *b, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof(float)) != 0 && !(a[i] != a[i] && b[i] != b[i])) return 0;
    return 1;
}

static void test_bit_identical_threads_and_variants(void)
{
    float *a[NT], *b[NT];
    etk_tensor ta[NT], tb[NT];
    size_t i, total;
    char variants[64], *name;
    unsigned long long seed = rng;
    int threads = etk_get_num_threads();
    for (i = 0; i < NT; i++) {
        a[i] = (float *)malloc(5 * sizes[i] * sizeof(float) + 1);
        b[i] = (float *)malloc(5 * sizes[i] * sizeof(float) + 1);
    }
    strncpy(variants, etk_simd_available(), sizeof variants - 1);
    variants[sizeof variants - 1] = 0;
    /* baseline, one thread: the standard everything else must equal */
    CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline always available");
    etk_set_num_threads(1);
    rng = seed;
    fill_tensors(ta, a, &total);
    run_all_rules(ta);
    for (name = strtok(variants, " "); name; name = strtok(NULL, " ")) {
        int nth;
        for (nth = 1; nth <= 3; nth++) {
            CHECK(etk_set_simd_variant(name) == ETK_OK, "variant %s", name);
            etk_set_num_threads(nth);
            rng = seed;
            fill_tensors(tb, b, &total);
            run_all_rules(tb);
            for (i = 0; i < NT; i++)
                CHECK(same_floats(a[i], b[i], 5 * sizes[i]),
                      "variant %s with %d threads differs from baseline in tensor %zu", name, nth, i);
        }
    }
    etk_set_num_threads(threads);
    for (i = 0; i < NT; i++) {
        free(a[i]);
        free(b[i]);
    }
}

/* Reducing rules on multi-block float64 and float32 tensors, several steps:
 * byte-identical whatever the thread count and SIMD variant; LARS's trust
 * ratio and LAMB's with adam = 1 checked against plain formulas. */
enum { NR = 3 };
static const size_t rsizes[NR] = {3 * 4096 + 77, 5, 2 * 4096};

static void reducing_fill(double *d, float *f, etk_tensor *td, etk_tensor *tf)
{
    size_t i, j, off = 0;
    for (i = 0; i < NR; i++) {
        const size_t n = rsizes[i];
        for (j = 0; j < 4 * n; j++) d[off + j] = urand();
        for (j = 3 * n; j < 4 * n; j++) d[off + j] = d[off + j] * d[off + j];
        for (j = 0; j < 4 * n; j++) f[off + j] = (float)d[off + j];
        memset(&td[i], 0, sizeof td[i]);
        td[i].param = d + off, td[i].grad = d + off + n, td[i].state[0] = d + off + 2 * n;
        td[i].state[1] = d + off + 3 * n;
        td[i].n = n, td[i].step = 1, td[i].group = (uint32_t)(i == 1), td[i].dtype = td[i].state_dtype = ETK_FLOAT64;
        tf[i] = td[i];
        tf[i].param = f + off, tf[i].grad = f + off + n, tf[i].state[0] = f + off + 2 * n;
        tf[i].state[1] = f + off + 3 * n;
        tf[i].dtype = tf[i].state_dtype = ETK_FLOAT32;
        off += 4 * n;
    }
    /* the last one is a 2 x 4096 matrix (LARS) */
    td[2].rows = tf[2].rows = 2, td[2].cols = tf[2].cols = 4096;
}

static void reducing_steps(etk_tensor *td, etk_tensor *tf)
{
    etk_lamb_hp mh[2] = {{1e-2, 0.9, 0.999, 0.1, 0.5, 1e-6, 1, 0, 0, 0, 5, 1, 0, 1, 1, 0},
                         {1e-2, 0.5, 0.9, 0.01, 1.0, 1e-8, 0, 0, 1, 1, 4, 1, 0, 1, 0, 0}};
    etk_lars_hp rl[2] = {{1e-2, 1e-2, 0.9, 0.1, 1e-2, 0, 1}, {1e-2, 0.0, 0.5, 0.0, 0.02, 1, 0}};
    int k, i;
    for (k = 1; k <= 6; k++) {
        for (i = 0; i < NR; i++) td[i].step = tf[i].step = k;
        CHECK(etk_lamb_multi(td, NR, mh, 2) == ETK_OK, "lamb f64");
        CHECK(etk_lamb_multi(tf, NR, mh, 2) == ETK_OK, "lamb f32");
        CHECK(etk_lars_multi(td, NR, rl, 2) == ETK_OK, "lars f64");
        CHECK(etk_lars_multi(tf, NR, rl, 2) == ETK_OK, "lars f32");
    }
}

static void test_reducing_rules(void)
{
    size_t total = 0, i, j;
    double *d0, *d1;
    float *f0, *f1;
    etk_tensor td[NR], tf[NR];
    char variants[64], *name;
    unsigned long long seed = rng;
    int threads = etk_get_num_threads();
    for (i = 0; i < NR; i++) total += 4 * rsizes[i];
    d0 = (double *)malloc(total * sizeof(double)), d1 = (double *)malloc(total * sizeof(double));
    f0 = (float *)malloc(total * sizeof(float)), f1 = (float *)malloc(total * sizeof(float));
    if (!d0 || !d1 || !f0 || !f1) {
        CHECK(0, "out of memory");
        return;
    }
    CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline");
    etk_set_num_threads(1);
    reducing_fill(d0, f0, td, tf);
    reducing_steps(td, tf);
    strncpy(variants, etk_simd_available(), sizeof variants - 1);
    variants[sizeof variants - 1] = 0;
    for (name = strtok(variants, " "); name; name = strtok(NULL, " ")) {
        int nth;
        for (nth = 1; nth <= 3; nth++) {
            CHECK(etk_set_simd_variant(name) == ETK_OK, "variant %s", name);
            etk_set_num_threads(nth);
            etk_set_parallel_min(4096); /* threads even on these sizes */
            rng = seed;
            reducing_fill(d1, f1, td, tf);
            reducing_steps(td, tf);
            etk_set_parallel_min(0);
            CHECK(memcmp(d0, d1, total * sizeof(double)) == 0, "f64: variant %s, %d threads differ", name, nth);
            CHECK(same_floats(f0, f1, total), "f32: variant %s, %d threads differ", name, nth);
        }
    }
    etk_set_num_threads(threads);
    CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline");

    /* LARS, one step without momentum on a matrix: p - lr tc ||p|| / (||g|| + wd ||p||) (g + wd p) */
    {
        const size_t n = 3 * 4096 + 4;
        double *p = d0, *g = d0 + n, pn = 0.0, gn = 0.0, r, err = 0.0;
        etk_lars_hp h = {0.1, 0.01, 0.0, 0.0, 0.02, 0, 0};
        etk_tensor t;
        for (j = 0; j < 2 * n; j++) p[j] = urand();
        for (j = 0; j < n; j++) pn += p[j] * p[j], gn += g[j] * g[j];
        r = 0.02 * sqrt(pn) / (sqrt(gn) + 0.01 * sqrt(pn));
        memcpy(d1, p, n * sizeof(double));
        memset(&t, 0, sizeof t);
        t.param = p, t.grad = g, t.n = n, t.rows = 4, t.cols = (int64_t)n / 4, t.step = 1;
        t.dtype = t.state_dtype = ETK_FLOAT64;
        CHECK(etk_lars_multi(&t, 1, &h, 1) == ETK_OK, "lars matrix");
        for (j = 0; j < n; j++) {
            double want = d1[j] - 0.1 * r * (g[j] + 0.01 * d1[j]);
            err = fmax(err, fabs(p[j] - want));
        }
        CHECK(err < 1e-13, "lars trust ratio: max error %g", err);
        /* a vector: plain SGD, no weight decay */
        memcpy(d1, p, n * sizeof(double));
        t.rows = t.cols = 0;
        CHECK(etk_lars_multi(&t, 1, &h, 1) == ETK_OK, "lars vector");
        for (j = 0, err = 0.0; j < n; j++) err = fmax(err, fabs(p[j] - (d1[j] - 0.1 * g[j])));
        CHECK(err == 0.0, "lars on a vector is SGD: max error %g", err);
    }
    /* LAMB, step 1 with adam = 1: p - lr / (1 - beta1) m / (sqrt(v) + eps) */
    {
        double p[3] = {1.0, -2.0, 0.5}, g[3] = {0.5, 0.25, -1.0}, m[3] = {0}, v[3] = {0}, q[3];
        void *st[2];
        etk_lamb_hp h = {0.1, 0.9, 0.99, 0.0, 1.0, 1e-6, 1, 0, 0, 0, 5, 1, 1, 0, 0, 0};
        st[0] = m, st[1] = v;
        memcpy(q, p, sizeof q);
        CHECK(etk_lamb_f64(p, g, st, 3, &h, 1) == ETK_OK, "lamb adam");
        for (j = 0; j < 3; j++) {
            double mm = 0.1 * g[j], vv = 0.01 * g[j] * g[j];
            CHECK(fabs(p[j] - (q[j] - 1.0 * mm / (sqrt(vv) + 1e-6))) < 1e-12, "lamb adam element %zu", j);
        }
        h.rectify = 1, h.n_sma_threshold = 3;
        CHECK(etk_lamb_f64(p, g, st, 3, &h, 1) == ETK_EHPARAM, "rectify with n_sma_threshold < 4");
    }
    free(d0), free(d1), free(f0), free(f1);
}

static void test_validation_writes_nothing(void)
{
    float p[4] = {1, 2, 3, 4}, g[4] = {1, 1, 1, 1}, m[4] = {0}, v[4] = {0};
    float p0[4];
    void *st[3];
    etk_adam_hp good = {1e-3, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0}, bad;
    etk_tensor t[2];
    etk_error err;
    memcpy(p0, p, sizeof p);
    st[0] = m, st[1] = v, st[2] = NULL;

    bad = good; bad.lr = -1.0;
    CHECK(etk_adam_f32(p, g, st, 4, &bad, 1) == ETK_EHPARAM, "negative lr");
    bad = good; bad.beta1 = 1.0;
    CHECK(etk_adam_f32(p, g, st, 4, &bad, 1) == ETK_EHPARAM, "beta1 = 1");
    bad = good; bad.eps = NAN;
    CHECK(etk_adam_f32(p, g, st, 4, &bad, 1) == ETK_EHPARAM, "NaN eps");
    bad = good; bad.amsgrad = 1;
    CHECK(etk_adam_f32(p, g, st, 4, &bad, 1) == ETK_ESTATE, "amsgrad without max buffer");
    bad = good; bad.amsgrad = 2;
    CHECK(etk_adam_f32(p, g, st, 4, &bad, 1) == ETK_EHPARAM, "flag 2");
    CHECK(etk_adam_f32(p, g, st, 4, &good, 0) == ETK_EARG, "step 0");
    CHECK(etk_adam_f32(p, NULL, st, 4, &good, 1) == ETK_EARG, "NULL grad");
    CHECK(etk_adam_f32(p, g, st, 4, NULL, 1) == ETK_EARG, "NULL hp");
    CHECK(etk_adam_f32(p, g, NULL, 4, &good, 1) == ETK_ESTATE, "NULL state array");

    /* the error report names the field and the group */
    bad = good; bad.beta2 = -0.5;
    {
        etk_adam_hp two[2];
        two[0] = good, two[1] = bad;
        memset(t, 0, sizeof t);
        t[0].param = p; t[0].grad = g; t[0].state[0] = m; t[0].state[1] = v; t[0].n = 4; t[0].step = 1;
        CHECK(etk_step(ETK_RULE_ADAM, t, 1, two, 2, NULL, &err) == ETK_EHPARAM, "bad second group");
        CHECK(err.group == 1 && err.field && strcmp(err.field, "beta2") == 0, "error names group 1, beta2");
    }

    /* second tensor invalid: the first must not be written either */
    memset(t, 0, sizeof t);
    t[0].param = p; t[0].grad = g; t[0].state[0] = m; t[0].state[1] = v; t[0].n = 4; t[0].step = 1;
    t[1] = t[0];
    t[1].group = 1;
    CHECK(etk_adam_multi(t, 2, &good, 1) == ETK_EGROUP, "group out of range");
    CHECK(etk_step(ETK_RULE_ADAM, t, 2, &good, 1, NULL, &err) == ETK_EGROUP && err.tensor == 1, "names tensor 1");
    t[1].group = 0;
    t[1].dtype = 7;
    CHECK(etk_adam_multi(t, 2, &good, 1) == ETK_EDTYPE, "unknown dtype");
    t[1].dtype = ETK_FLOAT32;
    t[1].state_dtype = ETK_FLOAT64;
    CHECK(etk_adam_multi(t, 2, &good, 1) == ETK_EDTYPE, "state dtype differs");
    t[1].state_dtype = ETK_FLOAT32;
    t[1].state[1] = NULL;
    CHECK(etk_step(ETK_RULE_ADAM, t, 2, &good, 1, NULL, &err) == ETK_ESTATE && err.tensor == 1 && err.slot == 1,
          "names tensor 1, slot 1");
    t[1].state[1] = v;
    t[1].rows = 3, t[1].cols = 0;
    CHECK(etk_adam_multi(t, 2, &good, 1) == ETK_ESHAPE, "rows without cols");
    t[1].rows = 0;
    CHECK(etk_step(ETK_NRULES, t, 2, &good, 1, NULL, &err) == ETK_ERULE, "unknown rule");
    CHECK(etk_step(-1, t, 2, &good, 1, NULL, &err) == ETK_ERULE, "negative rule");
    CHECK(memcmp(p, p0, sizeof p) == 0 && m[0] == 0.0f && v[0] == 0.0f, "a rejected call wrote");

    {
        etk_sgd_hp s = {0.1, 0.0, 0.0, 0.0, 1, 0};
        CHECK(etk_sgd_f32(p, g, NULL, 4, &s, 1) == ETK_EHPARAM, "nesterov without momentum");
        CHECK(etk_rule_check(ETK_RULE_SGD, &s, &err) == ETK_EHPARAM && strcmp(err.field, "nesterov") == 0 &&
                  err.message != NULL,
              "the cross-field check names nesterov");
        s.momentum = 0.9;
        CHECK(etk_sgd_f32(p, g, NULL, 4, &s, 1) == ETK_ESTATE, "momentum without buffer");
    }
    CHECK(memcmp(p, p0, sizeof p) == 0, "a rejected call wrote");
    CHECK(strcmp(etk_strerror(ETK_EHPARAM), "success") != 0, "strerror");
    /* empty tensors need no buffers */
    CHECK(etk_adam_f32(NULL, NULL, NULL, 0, &good, 1) == ETK_OK, "empty tensor");
}

/* torch.lerp */
static double lerp(double a, double b, double w) { return fabs(w) < 0.5 ? a + w * (b - a) : b - (b - a) * (1.0 - w); }

/* Muon's element-wise parts: phase 0 writes the update into the work slot
 * only; phase 1 (after the caller's orthogonalisation, here none) the
 * momentum and the parameters; two calls equal one; vectors are refused. */
static void test_muon_phases(void)
{
    enum { R = 3, C = 7, N = R * C };
    static double p[N], g[N], m[N], u[N], rp[N], rm[N], ru[N], p1[N], m1[N];
    etk_muon_hp h = {0.02, 0.1, 0.95, 3.4445, -4.775, 2.0315, 1e-7, 1, 5, 0};
    etk_tensor t;
    etk_step_opts o;
    etk_error err;
    int i, mode;
    for (mode = 0; mode < 4; mode++) {
        double ratio;
        h.nesterov = mode != 1;
        h.momentum = mode == 2 ? 0.3 : mode == 3 ? 0.0 : 0.95;
        h.adjust_lr_fn = mode & 1;
        ratio = h.adjust_lr_fn ? 0.2 * sqrt((double)C) : 1.0;
        for (i = 0; i < N; i++) {
            p[i] = rp[i] = urand();
            g[i] = urand();
            m[i] = rm[i] = 0.5 * urand();
            u[i] = 99.0;
        }
        memcpy(p1, p, sizeof p);
        memcpy(m1, m, sizeof m);
        memset(&t, 0, sizeof t);
        t.param = p, t.grad = g, t.state[0] = m, t.state[1] = u, t.n = N, t.rows = R, t.cols = C, t.step = 1;
        t.dtype = t.state_dtype = ETK_FLOAT64;
        memset(&o, 0, sizeof o);
        o.phases = 1u;
        CHECK(etk_step(ETK_RULE_MUON, &t, 1, &h, 1, &o, &err) == ETK_OK, "muon phase 0");
        for (i = 0; i < N; i++) {
            double mm = lerp(rm[i], g[i], 1.0 - h.momentum);
            ru[i] = h.nesterov ? lerp(g[i], mm, h.momentum) : mm;
            rm[i] = mm;
            rp[i] = rp[i] * (1.0 - h.lr * h.weight_decay) + -(h.lr * ratio) * ru[i];
        }
        CHECK(memcmp(u, ru, sizeof u) == 0, "muon phase 0 update (mode %d)", mode);
        CHECK(memcmp(p, p1, sizeof p) == 0 && memcmp(m, m1, sizeof m) == 0, "phase 0 wrote p or m (mode %d)", mode);
        o.phases = 2u;
        CHECK(etk_step(ETK_RULE_MUON, &t, 1, &h, 1, &o, &err) == ETK_OK, "muon phase 1");
        CHECK(memcmp(p, rp, sizeof p) == 0 && memcmp(m, rm, sizeof m) == 0, "muon phase 1 (mode %d)", mode);
        /* one call of both phases: the same */
        memcpy(p, p1, sizeof p);
        memcpy(m, m1, sizeof m);
        CHECK(etk_muon_multi(&t, 1, &h, 1) == ETK_OK, "muon both phases");
        CHECK(memcmp(p, rp, sizeof p) == 0 && memcmp(m, rm, sizeof m) == 0, "muon in one call (mode %d)", mode);
    }
    /* a vector is refused (the single-tensor entry points have no shape) before anything is written */
    memcpy(p1, p, sizeof p);
    {
        void *st[2];
        st[0] = m, st[1] = u;
        CHECK(etk_muon_f64(p, g, st, N, &h, 1) == ETK_ESHAPE, "muon refuses a vector");
    }
    t.rows = 0, t.cols = 0;
    CHECK(etk_step(ETK_RULE_MUON, &t, 1, &h, 1, NULL, &err) == ETK_ESHAPE && err.tensor == 0, "names the tensor");
    t.rows = R, t.cols = C;
    t.state[1] = NULL;
    CHECK(etk_step(ETK_RULE_MUON, &t, 1, &h, 1, NULL, &err) == ETK_ESTATE && err.slot == 1, "work slot needed");
    CHECK(memcmp(p, p1, sizeof p) == 0, "a rejected call wrote");
    h.ns_steps = 100;
    CHECK(etk_rule_check(ETK_RULE_MUON, &h, &err) == ETK_EHPARAM && strcmp(err.field, "ns_steps") == 0, "ns_steps");
    h.ns_steps = 5, h.adjust_lr_fn = 2;
    CHECK(etk_rule_check(ETK_RULE_MUON, &h, &err) == ETK_EHPARAM && strcmp(err.field, "adjust_lr_fn") == 0, "adj");
    h.adjust_lr_fn = 0, h.ns_b = INFINITY;
    CHECK(etk_rule_check(ETK_RULE_MUON, &h, &err) == ETK_EHPARAM && strcmp(err.field, "ns_b") == 0, "ns_b");
}

static void test_rule_table(void)
{
    int r;
    size_t i;
    CHECK(etk_rule_find("adam") == ETK_RULE_ADAM && etk_rule_find("lion") == ETK_RULE_LION, "find by name");
    CHECK(etk_rule_find("nope") == ETK_ERULE && etk_rule_find(NULL) == ETK_ERULE, "unknown names");
    CHECK(etk_rule_info_get(ETK_NRULES) == NULL && etk_rule_info_get(-1) == NULL, "ids out of range");
    for (r = 0; r < ETK_NRULES; r++) {
        const etk_rule_info *info = etk_rule_info_get(r);
        CHECK(info && info->name && etk_rule_find(info->name) == r, "rule %d round-trips by name", r);
        CHECK(info->nslots <= ETK_MAX_SLOTS, "rule %s has too many slots", info->name);
        for (i = 0; i < info->nfields; i++) {
            const etk_field_info *f = &info->fields[i];
            const int real = f->kind == ETK_FIELD_REAL || f->kind == ETK_FIELD_REAL_OR_NONE;
            CHECK(f->offset + (real ? sizeof(double) : sizeof(int)) <= info->hp_size,
                  "field %s.%s inside the struct", info->name, f->name);
            CHECK(!f->schedulable || f->kind == ETK_FIELD_REAL, "only reals are schedulable");
        }
    }
    {
        etk_adam_hp h = {1e-3, 0.9, 0.999, 1e-8, 0.0, 1, 0, 0};
        CHECK(etk_rule_needs(ETK_RULE_ADAM, &h) == 7u, "amsgrad needs 3 slots");
        h.amsgrad = 0;
        CHECK(etk_rule_needs(ETK_RULE_ADAM, &h) == 3u, "adam needs 2 slots");
    }
}

/* Adafactor: matrices of every tiling (one tile, several tiles in both
 * directions, many small matrices to a unit) and vectors in one call; the
 * same bits for 1, 2 and 3 threads and every SIMD variant. */
enum { AF_NT = 6 };
static const int64_t af_rows[AF_NT] = {0, 300, 3, 5000, 3, 257};
static const int64_t af_cols[AF_NT] = {0, 600, 5000, 3, 3, 257};
static const size_t af_n[AF_NT] = {5001, 180000, 15000, 15000, 18000, 66049};

static void af_fill(etk_tensor *ts, float **bufs)
{
    size_t i, j;
    for (i = 0; i < AF_NT; i++) {
        const size_t n = af_n[i];
        const size_t nr = af_rows[i] ? n / (size_t)af_cols[i] : 0;
        float *b = bufs[i];
        memset(&ts[i], 0, sizeof ts[i]);
        for (j = 0; j < 2 * n; j++) b[j] = (float)urand();
        for (j = 2 * n; j < 4 * n; j++) b[j] = 0.0f; /* state starts at zero */
        ts[i].param = b;
        ts[i].grad = b + n;
        if (af_rows[i]) {
            ts[i].state[0] = b + 2 * n;      /* row_var */
            ts[i].state[1] = b + 2 * n + nr; /* col_var */
        } else {
            ts[i].state[2] = b + 2 * n; /* variance */
        }
        ts[i].n = n;
        ts[i].rows = af_rows[i];
        ts[i].cols = af_cols[i];
        ts[i].group = (uint32_t)(i % 2);
        ts[i].dtype = ETK_FLOAT32;
        ts[i].state_dtype = ETK_FLOAT32;
    }
}

static void af_run(etk_tensor *ts)
{
    etk_adafactor_hp h[2] = {{1e-2, -0.8, NAN, 1e-3, 1.0, 0.0, 0}, {0.05, -0.5, 1e-6, 1e-2, 1.25, 0.1, 1}};
    int64_t k;
    size_t i, j;
    for (k = 1; k <= 3; k++) {
        for (i = 0; i < AF_NT; i++) {
            ts[i].step = k;
            for (j = 0; j < af_n[i]; j++) ((float *)ts[i].param)[af_n[i] + j] = (float)urand(); /* a new grad */
        }
        CHECK(etk_adafactor_multi(ts, AF_NT, h, 2) == ETK_OK, "adafactor multi");
    }
}

static void test_adafactor(void)
{
    float *a[AF_NT], *b[AF_NT];
    etk_tensor ta[AF_NT], tb[AF_NT];
    char variants[64], *name;
    unsigned long long seed = rng;
    int threads = etk_get_num_threads();
    size_t i;
    for (i = 0; i < AF_NT; i++) {
        a[i] = (float *)malloc(4 * af_n[i] * sizeof(float));
        b[i] = (float *)malloc(4 * af_n[i] * sizeof(float));
    }
    strncpy(variants, etk_simd_available(), sizeof variants - 1);
    variants[sizeof variants - 1] = 0;
    CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline always available");
    etk_set_num_threads(1);
    rng = seed;
    af_fill(ta, a);
    af_run(ta);
    for (i = 0; i < AF_NT; i++) {
        size_t j, finite = 0;
        for (j = 0; j < af_n[i]; j++) finite += isfinite(a[i][j]) != 0;
        CHECK(finite == af_n[i], "adafactor tensor %zu: finite parameters", i);
    }
    for (name = strtok(variants, " "); name; name = strtok(NULL, " ")) {
        int nth;
        for (nth = 1; nth <= 3; nth++) {
            CHECK(etk_set_simd_variant(name) == ETK_OK, "variant %s", name);
            etk_set_num_threads(nth);
            rng = seed;
            af_fill(tb, b);
            af_run(tb);
            for (i = 0; i < AF_NT; i++)
                CHECK(same_floats(a[i], b[i], 2 * af_n[i] + (af_rows[i] ? af_n[i] / (size_t)af_cols[i] +
                                                                              af_n[i] / (size_t)af_rows[i]
                                                                        : af_n[i])),
                      "adafactor: variant %s with %d threads differs from baseline in tensor %zu", name, nth, i);
        }
    }
    etk_set_num_threads(threads);

    /* a vector at step 1: variance = g^2, u = sign(g), RMS(u) = 1;
     * p -= max(eps2, RMS(p)) * min(lr, 1) * sign(g) */
    {
        double p[4] = {3.0, -4.0, 0.0, 0.0}, g[4] = {2.0, -0.5, 1.0, -1.0}, v[4] = {0};
        void *st[3];
        etk_adafactor_hp h = {0.1, -0.8, NAN, 1e-3, 1.0, 0.0, 0};
        st[0] = NULL, st[1] = NULL, st[2] = v;
        CHECK(etk_adafactor_f64(p, g, st, 4, &h, 1) == ETK_OK, "adafactor f64 vector step");
        CHECK(p[0] == 3.0 - 0.25 && p[1] == -4.0 + 0.25 && p[2] == -0.25 && p[3] == 0.25 && v[0] == 4.0 &&
                  v[1] == 0.25,
              "adafactor vector step: %g %g %g %g", p[0], p[1], p[2], p[3]);
    }

    /* validation: the slots of the tensor's own form are required, the others not */
    {
        float p[6] = {1, 2, 3, 4, 5, 6}, g[6] = {1, 1, 1, 1, 1, 1}, rvar[2] = {0}, cvar[3] = {0}, p0[6];
        etk_adafactor_hp h = {1e-2, -0.8, NAN, 1e-3, 1.0, 0.0, 0}, bad;
        etk_tensor t;
        etk_error err;
        memcpy(p0, p, sizeof p);
        memset(&t, 0, sizeof t);
        t.param = p, t.grad = g, t.n = 6, t.rows = 2, t.cols = 3, t.step = 1;
        t.state[0] = rvar;
        CHECK(etk_step(ETK_RULE_ADAFACTOR, &t, 1, &h, 1, NULL, &err) == ETK_ESTATE && err.slot == 1,
              "a matrix needs col_var");
        t.state[1] = cvar;
        bad = h, bad.eps1 = -1.0;
        CHECK(etk_step(ETK_RULE_ADAFACTOR, &t, 1, &bad, 1, NULL, &err) == ETK_EHPARAM && strcmp(err.field, "eps1") == 0,
              "eps1 < 0");
        bad = h, bad.eps1 = INFINITY;
        CHECK(etk_rule_check(ETK_RULE_ADAFACTOR, &bad, &err) == ETK_EHPARAM, "eps1 inf");
        bad = h, bad.beta2_decay = 0.5;
        CHECK(etk_rule_check(ETK_RULE_ADAFACTOR, &bad, &err) == ETK_EHPARAM && strcmp(err.field, "beta2_decay") == 0,
              "beta2_decay > 0");
        bad = h, bad.d = 0.5;
        CHECK(etk_rule_check(ETK_RULE_ADAFACTOR, &bad, &err) == ETK_EHPARAM && strcmp(err.field, "d") == 0, "d < 1");
        bad = h, bad.eps2 = NAN;
        CHECK(etk_rule_check(ETK_RULE_ADAFACTOR, &bad, &err) == ETK_EHPARAM && strcmp(err.field, "eps2") == 0,
              "eps2 NaN is not None");
        t.rows = 4;
        CHECK(etk_step(ETK_RULE_ADAFACTOR, &t, 1, &h, 1, NULL, &err) == ETK_ESHAPE, "rows * cols does not divide n");
        t.rows = 2;
        CHECK(memcmp(p, p0, sizeof p) == 0, "nothing written on refusal");
        CHECK(etk_step(ETK_RULE_ADAFACTOR, &t, 1, &h, 1, NULL, &err) == ETK_OK, "a matrix without variance");
        CHECK(memcmp(p, p0, sizeof p) != 0 && rvar[0] > 0.0f && cvar[2] > 0.0f, "matrix step written");
        t.rows = t.cols = 0;
        t.state[0] = t.state[1] = NULL;
        CHECK(etk_step(ETK_RULE_ADAFACTOR, &t, 1, &h, 1, NULL, &err) == ETK_ESTATE && err.slot == 2,
              "a vector needs variance");
    }
    for (i = 0; i < AF_NT; i++) {
        free(a[i]);
        free(b[i]);
    }
}

static etk_sched_node node(int kind, int child, double p0, double p1, double p2)
{
    etk_sched_node n;
    memset(&n, 0, sizeof n);
    n.kind = kind;
    n.child = child;
    n.p[0] = p0;
    n.p[1] = p1;
    n.p[2] = p2;
    return n;
}

static void test_schedules(void)
{
    /* warmup(cosine(1.0, 100, min 0.1), 10): nodes in post-order, root last */
    etk_sched_node nodes[2];
    etk_schedule s = {nodes, 2, NULL, 0};
    double out[300];
    int64_t k;
    nodes[0] = node(ETK_S_COSINE, -1, 1.0, 100.0, 0.1);
    nodes[1] = node(ETK_S_WARMUP, 0, 10.0, 0.0, 0.0);
    CHECK(etk_schedule_check(&s) == ETK_OK, "valid schedule");
    CHECK(etk_schedule_eval(&s, 0) == 0.0, "warmup starts at start_lr");
    CHECK(etk_schedule_eval(&s, 5) == 0.5, "half way through warmup: %g", etk_schedule_eval(&s, 5));
    CHECK(etk_schedule_eval(&s, 10) == 1.0, "peak after warmup");
    CHECK(fabs(etk_schedule_eval(&s, 60) - 0.55) < 1e-15, "cosine midpoint %g", etk_schedule_eval(&s, 60));
    CHECK(etk_schedule_eval(&s, 1000000) == 0.1, "holds min_lr");
    CHECK(etk_schedule_values(&s, 0, out, 300) == ETK_OK, "values");
    for (k = 0; k < 300; k++) CHECK(out[k] == etk_schedule_eval(&s, k), "values[%d]", (int)k);

    /* a child after its parent, or a zero step size, is refused */
    nodes[1].child = 1;
    CHECK(etk_schedule_check(&s) == ETK_EARG, "child must precede parent");
    nodes[1].child = 0;
    nodes[0] = node(ETK_S_STEP, -1, 1.0, 0.0, 0.5);
    CHECK(etk_schedule_check(&s) == ETK_EHPARAM, "step_size 0");

    /* a scheduled learning rate in the step: lr(k) = 0.5^k, SGD, p -= lr * g */
    {
        etk_sched_node e = node(ETK_S_EXPONENTIAL, -1, 1.0, 0.5, 0.0);
        etk_schedule es = {&e, 1, NULL, 0};
        etk_hp_schedule bind = {0, 0, &es}; /* lr is the first field */
        etk_sgd_hp h = {123.0, 0.0, 0.0, 0.0, 0, 0};
        float p[3] = {0, 0, 0}, g[3] = {1, 1, 1};
        etk_tensor t;
        memset(&t, 0, sizeof t);
        t.param = p;
        t.grad = g;
        t.n = 3;
        t.step = 1;
        for (k = 0; k < 4; k++) CHECK(etk_sgd_multi_scheduled(&t, 1, &h, 1, &bind, 1, k) == ETK_OK, "scheduled step");
        CHECK(p[0] == -1.875f, "p = -(1 + 0.5 + 0.25 + 0.125), got %g", (double)p[0]);
        bind.offset = 40; /* not a schedulable field */
        CHECK(etk_sgd_multi_scheduled(&t, 1, &h, 1, &bind, 1, 0) == ETK_EARG, "bad offset");
        e.p[0] = -1.0; /* a negative learning rate from the schedule */
        bind.offset = 0;
        CHECK(etk_sgd_multi_scheduled(&t, 1, &h, 1, &bind, 1, 0) == ETK_EHPARAM, "negative scheduled lr");
        CHECK(p[0] == -1.875f, "refused step wrote");
    }
}

/* Every kind at the extremes of int64: no signed overflow (UBSan aborts the
 * sanitizer build on one), finite values, exact boundaries above 2^53, and
 * values() refuses a range past INT64_MAX instead of wrapping around. */
static void test_schedules_large_k(void)
{
    static const double two62 = 4611686018427387904.0;
    static const int64_t ks[] = {INT64_MAX, INT64_MAX - 1, INT64_MAX / 2, 4611686018427387904LL,
                                 4611686018427387903LL, 9007199254740993LL, 1, 0, -1, INT64_MIN};
    etk_sched_node leaf[20];
    double leafdata[8] = {10.0, two62, 10.0, two62, 1.0, 0.5, 0.25, 0.0};
    size_t nleaf = 0, i, j;
    double out[5];
    memset(leaf, 0, sizeof leaf);
    leaf[nleaf++] = node(ETK_S_CONSTANT, -1, 1.0, 0.0, 0.0);
    leaf[nleaf++] = node(ETK_S_LINEAR, -1, 1.0, 0.0, 100.0);
    leaf[nleaf++] = node(ETK_S_STEP, -1, 1.0, 10.0, 0.5);
    leaf[nleaf++] = node(ETK_S_STEP, -1, 1.0, two62, 0.5);
    leaf[nleaf] = node(ETK_S_MULTISTEP, -1, 1.0, 0.5, 0.0);
    leaf[nleaf].data_off = 0, leaf[nleaf++].data_len = 2;
    leaf[nleaf++] = node(ETK_S_EXPONENTIAL, -1, 1.0, 0.5, 0.0);
    leaf[nleaf] = node(ETK_S_POLYNOMIAL, -1, 1.0, 100.0, 2.0);
    leaf[nleaf++].p[3] = 0.0;
    leaf[nleaf++] = node(ETK_S_COSINE, -1, 1.0, 100.0, 0.1);
    leaf[nleaf] = node(ETK_S_COSINE_RESTARTS, -1, 1.0, 10.0, 2.0);
    leaf[nleaf++].p[4] = 0.5;
    leaf[nleaf] = node(ETK_S_COSINE_RESTARTS, -1, 1.0, 1.0, 1.0);
    leaf[nleaf++].p[4] = 0.5;
    leaf[nleaf] = node(ETK_S_COSINE_RESTARTS, -1, 1.0, 1.0, two62);
    leaf[nleaf++].p[4] = 0.5;
    for (j = 0; j < 4; j++) {
        leaf[nleaf] = node(ETK_S_ONE_CYCLE, -1, 100.0, 0.3, 0.04);
        leaf[nleaf].p[3] = 1.0, leaf[nleaf].p[4] = 4e-6, leaf[nleaf++].mode = (int32_t)j;
    }
    for (j = 0; j < 3; j++) {
        leaf[nleaf] = node(ETK_S_CYCLIC, -1, 0.1, 1.0, 10.0);
        leaf[nleaf].p[3] = 10.0, leaf[nleaf].p[4] = 0.99, leaf[nleaf++].mode = (int32_t)j;
    }
    leaf[nleaf++] = node(ETK_S_INVERSE_SQRT, -1, 1.0, 100.0, 100.0);
    for (i = 0; i < nleaf; i++) {
        etk_schedule s = {&leaf[i], 1, leafdata, 8};
        CHECK(etk_schedule_check(&s) == ETK_OK, "leaf %zu valid", i);
        for (j = 0; j < sizeof ks / sizeof ks[0]; j++) {
            double v = etk_schedule_eval(&s, ks[j]);
            CHECK(v == v && v - v == 0.0, "leaf %zu (kind %d) at k = %lld: %g", i, (int)leaf[i].kind,
                  (long long)ks[j], v);
        }
        CHECK(etk_schedule_values(&s, INT64_MAX - 4, out, 5) == ETK_OK, "values up to INT64_MAX");
        for (j = 0; j < 5; j++)
            CHECK(out[j] == etk_schedule_eval(&s, INT64_MAX - 4 + (int64_t)j), "values[%zu] == eval", j);
        CHECK(etk_schedule_values(&s, INT64_MAX - 3, out, 5) == ETK_EARG, "a range past INT64_MAX");
        CHECK(etk_schedule_values(&s, 0, out, (size_t)-1) == ETK_EARG, "n - 1 > INT64_MAX");
        CHECK(etk_schedule_values(&s, INT64_MIN, out, 5) == ETK_OK, "negative k0 are taken as 0");
        CHECK(out[4] == etk_schedule_eval(&s, 0), "negative k0 are taken as 0");
    }
    {
        /* 2^62 - 1 rounds to 2^62 as a double: the boundaries must still be exact */
        const int64_t b = 4611686018427387904LL;
        etk_sched_node t[6];
        double data[6] = {two62, 1.0, 0.5, two62, 0.0, 1.0};
        etk_schedule pw = {t, 1, data, 6}, ms = {t + 1, 1, data, 6}, jn = {t + 3, 3, data, 6};
        memset(t, 0, sizeof t);
        t[0] = node(ETK_S_PIECEWISE, -1, 1.0, 0.0, 0.0);        /* [2^62], values 1, 0.5 */
        t[0].data_off = 0, t[0].data_len = 3;
        t[1] = node(ETK_S_MULTISTEP, -1, 1.0, 0.5, 0.0);        /* milestone 2^62 */
        t[1].data_off = 0, t[1].data_len = 1;
        /* join([constant(1), step(1, 1, 0.5)], [2^62]): nodes t[3..5] as their own tree */
        t[3] = node(ETK_S_CONSTANT, -1, 1.0, 0.0, 0.0);
        t[4] = node(ETK_S_STEP, -1, 1.0, 1.0, 0.5);
        t[5] = node(ETK_S_JOIN, -1, 1.0, 0.0, 0.0);             /* data: [2^62], children 0, 1 */
        t[5].data_off = 3, t[5].data_len = 3;
        CHECK(etk_schedule_check(&pw) == ETK_OK && etk_schedule_check(&ms) == ETK_OK, "valid");
        CHECK(etk_schedule_eval(&pw, b - 1) == 1.0 && etk_schedule_eval(&pw, b) == 0.5, "piecewise at 2^62");
        CHECK(etk_schedule_eval(&ms, b - 1) == 1.0 && etk_schedule_eval(&ms, b) == 0.5, "multistep at 2^62");
        {
            etk_sched_node w[2];
            etk_schedule ws = {w, 2, NULL, 0};
            /* warmup(step(1, 1, 0.5), 2^62): the ramp (<= 1) up to 2^62 - 1, never step(-1) = 2 */
            w[0] = node(ETK_S_STEP, -1, 1.0, 1.0, 0.5);
            w[1] = node(ETK_S_WARMUP, 0, two62, 0.0, 0.0);
            CHECK(etk_schedule_check(&ws) == ETK_OK, "valid warmup");
            CHECK(etk_schedule_eval(&ws, b - 1) <= 1.0, "still warming up at 2^62 - 1: %g",
                  etk_schedule_eval(&ws, b - 1));
            CHECK(etk_schedule_eval(&ws, b) == 1.0 && etk_schedule_eval(&ws, b + 1) == 0.5, "after warmup");
        }
        CHECK(etk_schedule_check(&jn) == ETK_OK, "valid join");
        CHECK(etk_schedule_eval(&jn, b - 1) == 1.0, "join: first schedule up to 2^62 - 1");
        CHECK(etk_schedule_eval(&jn, b) == 1.0 && etk_schedule_eval(&jn, b + 1) == 0.5, "join: restarts at 2^62");
        CHECK(etk_schedule_eval(&jn, INT64_MAX) == 0.0, "join at INT64_MAX: %g", etk_schedule_eval(&jn, INT64_MAX));
    }
}

/* ---- Adan, ADOPT, AdEMAMix ---------------------------------------------- */

/* sum(g^2) as the engine forms it: per block of 4096 over 16 lanes, lanes in
 * order, blocks in order. */
static double blocked_sum_sq(const double *g, size_t n)
{
    double total = 0.0;
    size_t lo, i, j;
    for (lo = 0; lo < n; lo += 4096) {
        size_t m = n - lo < 4096 ? n - lo : 4096;
        double acc[16] = {0}, s = 0.0;
        for (i = 0; i < m; i++) acc[i % 16] += g[lo + i] * g[lo + i];
        for (j = 0; j < 16; j++) s += acc[j];
        total += s;
    }
    return total;
}

/* One element of Adan (pytorch_optimizer.Adan), clip factor given. */
static void ref_adan(double *p, double g0, double *m, double *v, double *dm, double *prev, int fresh, double clip,
                     const etk_adan_hp *h, int64_t k)
{
    double g = (h->maximize ? -g0 : g0) * clip, pv = fresh ? g0 * -clip : *prev, d = pv + g, u, den;
    *m = *m + (1.0 - h->beta1) * (g - *m);
    *dm = *dm + (1.0 - h->beta2) * (d - *dm);
    u = d * h->beta2 + g;
    *v = *v * h->beta3 + ((1.0 - h->beta3) * u) * u;
    den = sqrt(*v) / sqrt(1.0 - pow(h->beta3, (double)k)) + h->eps;
    if (h->weight_decay != 0.0 && h->weight_decouple) *p *= 1.0 - h->lr * h->weight_decay;
    *p = *p + (-(h->lr / (1.0 - pow(h->beta1, (double)k))) * *m) / den;
    *p = *p + (-(h->lr * h->beta2 / (1.0 - pow(h->beta2, (double)k))) * *dm) / den;
    if (h->weight_decay != 0.0 && !h->weight_decouple) *p /= 1.0 + h->lr * h->weight_decay;
    *prev = -g;
}

/* Two tensors in two groups: the first clips by max_grad_norm, the second does
 * not and is not counted in the norm.  Then a third tensor joins the first
 * group: the norm is over both of its tensors. */
static void test_adan_f64_clips_by_the_call_norm(void)
{
    enum { NA = 5000, NB = 37, STEPS = 20 };
    static double buf[3][6][NA], ref[3][6][NA];
    const size_t n[3] = {NA, NB, 9};
    etk_adan_hp h[2] = {{1e-2, 0.9, 0.92, 0.99, 0.1, 3.0, 1e-8, 0, 1}, {1e-3, 0.98, 0.9, 0.999, 0.05, 0.0, 1e-6, 1, 0}};
    const uint32_t group[3] = {0, 1, 0};
    etk_tensor ts[3];
    size_t i, j, nt;
    int64_t k;
    for (nt = 2; nt <= 3; nt++) {
        memset(buf, 0, sizeof buf);
        for (i = 0; i < nt; i++)
            for (j = 0; j < n[i]; j++) buf[i][0][j] = urand();
        memcpy(ref, buf, sizeof buf);
        for (k = 1; k <= STEPS; k++) {
            double sq = 0.0, clip;
            for (i = 0; i < nt; i++) {
                for (j = 0; j < n[i]; j++) ref[i][1][j] = buf[i][1][j] = 3.0 * urand() + 0.1 * buf[i][0][j];
                memset(&ts[i], 0, sizeof ts[i]);
                ts[i].param = buf[i][0];
                ts[i].grad = buf[i][1];
                for (j = 0; j < 4; j++) ts[i].state[j] = buf[i][2 + j];
                ts[i].n = n[i];
                ts[i].step = k;
                ts[i].group = group[i];
                ts[i].dtype = ts[i].state_dtype = ETK_FLOAT64;
                ts[i].flags = k == 1 ? (uint16_t)15u : 0u;
                if (group[i] == 0) sq += blocked_sum_sq(ref[i][1], n[i]);
            }
            CHECK(etk_adan_multi(ts, nt, h, 2) == ETK_OK, "adan multi");
            clip = h[0].max_grad_norm / (sqrt(sq) + h[0].eps);
            clip = clip > 1.0 ? 1.0 : clip;
            CHECK(clip < 1.0, "the clip acts (%g)", clip);
            for (i = 0; i < nt; i++)
                for (j = 0; j < n[i]; j++)
                    ref_adan(&ref[i][0][j], ref[i][1][j], &ref[i][2][j], &ref[i][3][j], &ref[i][4][j], &ref[i][5][j],
                             k == 1, group[i] == 0 ? clip : 1.0, &h[group[i]], k);
        }
        for (i = 0; i < nt; i++)
            CHECK(memcmp(buf[i], ref[i], sizeof buf[i]) == 0, "adan tensor %zu of %zu differs from the scalar form", i,
                  nt);
    }
}

/* The three rules on tensors of every size class, first and later steps, in
 * one call each: bit-identical over thread counts and SIMD variants. */
static void run_adan_adopt_ademamix(float *const *bufs, int64_t step)
{
    etk_tensor ts[NT];
    etk_adan_hp an[2] = {{1e-3, 0.98, 0.92, 0.99, 0.01, 20.0, 1e-8, 1, 0}, {1e-2, 0.5, 0.8, 0.9, 0.1, 0.0, 1e-6, 0, 1}};
    etk_adopt_hp ao[2] = {{1e-3, 0.9, 0.9999, 0.01, 1e-6, 1, 1, 0, 0}, {1e-2, 0.5, 0.99, 0.1, 1e-4, 0, 0, 0, 1}};
    etk_ademamix_hp am[2] = {{1e-3, 0.9, 0.999, 0.9999, 0.01, 5.0, 40.0, 1e-8, 1, 1, 0},
                             {1e-2, 0.8, 0.99, 0.999, 0.1, 2.0, 0.0, 1e-6, 0, 0, 1}};
    size_t i, j;
    for (i = 0; i < NT; i++) {
        memset(&ts[i], 0, sizeof ts[i]);
        ts[i].param = bufs[i];
        ts[i].grad = bufs[i] + sizes[i];
        for (j = 0; j < 4; j++) ts[i].state[j] = bufs[i] + (2 + j) * sizes[i];
        ts[i].n = sizes[i];
        ts[i].step = step;
        ts[i].group = (uint32_t)(i % 2);
        ts[i].dtype = ts[i].state_dtype = ETK_FLOAT32;
        ts[i].flags = step == 1 ? (uint16_t)15u : 0u;
    }
    CHECK(etk_adan_multi(ts, NT, an, 2) == ETK_OK, "adan multi");
    CHECK(etk_adopt_multi(ts, NT, ao, 2) == ETK_OK, "adopt multi");
    CHECK(etk_ademamix_multi(ts, NT, am, 2) == ETK_OK, "ademamix multi");
}

static void fill_six(float **bufs)
{
    size_t i, j;
    for (i = 0; i < NT; i++) {
        for (j = 0; j < 6 * sizes[i]; j++) bufs[i][j] = (float)urand();
        for (j = 3 * sizes[i]; j < 4 * sizes[i]; j++) bufs[i][j] = bufs[i][j] * bufs[i][j]; /* exp_avg_sq >= 0 */
    }
}

static void test_adan_adopt_ademamix_threads_and_variants(void)
{
    float *a[NT], *b[NT];
    size_t i;
    int64_t step;
    char variants[64], *name;
    unsigned long long seed = rng;
    int threads = etk_get_num_threads();
    for (i = 0; i < NT; i++) {
        a[i] = (float *)malloc(6 * sizes[i] * sizeof(float) + 1);
        b[i] = (float *)malloc(6 * sizes[i] * sizeof(float) + 1);
    }
    strncpy(variants, etk_simd_available(), sizeof variants - 1);
    variants[sizeof variants - 1] = 0;
    CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline always available");
    etk_set_num_threads(1);
    rng = seed;
    fill_six(a);
    for (step = 1; step <= 3; step++) run_adan_adopt_ademamix(a, step);
    for (name = strtok(variants, " "); name; name = strtok(NULL, " ")) {
        int nth;
        for (nth = 1; nth <= 3; nth++) {
            CHECK(etk_set_simd_variant(name) == ETK_OK, "variant %s", name);
            etk_set_num_threads(nth);
            rng = seed;
            fill_six(b);
            for (step = 1; step <= 3; step++) run_adan_adopt_ademamix(b, step);
            for (i = 0; i < NT; i++)
                CHECK(same_floats(a[i], b[i], 6 * sizes[i]),
                      "adan/adopt/ademamix: variant %s with %d threads differs from baseline in tensor %zu", name,
                      nth, i);
        }
    }
    etk_set_num_threads(threads);
    for (i = 0; i < NT; i++) {
        free(a[i]);
        free(b[i]);
    }
}

static void test_adopt_first_step_and_ademamix_check(void)
{
    float p[3] = {1, -2, 3}, g[3] = {0.5f, -1, 2}, m[3] = {0}, v[3] = {0};
    void *st[2];
    etk_adopt_hp h = {0.1, 0.9, 0.9999, 0.0, 1e-6, 1, 0, 0, 0};
    etk_ademamix_hp a = {1e-3, 0.9, 0.999, 0.9999, 0.0, 5.0, 100.0, 1e-8, 0, 0, 0};
    etk_error err;
    st[0] = m, st[1] = v;
    CHECK(etk_adopt_f32(p, g, st, 3, &h, 1) == ETK_OK, "adopt step 1");
    CHECK(p[0] == 1.0f && p[1] == -2.0f && p[2] == 3.0f && m[0] == 0.0f, "step 1 moves nothing but exp_avg_sq");
    CHECK(v[0] == 0.25f && v[1] == 1.0f && v[2] == 4.0f, "step 1 sets exp_avg_sq = g^2");
    CHECK(etk_adopt_f32(p, g, st, 3, &h, 2) == ETK_OK, "adopt step 2");
    CHECK(p[0] < 1.0f && p[1] > -2.0f && p[2] < 3.0f, "step 2 moves against the gradient");
    CHECK(etk_rule_check(ETK_RULE_ADEMAMIX, &a, &err) == ETK_OK, "warmup with beta1, beta3 > 0");
    a.beta1 = 0.0;
    CHECK(etk_rule_check(ETK_RULE_ADEMAMIX, &a, &err) == ETK_EHPARAM && strcmp(err.field, "t_alpha_beta3") == 0,
          "warmup needs beta1 > 0");
    a.t_alpha_beta3 = 0.0;
    CHECK(etk_rule_check(ETK_RULE_ADEMAMIX, &a, &err) == ETK_OK, "no warmup: beta1 = 0 is fine");
}

/* DoG: per-group scalars (etk_step_opts.group_state) for global groups,
 * scalar slots for layer_wise tensors; multi-block tensors of both dtypes,
 * the same bytes for every variant and thread count; a group with no
 * elements left alone; the plain formulas on small cases; refusals. */
enum { DG_NT = 6, DG_NG = 4 };
static const size_t dg_n[DG_NT] = {3 * 4096 + 77, 5, 2 * 4096 + 1, 0, 4096 + 3, 0};
static const uint32_t dg_group[DG_NT] = {0, 0, 1, 1, 2, 3};

typedef struct dog_run {
    double *d;                      /* f64: per tensor p, g, x0 */
    float *f;                       /* f32: the same */
    double sd[2][DG_NT][3];         /* per dtype and tensor: rbar, G, eta (layer_wise) */
    double gs[2][DG_NG * 3];        /* per dtype: the groups' rbar, G, eta */
} dog_run;

static void dog_steps(dog_run *r, size_t total)
{
    /* reps_rel, lr, weight_decay, eps, init_eta; layer_wise */
    etk_dog_hp h[DG_NG] = {{1e-3, 1.0, 0.01, 1e-8, NAN, 0}, {1e-6, 0.5, 0.0, 1e-8, 1e-3, 0},
                           {1e-4, 0.8, 0.01, 1e-6, NAN, 1}, {1e-6, 1.0, 0.0, 1e-8, NAN, 0}};
    etk_tensor td[DG_NT], tf[DG_NT];
    etk_step_opts od, of;
    size_t i, j, off = 0;
    int k;
    memset(r->sd, 0, sizeof r->sd);
    memset(r->gs, 0, sizeof r->gs);
    for (j = 0; j < total; j++) r->f[j] = (float)(r->d[j] = urand());
    for (i = 0; i < DG_NT; i++) {
        const size_t n = dg_n[i];
        memcpy(r->d + off + 2 * n, r->d + off, n * sizeof(double)); /* x0 = p */
        memcpy(r->f + off + 2 * n, r->f + off, n * sizeof(float));
        memset(&td[i], 0, sizeof td[i]);
        td[i].param = r->d + off, td[i].grad = r->d + off + n, td[i].state[0] = r->d + off + 2 * n;
        td[i].state[1] = &r->sd[0][i][0], td[i].state[2] = &r->sd[0][i][1], td[i].state[3] = &r->sd[0][i][2];
        td[i].n = n, td[i].group = dg_group[i], td[i].dtype = td[i].state_dtype = ETK_FLOAT64;
        tf[i] = td[i];
        tf[i].param = r->f + off, tf[i].grad = r->f + off + n, tf[i].state[0] = r->f + off + 2 * n;
        tf[i].state[1] = &r->sd[1][i][0], tf[i].state[2] = &r->sd[1][i][1], tf[i].state[3] = &r->sd[1][i][2];
        tf[i].dtype = tf[i].state_dtype = ETK_FLOAT32;
        off += 3 * n;
    }
    memset(&od, 0, sizeof od), memset(&of, 0, sizeof of);
    od.group_state = r->gs[0], of.group_state = r->gs[1];
    for (k = 1; k <= 5; k++) {
        for (i = 0, off = 0; i < DG_NT; i++) {
            const size_t n = dg_n[i];
            td[i].step = tf[i].step = k;
            for (j = 0; j < n; j++) { /* a new, noisy gradient of a quadratic */
                r->d[off + n + j] = urand() + 0.3 * r->d[off + j];
                r->f[off + n + j] = (float)(urand() + 0.3 * (double)r->f[off + j]);
            }
            off += 3 * n;
        }
        CHECK(etk_step(ETK_RULE_DOG, td, DG_NT, h, DG_NG, &od, NULL) == ETK_OK, "dog f64 step %d", k);
        CHECK(etk_step(ETK_RULE_DOG, tf, DG_NT, h, DG_NG, &of, NULL) == ETK_OK, "dog f32 step %d", k);
    }
}

static void test_dog(void)
{
    size_t total = 0, i;
    dog_run a, b;
    char variants[64], *name;
    unsigned long long seed = rng;
    int threads = etk_get_num_threads();
    for (i = 0; i < DG_NT; i++) total += 3 * dg_n[i];
    a.d = (double *)malloc(total * sizeof(double)), b.d = (double *)malloc(total * sizeof(double));
    a.f = (float *)malloc(total * sizeof(float)), b.f = (float *)malloc(total * sizeof(float));
    if (!a.d || !b.d || !a.f || !b.f) {
        CHECK(0, "out of memory");
        return;
    }
    CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline");
    etk_set_num_threads(1);
    dog_steps(&a, total);
    CHECK(a.gs[0][0] > 0.0 && a.gs[0][1] > 0.0 && a.gs[0][2] > 0.0, "group 0 has its rbar, G and eta");
    CHECK(a.gs[0][9] == 0.0 && a.gs[0][10] == 0.0 && a.gs[0][11] == 0.0, "a group without elements is left alone");
    CHECK(a.gs[0][6] == 0.0 && a.sd[0][4][1] > 0.0 && a.sd[0][3][1] == 0.0,
          "layer_wise: the tensor's scalars, not the group's; an empty tensor left alone");
    strncpy(variants, etk_simd_available(), sizeof variants - 1);
    variants[sizeof variants - 1] = 0;
    for (name = strtok(variants, " "); name; name = strtok(NULL, " ")) {
        int nth;
        for (nth = 1; nth <= 3; nth++) {
            CHECK(etk_set_simd_variant(name) == ETK_OK, "variant %s", name);
            etk_set_num_threads(nth);
            etk_set_parallel_min(4096); /* threads even on these sizes */
            rng = seed;
            dog_steps(&b, total);
            etk_set_parallel_min(0);
            CHECK(memcmp(a.d, b.d, total * sizeof(double)) == 0, "dog f64: variant %s, %d threads differ", name, nth);
            CHECK(same_floats(a.f, b.f, total), "dog f32: variant %s, %d threads differ", name, nth);
            CHECK(memcmp(a.gs, b.gs, sizeof a.gs) == 0 && memcmp(a.sd, b.sd, sizeof a.sd) == 0,
                  "dog scalars: variant %s, %d threads differ", name, nth);
        }
    }
    etk_set_num_threads(threads);
    CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline");
    free(a.d), free(b.d), free(a.f), free(b.f);

    {
        /* by hand: p = (3, 4), g = (1, 0), reps_rel 0.5, eps 0: rbar = 0.5 (1 + 5) = 3, G = 1, eta = 3;
         * then ||p - x0|| = 3, G = 2, eta = 3 / sqrt(2) */
        double p[2] = {3.0, 4.0}, g[2] = {1.0, 0.0}, x0[2] = {3.0, 4.0}, gs[3] = {0.0, 0.0, 0.0}, saved[3];
        etk_dog_hp h = {0.5, 1.0, 0.0, 0.0, NAN, 0}, bad;
        etk_tensor t;
        etk_step_opts o;
        etk_error err;
        memset(&t, 0, sizeof t), memset(&o, 0, sizeof o);
        t.param = p, t.grad = g, t.state[0] = x0, t.n = 2, t.step = 1, t.dtype = t.state_dtype = ETK_FLOAT64;
        o.group_state = gs;
        CHECK(etk_step(ETK_RULE_DOG, &t, 1, &h, 1, &o, NULL) == ETK_OK, "dog by hand, step 1");
        CHECK(p[0] == 0.0 && p[1] == 4.0 && gs[0] == 3.0 && gs[1] == 1.0 && gs[2] == 3.0, "step 1: %g %g %g %g %g",
              p[0], p[1], gs[0], gs[1], gs[2]);
        CHECK(etk_step(ETK_RULE_DOG, &t, 1, &h, 1, &o, NULL) == ETK_OK, "dog by hand, step 2");
        CHECK(p[0] == -3.0 / sqrt(2.0) && gs[0] == 3.0 && gs[1] == 2.0 && gs[2] == 3.0 / sqrt(2.0), "step 2: %.17g",
              p[0]);
        /* refused: nothing written, group scalars included */
        memcpy(saved, gs, sizeof saved);
        bad = h, bad.lr = -1.0;
        CHECK(etk_step(ETK_RULE_DOG, &t, 1, &bad, 1, &o, &err) == ETK_EHPARAM && strcmp(err.field, "lr") == 0,
              "negative lr");
        bad = h, bad.reps_rel = 0.0;
        CHECK(etk_step(ETK_RULE_DOG, &t, 1, &bad, 1, &o, &err) == ETK_EHPARAM && strcmp(err.field, "reps_rel") == 0,
              "reps_rel 0 without init_eta");
        bad.init_eta = 0.0;
        CHECK(etk_step(ETK_RULE_DOG, &t, 1, &bad, 1, &o, &err) == ETK_EHPARAM && strcmp(err.field, "init_eta") == 0,
              "init_eta must be > 0");
        bad.init_eta = 0.1;
        CHECK(etk_rule_check(ETK_RULE_DOG, &bad, &err) == ETK_OK, "reps_rel 0 with init_eta");
        CHECK(memcmp(saved, gs, sizeof saved) == 0 && p[0] == -3.0 / sqrt(2.0), "a refused step wrote");
        CHECK(etk_dog_multi(&t, 1, &h, 1) == ETK_EARG && etk_step(ETK_RULE_DOG, &t, 1, &h, 1, NULL, &err) == ETK_EARG &&
                  strstr(err.message, "group_state") != NULL,
              "global DoG needs group_state");
        /* eps = 0 and a zero gradient: eta = 0, nothing moves, the next step is a first step again */
        gs[0] = gs[1] = gs[2] = 0.0, g[0] = 0.0;
        memcpy(x0, p, sizeof x0);
        CHECK(etk_step(ETK_RULE_DOG, &t, 1, &h, 1, &o, NULL) == ETK_OK && gs[1] == 0.0 && gs[2] == 0.0 &&
                  p[0] == x0[0] && gs[0] == 0.5 * (1.0 + sqrt(x0[0] * x0[0] + 16.0)),
              "G == 0: eta 0");
        /* init_eta: the first step's eta, lr not applied; rbar starts at 0 */
        gs[0] = gs[1] = gs[2] = 0.0, g[0] = 1.0, h.init_eta = 0.25, h.lr = 0.5;
        CHECK(etk_step(ETK_RULE_DOG, &t, 1, &h, 1, &o, NULL) == ETK_OK && gs[0] == 0.0 && gs[2] == 0.25 &&
                  p[0] == x0[0] - 0.25,
              "init_eta: %g %g", gs[0], gs[2]);
    }
}

/* Schedule-free rules: the step's group scalars (k, lr_max, weight_sum,
 * scheduled_lr) by hand on a first SGD step; the side phases (eval, train)
 * run without gradients, only when named alone, only on the groups not yet
 * in the target mode; steps and switches byte-identical for 1, 2 and 3
 * threads and every SIMD variant. */
static void sf_fill(float **bufs, etk_tensor *ts)
{
    size_t i, j;
    for (i = 0; i < NT; i++) {
        const size_t n = sizes[i];
        float *b = bufs[i];
        memset(&ts[i], 0, sizeof ts[i]);
        for (j = 0; j < n; j++) b[j] = (float)urand();      /* y */
        for (j = 0; j < n; j++) b[2 * n + j] = b[j];        /* z starts at y */
        for (j = 3 * n; j < 4 * n; j++) b[j] = 0.0f;        /* exp_avg_sq */
        ts[i].param = b, ts[i].grad = b + n, ts[i].state[0] = b + 2 * n, ts[i].state[1] = b + 3 * n;
        ts[i].n = n, ts[i].step = 1, ts[i].group = (uint32_t)(i % 2);
        ts[i].dtype = ts[i].state_dtype = ETK_FLOAT32;
    }
}

static void sf_run(float **bufs, etk_tensor *ts, double *gs)
{
    etk_schedulefree_adamw_hp h[2] = {{1e-2, 0.9, 0.999, 1e-8, 0.1, 0.5, 2.0, 3},
                                      {5e-3, 0.5, 0.99, 1e-6, 0.0, 0.0, 1.0, 0}};
    etk_step_opts o;
    int k, m;
    size_t i, j;
    memset(&o, 0, sizeof o);
    o.group_state = gs;
    for (m = 0; m < 2; m++) {
        gs[5 * m + 0] = 0.0, gs[5 * m + 1] = -1.0, gs[5 * m + 2] = 0.0, gs[5 * m + 3] = 0.0, gs[5 * m + 4] = 1.0;
    }
    for (k = 0; k < 8; k++) {
        for (i = 0; i < NT; i++)
            for (j = 0; j < sizes[i]; j++) bufs[i][sizes[i] + j] = (float)urand(); /* a new grad */
        o.phases = 0;
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_ADAMW, ts, NT, h, 2, &o, NULL) == ETK_OK, "sf step %d", k);
        if (k == 4 || k == 6) {
            o.phases = 1u << 1; /* eval, then train */
            CHECK(etk_step(ETK_RULE_SCHEDULEFREE_ADAMW, ts, NT, h, 2, &o, NULL) == ETK_OK, "sf eval");
            o.phases = 1u << 2;
            CHECK(etk_step(ETK_RULE_SCHEDULEFREE_ADAMW, ts, NT, h, 2, &o, NULL) == ETK_OK, "sf train");
        }
    }
    o.phases = 1u << 1;
    CHECK(etk_step(ETK_RULE_SCHEDULEFREE_ADAMW, ts, NT, h, 2, &o, NULL) == ETK_OK, "sf final eval");
}

static void test_schedulefree(void)
{
    /* one SGD step by hand: ckp1 = 1, so y = z = y0 - lr g */
    {
        double y[2] = {1.0, -2.0}, g[2] = {0.5, 1.0}, z[2] = {1.0, -2.0}, gs[5] = {0.0, -1.0, 0.0, 0.0, 1.0};
        double y0[2];
        etk_schedulefree_sgd_hp h = {0.4, 0.9, 0.0, 0.0, 2.0, 4};
        etk_tensor t;
        etk_step_opts o;
        etk_error err;
        memset(&t, 0, sizeof t);
        memset(&o, 0, sizeof o);
        t.param = y, t.grad = g, t.state[0] = z, t.n = 2, t.step = 1, t.dtype = t.state_dtype = ETK_FLOAT64;
        o.group_state = gs;
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_SGD, &t, 1, &h, 1, NULL, &err) == ETK_EARG, "group state required");
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_SGD, &t, 1, &h, 1, &o, &err) == ETK_OK, "sf sgd step");
        /* warmup 1/4: lr_t = 0.1; weight = 1 * 0.1^2 */
        CHECK(y[0] == 1.0 - 0.1 * 0.5 && z[0] == y[0] && y[1] == -2.0 - 0.1 && z[1] == y[1], "first step");
        CHECK(gs[0] == 1.0 && gs[1] == 0.1 && gs[2] == pow(0.1, 2.0) && gs[3] == 0.1 && gs[4] == 1.0,
              "group scalars after a step");
        /* side phases: without a gradient, and only named alone */
        t.grad = NULL;
        o.phases = 1u;
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_SGD, &t, 1, &h, 1, &o, &err) == ETK_EARG, "a step needs grad");
        o.phases = 1u | 1u << 1;
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_SGD, &t, 1, &h, 1, &o, &err) == ETK_EARG,
              "with a step phase, the side phase bit is ignored: still a step, which needs grad");
        CHECK(gs[0] == 1.0 && y[0] == z[0], "refused calls wrote nothing");
        y[0] = 3.0, y[1] = 5.0; /* y apart from z: the switch moves it */
        memcpy(y0, y, sizeof y);
        o.phases = 1u << 2; /* train: the group is in train mode already */
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_SGD, &t, 1, &h, 1, &o, &err) == ETK_OK && y[0] == y0[0], "no-op train");
        o.phases = 1u << 1; /* eval: x = (y - (1 - m) z) / m */
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_SGD, &t, 1, &h, 1, &o, &err) == ETK_OK && gs[4] == 0.0, "eval");
        CHECK(fabs(y[0] - (y0[0] - 0.1 * z[0]) / 0.9) < 1e-12 && fabs(y[1] - (y0[1] - 0.1 * z[1]) / 0.9) < 1e-12,
              "eval gives x");
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_SGD, &t, 1, &h, 1, &o, &err) == ETK_OK &&
                  fabs(y[0] - (y0[0] - 0.1 * z[0]) / 0.9) < 1e-12, "a second eval is a no-op");
        o.phases = 1u << 2;
        CHECK(etk_step(ETK_RULE_SCHEDULEFREE_SGD, &t, 1, &h, 1, &o, &err) == ETK_OK && gs[4] == 1.0, "train");
        CHECK(fabs(y[0] - y0[0]) < 1e-12 && fabs(y[1] - y0[1]) < 1e-12 && gs[0] == 1.0, "train gives y back");
    }
    /* threads and variants */
    {
        float *a[NT], *b[NT];
        etk_tensor ta[NT], tb[NT];
        double ga[10], gb[10];
        size_t i;
        char variants[64], *name;
        unsigned long long seed = rng;
        int threads = etk_get_num_threads();
        for (i = 0; i < NT; i++) {
            a[i] = (float *)malloc(4 * sizes[i] * sizeof(float) + 1);
            b[i] = (float *)malloc(4 * sizes[i] * sizeof(float) + 1);
        }
        strncpy(variants, etk_simd_available(), sizeof variants - 1);
        variants[sizeof variants - 1] = 0;
        CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline always available");
        etk_set_num_threads(1);
        rng = seed;
        sf_fill(a, ta);
        sf_run(a, ta, ga);
        CHECK(ga[0] == 8.0 && ga[5] == 8.0 && ga[4] == 0.0 && ga[9] == 0.0, "8 steps, eval mode at the end");
        for (name = strtok(variants, " "); name; name = strtok(NULL, " ")) {
            int nth;
            for (nth = 1; nth <= 3; nth++) {
                CHECK(etk_set_simd_variant(name) == ETK_OK, "variant %s", name);
                etk_set_num_threads(nth);
                rng = seed;
                sf_fill(b, tb);
                sf_run(b, tb, gb);
                CHECK(memcmp(ga, gb, sizeof ga) == 0, "schedulefree group state: variant %s, %d threads", name, nth);
                for (i = 0; i < NT; i++)
                    CHECK(same_floats(a[i], b[i], 4 * sizes[i]),
                          "schedulefree: variant %s with %d threads differs from baseline in tensor %zu", name, nth, i);
            }
        }
        etk_set_num_threads(threads);
        for (i = 0; i < NT; i++) {
            free(a[i]);
            free(b[i]);
        }
    }
}

/* Rules whose step size is shared by every group (Prodigy, D-Adaptation):
 * multi-block tensors in two groups, a strided state (Prodigy's slice_p
 * differs between the groups), several steps; the parameters, states and
 * per-group scalars are byte-identical for 1, 2 and 3 threads and every
 * SIMD variant.  The cross-group checks, the +inf growth_rate, and the
 * single-tensor entry points (no group state: refused). */
enum { SH_NT = 3, SH_SLOTS = 4 };
static const size_t sh_n[SH_NT] = {3 * 4096 + 77, 5, 2 * 4096 + 9};

typedef struct sh_run {
    double *d;
    float *f;
    double gs[2 * 6], gsf[2 * 6]; /* the per-group scalars of the float64 and float32 runs */
} sh_run;

static void sh_fill(sh_run *r, etk_tensor *td, etk_tensor *tf, int rule)
{
    size_t i, j, off = 0;
    for (i = 0; i < SH_NT; i++) {
        const size_t n = sh_n[i];
        for (j = 0; j < 2 * n; j++) r->d[off + j] = urand();
        for (j = 2 * n; j < (2 + SH_SLOTS) * n; j++) r->d[off + j] = 0.0;
        memset(&td[i], 0, sizeof td[i]);
        td[i].param = r->d + off, td[i].grad = r->d + off + n;
        for (j = 0; j < SH_SLOTS; j++) td[i].state[j] = r->d + off + (2 + j) * n;
        td[i].n = n, td[i].step = 1, td[i].group = (uint32_t)(i == 2), td[i].dtype = td[i].state_dtype = ETK_FLOAT64;
        tf[i] = td[i];
        tf[i].param = r->f + off, tf[i].grad = r->f + off + n;
        for (j = 0; j < SH_SLOTS; j++) tf[i].state[j] = r->f + off + (2 + j) * n;
        tf[i].dtype = tf[i].state_dtype = ETK_FLOAT32;
        /* the slots that start as a copy of the parameter (p0, x0, z) or at 1e-6 (alphak) */
        for (j = 0; j < n; j++) {
            double *p = r->d + off;
            if (rule == ETK_RULE_PRODIGY) r->d[off + 3 * n + j] = p[j]; /* p0: filled densely, read strided */
            if (rule == ETK_RULE_DADAPT_SGD) r->d[off + 2 * n + j] = r->d[off + 4 * n + j] = p[j];
            if (rule == ETK_RULE_DADAPT_ADAGRAD) r->d[off + 2 * n + j] = 1e-6, r->d[off + 4 * n + j] = p[j];
        }
        for (j = 0; j < (2 + SH_SLOTS) * n; j++) r->f[off + j] = (float)r->d[off + j];
        off += (2 + SH_SLOTS) * n;
    }
    if (rule == ETK_RULE_PRODIGY) /* p0 of every third element for group 1 */
        for (j = 0; j < (sh_n[2] + 2) / 3; j++) {
            double *base = r->d + (2 + SH_SLOTS) * (sh_n[0] + sh_n[1]);
            base[3 * sh_n[2] + j] = base[3 * j];
            ((float *)tf[2].state[1])[j] = (float)base[3 * j];
        }
}

static void sh_steps(sh_run *r, etk_tensor *td, etk_tensor *tf, int rule)
{
    etk_prodigy_hp pd[2] = {{1.0, 0.9, 0.999, NAN, 1e-8, 0.01, 1e-6, 1.0, INFINITY, 0, 1, 0, 1},
                            {1.0, 0.9, 0.999, NAN, 1e-6, 0.0, 2e-6, 1.0, INFINITY, 0, 1, 1, 3}};
    etk_dadapt_adam_hp da[2] = {{1.0, 0.9, 0.999, 1e-8, 0.01, 1.05, 1.0, 1, 1}, {0.0, 0.9, 0.999, 1e-6, 0.0, 1.05, 0.5, 1, 1}};
    etk_dadapt_sgd_hp ds[2] = {{1.0, 0.5, 0.01, INFINITY}, {1.0, 0.5, 0.01, INFINITY}};
    etk_dadapt_adagrad_hp dg[2] = {{1.0, 0.5, 0.01, 1e-6, 1.1}, {1.0, 0.5, 0.0, 1e-3, 1.1}};
    const void *hps = rule == ETK_RULE_PRODIGY ? (const void *)pd : rule == ETK_RULE_DADAPT_ADAM ? (const void *)da
                      : rule == ETK_RULE_DADAPT_SGD ? (const void *)ds : (const void *)dg;
    const size_t ngs = rule == ETK_RULE_PRODIGY ? 6 : rule == ETK_RULE_DADAPT_ADAM ? 3 : rule == ETK_RULE_DADAPT_SGD ? 4 : 5;
    etk_step_opts o;
    etk_error err;
    int k;
    size_t i;
    memset(&o, 0, sizeof o);
    memset(r->gs, 0, sizeof r->gs);
    for (i = 0; i < 2; i++) {
        r->gs[i * ngs] = 1e-6;                                   /* d */
        if (rule == ETK_RULE_PRODIGY) r->gs[i * ngs + 1] = 1e-6; /* d_max */
    }
    memcpy(r->gsf, r->gs, sizeof r->gs);
    for (k = 1; k <= 6; k++) {
        o.group_state = r->gs;
        CHECK(etk_step(rule, td, SH_NT, hps, 2, &o, &err) == ETK_OK, "rule %d f64: %s", rule,
              err.message ? err.message : "");
        o.group_state = r->gsf;
        CHECK(etk_step(rule, tf, SH_NT, hps, 2, &o, &err) == ETK_OK, "rule %d f32: %s", rule,
              err.message ? err.message : "");
    }
    CHECK(r->gs[0] > 1e-6 && r->gsf[0] > 1e-6, "rule %d: d grew (%g, %g)", rule, r->gs[0], r->gsf[0]);
    CHECK(r->gs[0] == r->gs[ngs] && r->gsf[0] == r->gsf[ngs], "rule %d: one d for both groups", rule);
}

static void test_shared_step_size_rules(void)
{
    static const int rules[4] = {ETK_RULE_PRODIGY, ETK_RULE_DADAPT_ADAM, ETK_RULE_DADAPT_SGD,
                                 ETK_RULE_DADAPT_ADAGRAD};
    size_t total = 0, i;
    sh_run a, b;
    etk_tensor td[SH_NT], tf[SH_NT];
    char variants[64], *name;
    int threads = etk_get_num_threads(), ri;
    for (i = 0; i < SH_NT; i++) total += (2 + SH_SLOTS) * sh_n[i];
    a.d = (double *)malloc(total * sizeof(double)), b.d = (double *)malloc(total * sizeof(double));
    a.f = (float *)malloc(total * sizeof(float)), b.f = (float *)malloc(total * sizeof(float));
    if (!a.d || !b.d || !a.f || !b.f) {
        CHECK(0, "out of memory");
        return;
    }
    for (ri = 0; ri < 4; ri++) {
        const int rule = rules[ri];
        unsigned long long seed = rng;
        CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline");
        etk_set_num_threads(1);
        sh_fill(&a, td, tf, rule);
        sh_steps(&a, td, tf, rule);
        strncpy(variants, etk_simd_available(), sizeof variants - 1);
        variants[sizeof variants - 1] = 0;
        for (name = strtok(variants, " "); name; name = strtok(NULL, " ")) {
            int nth;
            for (nth = 1; nth <= 3; nth++) {
                CHECK(etk_set_simd_variant(name) == ETK_OK, "variant %s", name);
                etk_set_num_threads(nth);
                etk_set_parallel_min(4096); /* threads even on these sizes */
                rng = seed;
                sh_fill(&b, td, tf, rule);
                sh_steps(&b, td, tf, rule);
                etk_set_parallel_min(0);
                CHECK(memcmp(a.d, b.d, total * sizeof(double)) == 0, "rule %d f64: %s, %d threads differ", rule,
                      name, nth);
                CHECK(same_floats(a.f, b.f, total), "rule %d f32: %s, %d threads differ", rule, name, nth);
                CHECK(memcmp(a.gs, b.gs, sizeof a.gs) == 0 && memcmp(a.gsf, b.gsf, sizeof a.gsf) == 0,
                      "rule %d group state: %s, %d threads differ", rule, name, nth);
            }
        }
    }
    etk_set_num_threads(threads);
    CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline");
    {
        etk_prodigy_hp h[2] = {{1.0, 0.9, 0.999, NAN, 1e-8, 0.0, 1e-6, 1.0, INFINITY, 1, 0, 0, 1},
                               {0.5, 0.9, 0.999, NAN, 1e-8, 0.0, 1e-6, 1.0, INFINITY, 1, 0, 0, 1}};
        etk_error err;
        double p[3] = {1, 2, 3}, g[3] = {1, 1, 1}, s[3] = {0}, p0[3] = {1, 2, 3}, m[3] = {0}, v[3] = {0};
        void *st[4];
        st[0] = s, st[1] = p0, st[2] = m, st[3] = v;
        CHECK(etk_rule_check(ETK_RULE_PRODIGY, &h[0], &err) == ETK_OK, "growth_rate inf is in range");
        CHECK(etk_rule_check_groups(ETK_RULE_PRODIGY, h, 2, &err) == ETK_EHPARAM && err.group == 1 &&
                  strcmp(err.field, "lr") == 0,
              "a group lr neither the largest nor 0");
        h[1].lr = 0.0;
        CHECK(etk_rule_check_groups(ETK_RULE_PRODIGY, h, 2, &err) == ETK_OK, "a group with lr 0");
        h[1].beta2 = 0.99;
        CHECK(etk_rule_check_groups(ETK_RULE_PRODIGY, h, 2, &err) == ETK_EHPARAM && strcmp(err.field, "beta2") == 0,
              "betas are shared");
        h[0].growth_rate = NAN;
        CHECK(etk_rule_check(ETK_RULE_PRODIGY, &h[0], &err) == ETK_EHPARAM, "growth_rate NaN");
        h[0].growth_rate = -INFINITY;
        CHECK(etk_rule_check(ETK_RULE_PRODIGY, &h[0], &err) == ETK_EHPARAM, "growth_rate -inf");
        h[0].growth_rate = INFINITY;
        CHECK(etk_prodigy_f64(p, g, st, 3, &h[0], 1) == ETK_EARG && p[0] == 1.0,
              "the single-tensor entry point has no group state: refused, nothing written");
    }
    free(a.d), free(b.d), free(a.f), free(b.f);
}

/* ---- low-precision state ---------------------------------------------- */
static uint16_t bf16_rne_scalar(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* the q8 maps and their nearest-code search against a brute-force search */
static void test_lowp_codecs(void)
{
    enum { N = 3000 };
    static float x[N], dec[N], absmax[(N + ETK_QBLOCK - 1) / ETK_QBLOCK];
    static uint8_t codes[N];
    static uint16_t b16[N], b16b[N];
    float map[256];
    int sg, i, c;
    for (sg = 0; sg < 2; sg++) {
        etk_q8_map(sg, map);
        for (i = 1; i < 256; i++) CHECK(map[i] > map[i - 1], "map %d not increasing at %d", sg, i);
        CHECK(map[255] == 1.0f, "map ends at 1");
        for (i = 0; i < N; i++) {
            double u = urand();
            /* magnitudes over many decades, exact map values, midpoints and zeros */
            x[i] = (float)(u * pow(10.0, -7.0 * fabs(urand())));
            if (i % 7 == 0) x[i] = map[(unsigned)(i / 7) % 256];
            if (i % 11 == 0) x[i] = (float)(((double)map[(unsigned)(i / 11) % 255] + map[(unsigned)(i / 11) % 255 + 1]) / 2);
            if (!sg) x[i] = fabsf(x[i]);
            if (i % 97 == 0) x[i] = 0.0f;
        }
        x[5] = 1.0f; /* a block whose absmax is its own element */
        etk_q8_encode(x, codes, absmax, N, sg);
        for (i = 0; i < N; i++) {
            float m = absmax[i / ETK_QBLOCK], inv = m == 0.0f ? 0.0f : 1.0f / m, xn = x[i] * inv;
            int best = 0;
            double bd = fabs((double)xn - map[0]);
            for (c = 1; c < 256; c++) {
                double d = fabs((double)xn - map[c]);
                if (d < bd) bd = d, best = c; /* ties: the lower code */
            }
            if (!sg && best == 0 && x[i] > 0.0f) best = 1; /* a positive second moment never rounds to 0 */
            CHECK(codes[i] == best, "map %d element %d (%g): code %d, nearest %d", sg, i, (double)xn, codes[i], best);
        }
        etk_q8_decode(codes, absmax, dec, N, sg);
        for (i = 0; i < N; i++) CHECK(dec[i] == map[codes[i]] * absmax[i / ETK_QBLOCK], "decode %d", i);
    }
    for (i = 0; i < N; i++) x[i] = (float)(urand() * 1e3);
    etk_bf16_encode(x, b16, N, 0, 0, 1, 0, 0);
    for (i = 0; i < N; i++) CHECK(b16[i] == bf16_rne_scalar(x[i]), "bf16 rne %d", i);
    etk_bf16_decode(b16, dec, N);
    for (i = 0; i < N; i++) CHECK(bf16_rne_scalar(dec[i]) == b16[i], "bf16 round trip %d", i);
    /* stochastic: one of the two neighbours; a run split in two gives the same bits */
    etk_bf16_encode(x, b16, N, 1, 42, 7, 1, 100);
    etk_bf16_encode(x, b16b, 1000, 1, 42, 7, 1, 100);
    etk_bf16_encode(x + 1000, b16b + 1000, N - 1000, 1, 42, 7, 1, 1100);
    for (i = 0; i < N; i++) {
        uint32_t u;
        memcpy(&u, &x[i], 4);
        CHECK(b16[i] == (uint16_t)(u >> 16) || b16[i] == (uint16_t)((u >> 16) + 1), "sr %d", i);
        CHECK(b16[i] == b16b[i], "sr split %d", i);
    }
}

/* The codec loops of every SIMD variant agree with the baseline's bit for bit:
 * special values (NaN, infinities, zeros, subnormals, the map's values and
 * midpoints), every bucket of the 8-bit search (random bits of magnitude <= 1
 * in blocks whose scale is 1), and lengths that leave vector tails. */
static void test_lowp_variants(void)
{
    enum { N = 4096 + 333, NB = (N + ETK_QBLOCK - 1) / ETK_QBLOCK };
    static float x[N], d0[N], d1[N], a0[NB], a1[NB];
    static uint16_t h0[N], h1[N];
    static uint8_t c0[N], c1[N];
    const char *variants[4] = {"baseline", "avx2", "avx512", "avx512vbmi"};
    const char *saved = etk_simd_variant();
    const uint32_t special[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0x7fbfffffu, 0x7f800000u, 0xff800000u, 0u,
                                0x80000000u, 1u,          0x80000001u, 0x007fffffu, 0x00800000u, 0x3f800000u,
                                0xbf800000u, 0x3f800001u, 0x7f7fffffu, 0xff7fffffu, 0x33ffffffu, 0x34000000u,
                                0x3f7fffffu, 0x3f808000u, 0x3f7f8000u, 0x3f7f7fffu, 0x3f7f8001u};
    float map[256];
    size_t lens[] = {N, 1, 15, 16, 17, 255, 257, 1000};
    int vi, sg, li, i, b;
    etk_q8_map(1, map);
    for (i = 0; i < N; i++) {
        uint32_t u = (uint32_t)(rng >> 20);
        float f;
        (void)urand();
        b = i / ETK_QBLOCK;
        if (b % 4 == 0) u &= 0xbfffffffu; /* magnitudes up to 2: every bucket, and the clamped ones */
        if (b % 4 == 1) u = (u & 0x80000000u) | (u % 0x3f800001u);
        memcpy(&f, &u, 4);
        if (b % 4 == 2) f = (float)(urand() * pow(10.0, -9.0 * fabs(urand())));
        if (b % 4 == 3) f = i % 2 ? map[(unsigned)i % 256] : (float)(((double)map[(unsigned)i % 255] + map[(unsigned)i % 255 + 1]) / 2);
        if (i % ETK_QBLOCK == 7 && b % 4 == 1) f = 1.0f;
        if (i % 37 == 0 && b % 8 == 0) memcpy(&f, &special[(unsigned)(i / 37) % (sizeof special / sizeof special[0])], 4);
        x[i] = f;
    }
    for (li = 0; li < (int)(sizeof lens / sizeof lens[0]); li++) {
        const size_t n = lens[li];
        CHECK(etk_set_simd_variant("baseline") == ETK_OK, "baseline");
        for (sg = 0; sg < 2; sg++) {
            etk_q8_encode(x, c0 + sg * 0, a0, n, sg);
            etk_q8_decode(c0, a0, d0, n, sg);
            for (vi = 1; vi < 4; vi++) {
                if (etk_set_simd_variant(variants[vi]) != ETK_OK) continue;
                memset(c1, 0xAA, sizeof c1);
                etk_q8_encode(x, c1, a1, n, sg);
                etk_q8_decode(c0, a0, d1, n, sg);
                CHECK(!memcmp(c0, c1, n) && c1[n < N ? n : N - 1] == (n < N ? 0xAA : c1[N - 1]), "q8 codes %s %d %zu",
                      variants[vi], sg, n);
                CHECK(!memcmp(a0, a1, (n + ETK_QBLOCK - 1) / ETK_QBLOCK * sizeof(float)), "q8 scales %s %d %zu",
                      variants[vi], sg, n);
                CHECK(!memcmp(d0, d1, n * sizeof(float)), "q8 decode %s %d %zu", variants[vi], sg, n);
                etk_set_simd_variant("baseline");
            }
        }
        for (sg = 0; sg < 2; sg++) {
            etk_bf16_encode(x, h0, n, sg, 42, 7, 1, (size_t)0xFFFFFF00u + (size_t)li);
            etk_bf16_decode(h0, d0, n);
            for (vi = 1; vi < 4; vi++) {
                if (etk_set_simd_variant(variants[vi]) != ETK_OK) continue;
                memset(h1, 0xAA, sizeof h1);
                etk_bf16_encode(x, h1, n, sg, 42, 7, 1, (size_t)0xFFFFFF00u + (size_t)li);
                etk_bf16_decode(h0, d1, n);
                CHECK(!memcmp(h0, h1, n * 2) && (n == N || h1[n] == 0xAAAA), "bf16 %s sr %d %zu", variants[vi], sg, n);
                CHECK(!memcmp(d0, d1, n * sizeof(float)), "bf16 decode %s %zu", variants[vi], n);
                etk_set_simd_variant("baseline");
            }
        }
    }
    etk_set_simd_variant(saved);
}

/* bfloat16 parameters: decode, the float32 step, then rounding to nearest,
 * stochastic rounding (stream slot ETK_PARAM_SR_SLOT) or Kahan summation,
 * with float32 and bfloat16 state, over threads and variants; refusals. */
static float bf16f(uint16_t h)
{
    union { uint32_t u; float f; } x;
    x.u = (uint32_t)h << 16;
    return x.f;
}
static void test_bf16_params(void)
{
    enum { N = 20000, STEPS = 6 };
    static uint16_t g[STEPS][N], p0[N], pr[N], p[N], cr[N], c[N], m16[N], v16[N], m16r[N], v16r[N], pre[N];
    static float pf[N], gf[N], mf[N], vf[N], mfr[N], vfr[N];
    etk_adam_hp h = {1e-3, 0.9, 0.999, 1e-8, 0.01, 0, 0, 1};
    const char *variants[4] = {"baseline", "avx2", "avx512", "avx512vbmi"};
    const char *saved = etk_simd_variant();
    int mode, sdt, th, vi, i, k, clip, saved_threads = etk_get_num_threads();
    etk_tensor t;
    etk_error err;
    etk_step_opts o;
    for (i = 0; i < N; i++) pf[i] = (float)(1.0 + urand());
    etk_bf16_encode(pf, p0, N, 0, 0, 0, 0, 0);
    for (k = 0; k < STEPS; k++) {
        for (i = 0; i < N; i++) gf[i] = (float)urand();
        etk_bf16_encode(gf, g[k], N, 0, 0, 0, 0, 0);
    }
    for (clip = 0; clip < 2; clip++)
        for (sdt = 0; sdt < 2; sdt++)
            for (mode = 0; mode < 3; mode++) {
                memset(&o, 0, sizeof o);
                o.max_grad_norm = clip ? 1.0 : 0.0;
                /* the reference: decode, float32 step, write back */
                memcpy(pr, p0, sizeof pr);
                memset(cr, 0, sizeof cr), memset(mfr, 0, sizeof mfr), memset(vfr, 0, sizeof vfr);
                memset(m16r, 0, sizeof m16r), memset(v16r, 0, sizeof v16r);
                for (k = 1; k <= STEPS; k++) {
                    void *st[3] = {sdt ? mf : mfr, sdt ? vf : vfr, NULL};
                    double norm = 0.0;
                    etk_bf16_decode(pr, pf, N);
                    etk_bf16_decode(g[k - 1], gf, N);
                    if (clip) {
                        etk_tensor q;
                        memset(&q, 0, sizeof q);
                        q.grad = gf, q.n = N, q.dtype = ETK_FLOAT32;
                        CHECK(etk_grad_norm(&q, 1, 0, &norm, NULL) == ETK_OK, "norm");
                        if (1.0 / (norm + 1e-6) < 1.0) /* Adam folds the factor into its gsign: same bits */
                            for (i = 0; i < N; i++) gf[i] = gf[i] * (float)(1.0 / (norm + 1e-6));
                    }
                    if (sdt) etk_bf16_decode(m16r, mf, N), etk_bf16_decode(v16r, vf, N);
                    memcpy(pre, pr, sizeof pre);
                    CHECK(etk_adam_f32(pf, gf, st, N, &h, k) == ETK_OK, "f32 step");
                    if (sdt) etk_bf16_encode(mf, m16r, N, 0, 0, k, 0, 0), etk_bf16_encode(vf, v16r, N, 0, 0, k, 1, 0);
                    if (mode == 0) etk_bf16_encode(pf, pr, N, 0, 0, 0, 0, 0);
                    else if (mode == 1) etk_bf16_encode(pf, pr, N, 1, 5, k, 7, 0);
                    else
                        for (i = 0; i < N; i++) {
                            float old = bf16f(pre[i]), y = (pf[i] - old) + bf16f(cr[i]);
                            uint16_t q16;
                            etk_bf16_encode(&(float){old + y}, &q16, 1, 0, 0, 0, 0, 0);
                            etk_bf16_encode(&(float){y - (bf16f(q16) - old)}, &cr[i], 1, 0, 0, 0, 0, 0);
                            pr[i] = q16;
                        }
                }
                for (vi = 0; vi < 4; vi++) {
                    if (etk_set_simd_variant(variants[vi]) != ETK_OK) continue;
                    for (th = 1; th <= 3; th++) {
                        etk_set_num_threads(th);
                        etk_set_parallel_min(4096); /* threads even on this size */
                        memcpy(p, p0, sizeof p);
                        memset(c, 0, sizeof c), memset(mf, 0, sizeof mf), memset(vf, 0, sizeof vf);
                        memset(m16, 0, sizeof m16), memset(v16, 0, sizeof v16);
                        for (k = 1; k <= STEPS; k++) {
                            memset(&t, 0, sizeof t);
                            t.param = p, t.grad = g[k - 1], t.n = N, t.step = k, t.seed = 5;
                            t.flags = k == 1 ? (uint16_t)((1u << ETK_MAX_SLOTS) - 1u) : 0u; /* as etk_adam_f32 */
                            t.dtype = ETK_BFLOAT16;
                            t.state_dtype = sdt ? ETK_BFLOAT16 : ETK_FLOAT32;
                            if (sdt) t.state[0] = m16, t.state[1] = v16;
                            else t.state[0] = mf, t.state[1] = vf;
                            t.param_stochastic = mode == 1;
                            t.comp = mode == 2 ? c : NULL;
                            CHECK(etk_step(ETK_RULE_ADAM, &t, 1, &h, 1, &o, NULL) == ETK_OK, "bf16 param step");
                        }
                        etk_set_parallel_min(0);
                        CHECK(memcmp(p, pr, sizeof p) == 0, "bf16 params: clip %d state %d mode %d %s %d threads",
                              clip, sdt, mode, variants[vi], th);
                        CHECK(mode != 2 || memcmp(c, cr, sizeof c) == 0, "kahan comp %s %d", variants[vi], th);
                        CHECK(!sdt || (!memcmp(m16, m16r, sizeof m16) && !memcmp(v16, v16r, sizeof v16)),
                              "bf16 state with bf16 params");
                        for (i = 0; !sdt && i < N && mf[i] == mfr[i] && vf[i] == vfr[i]; i++) continue;
                        CHECK(sdt || i == N, "f32 state with bf16 params at %d: %.9g %.9g / %.9g %.9g", i, (double)mf[i % N],
                              (double)mfr[i % N], (double)vf[i % N], (double)vfr[i % N]);
                    }
                }
            }
    etk_set_num_threads(saved_threads);
    etk_set_simd_variant(saved);
    /* Kahan keeps updates below half an ulp of bfloat16: 1 + 1000 * 1e-4 */
    {
        uint16_t one, q, comp = 0, gz = 0;
        etk_sgd_hp sh = {1e-4, 0.0, 0.0, 0.0, 0, 1}; /* maximize: p += lr * g */
        float f1 = 1.0f, gv = 1.0f;
        etk_bf16_encode(&f1, &one, 1, 0, 0, 0, 0, 0);
        etk_bf16_encode(&gv, &gz, 1, 0, 0, 0, 0, 0);
        for (mode = 0; mode < 2; mode++) {
            q = one, comp = 0;
            for (k = 1; k <= 1000; k++) {
                memset(&t, 0, sizeof t);
                t.param = &q, t.grad = &gz, t.n = 1, t.step = k, t.dtype = ETK_BFLOAT16, t.state_dtype = ETK_FLOAT32;
                t.comp = mode ? &comp : NULL;
                CHECK(etk_step(ETK_RULE_SGD, &t, 1, &sh, 1, NULL, NULL) == ETK_OK, "sgd bf16");
            }
            if (mode)
                CHECK(fabs(bf16f(q) + bf16f(comp) - 1.1) < 0.5 * 0.0078125, "kahan: %g + %g", (double)bf16f(q), (double)bf16f(comp));
            else
                CHECK(bf16f(q) == 1.0f, "nearest rounding loses the updates: %g", (double)bf16f(q));
        }
    }
    /* refusals, nothing written */
    memcpy(p, p0, sizeof p);
    memset(&t, 0, sizeof t);
    t.param = p, t.grad = g[0], t.n = N, t.step = 1, t.dtype = ETK_BFLOAT16, t.state_dtype = ETK_FLOAT32;
    t.state[0] = mf, t.state[1] = vf;
    t.ema = c;
    memset(&o, 0, sizeof o);
    o.ema_weight = 0.5;
    CHECK(etk_step(ETK_RULE_ADAM, &t, 1, &h, 1, &o, &err) == ETK_EDTYPE && err.tensor == 0, "bf16 params: no EMA");
    t.ema = NULL;
    t.state_dtype = ETK_FLOAT64;
    CHECK(etk_step(ETK_RULE_ADAM, &t, 1, &h, 1, NULL, &err) == ETK_EDTYPE, "bf16 params: no float64 state");
    {
        etk_lamb_hp lh;
        memset(&lh, 0, sizeof lh);
        lh.lr = 1e-3, lh.beta1 = 0.9, lh.beta2 = 0.999, lh.eps = 1e-6;
        t.state_dtype = ETK_FLOAT32;
        CHECK(etk_step(ETK_RULE_LAMB, &t, 1, &lh, 1, NULL, &err) == ETK_EDTYPE, "bf16 params: LAMB refused (%s)",
              err.message ? err.message : "");
    }
    CHECK(memcmp(p, p0, sizeof p) == 0, "refusals wrote nothing");
}

/* Adam with bfloat16 and 8-bit state: decode, float32 step, encode, over threads and variants */
static void test_lowp_adam(void)
{
    enum { N = 20000, STEPS = 5, NB = (N + ETK_QBLOCK - 1) / ETK_QBLOCK };
    static float g[STEPS][N], p0[N], pr[N], p[N], mf[N], vf[N], amr[NB], avr[NB], am[NB], av[NB];
    static uint16_t m16r[N], v16r[N], m16[N], v16[N];
    static uint8_t mqr[N], vqr[N], mq[N], vq[N];
    etk_adam_hp h = {1e-2, 0.9, 0.999, 1e-8, 0.01, 0, 0, 1};
    const char *variants[4] = {"baseline", "avx2", "avx512", "avx512vbmi"};
    const char *saved = etk_simd_variant();
    int fmt, sr, th, vi, i, k, saved_threads = etk_get_num_threads();
    etk_tensor t;
    etk_error err;
    for (i = 0; i < N; i++) p0[i] = (float)urand();
    for (k = 0; k < STEPS; k++)
        for (i = 0; i < N; i++) g[k][i] = (float)(urand() * (i % 3 ? 1.0 : 1e-4));
    for (fmt = 0; fmt < 2; fmt++)
        for (sr = 0; sr < (fmt ? 1 : 2); sr++) {
            /* the reference: the serial codecs around the float32 step */
            memcpy(pr, p0, sizeof pr);
            memset(m16r, 0, sizeof m16r), memset(v16r, 0, sizeof v16r);
            memset(mqr, 127, sizeof mqr), memset(vqr, 0, sizeof vqr); /* the codes of 0 */
            memset(amr, 0, sizeof amr), memset(avr, 0, sizeof avr);
            for (k = 1; k <= STEPS; k++) {
                void *st[3] = {mf, vf, NULL};
                if (fmt == 0) etk_bf16_decode(m16r, mf, N), etk_bf16_decode(v16r, vf, N);
                else etk_q8_decode(mqr, amr, mf, N, 1), etk_q8_decode(vqr, avr, vf, N, 0);
                CHECK(etk_adam_f32(pr, g[k - 1], st, N, &h, k) == ETK_OK, "f32 step");
                if (fmt == 0) etk_bf16_encode(mf, m16r, N, sr, 99, k, 0, 0), etk_bf16_encode(vf, v16r, N, sr, 99, k, 1, 0);
                else etk_q8_encode(mf, mqr, amr, N, 1), etk_q8_encode(vf, vqr, avr, N, 0);
            }
            for (vi = 0; vi < 4; vi++) {
                if (etk_set_simd_variant(variants[vi]) != ETK_OK) continue;
                for (th = 1; th <= 3; th++) {
                    etk_set_num_threads(th);
                    memcpy(p, p0, sizeof p);
                    memset(m16, 0, sizeof m16), memset(v16, 0, sizeof v16);
                    memset(mq, 127, sizeof mq), memset(vq, 0, sizeof vq);
                    memset(am, 0, sizeof am), memset(av, 0, sizeof av);
                    for (k = 1; k <= STEPS; k++) {
                        memset(&t, 0, sizeof t);
                        t.param = p, t.grad = g[k - 1], t.n = N, t.step = k;
                        t.dtype = ETK_FLOAT32;
                        t.state_dtype = fmt ? ETK_QINT8 : ETK_BFLOAT16;
                        t.stochastic = (uint8_t)sr, t.seed = 99;
                        if (fmt) t.state[0] = mq, t.state[1] = vq, t.absmax[0] = am, t.absmax[1] = av;
                        else t.state[0] = m16, t.state[1] = v16;
                        CHECK(etk_step(ETK_RULE_ADAM, &t, 1, &h, 1, NULL, NULL) == ETK_OK, "lowp step");
                    }
                    CHECK(memcmp(p, pr, sizeof p) == 0, "params: fmt %d sr %d %s %d threads", fmt, sr, variants[vi], th);
                    if (fmt == 0)
                        CHECK(!memcmp(m16, m16r, sizeof m16) && !memcmp(v16, v16r, sizeof v16), "bf16 state %d %d", sr, th);
                    else
                        CHECK(!memcmp(mq, mqr, sizeof mq) && !memcmp(vq, vqr, sizeof vq) && !memcmp(am, amr, sizeof am) &&
                                  !memcmp(av, avr, sizeof av),
                              "q8 state %s %d", variants[vi], th);
                }
            }
        }
    etk_set_num_threads(saved_threads);
    etk_set_simd_variant(saved);
    /* refusals, nothing written */
    memcpy(p, p0, sizeof p);
    memset(&t, 0, sizeof t);
    t.param = p, t.grad = g[0], t.n = N, t.step = 1, t.dtype = ETK_FLOAT32, t.state_dtype = ETK_QINT8;
    t.state[0] = mq, t.state[1] = vq, t.absmax[0] = am;
    CHECK(etk_step(ETK_RULE_ADAM, &t, 1, &h, 1, NULL, &err) == ETK_ESTATE && err.slot == 1, "q8 without scales");
    t.state_dtype = 4;
    CHECK(etk_step(ETK_RULE_ADAM, &t, 1, &h, 1, NULL, &err) == ETK_EDTYPE, "unknown state dtype");
    t.state_dtype = ETK_BFLOAT16;
    t.dtype = ETK_FLOAT64;
    CHECK(etk_step(ETK_RULE_ADAM, &t, 1, &h, 1, NULL, &err) == ETK_EDTYPE, "bf16 state, f64 params");
    CHECK(memcmp(p, p0, sizeof p) == 0, "refused steps wrote nothing");
    CHECK(etk_rule_lowp(ETK_RULE_ADAM) && etk_rule_lowp(ETK_RULE_SGD) && !etk_rule_lowp(ETK_RULE_LAMB) &&
              !etk_rule_lowp(ETK_RULE_ADAFACTOR) && !etk_rule_lowp(ETK_RULE_PRODIGY),
          "rules that keep low-precision state");
}

/* the generated tables agree with the map's construction */
static void test_q8_map_construction(void)
{
    float map[256], dec[256], absmax = 1.0f;
    uint8_t codes[256];
    int sg, i;
    for (sg = 0; sg < 2; sg++) {
        etk_q8_map(sg, map);
        for (i = 0; i < 256; i++) codes[i] = (uint8_t)i;
        etk_q8_decode(codes, &absmax, dec, 256, sg);
        for (i = 0; i < 256; i++) CHECK(dec[i] == map[i], "map %d value %d: table %a, built %a", sg, i, (double)dec[i], (double)map[i]);
    }
}

/* The loop's other passes (etk_step_opts): clipping equals the step on the
 * gradients scaled by the clipping factor; the EMA is torch.lerp; a
 * non-finite gradient is skipped or refused with nothing written; bad
 * options are refused.  Two tensors, one above the threading threshold. */
static void test_loop_passes(void)
{
    enum { N0 = 70001, N1 = 333 };
    static float p[2][N0], q[2][N0], g[2][N0], gs[2][N0], m[2][N0], v[2][N0], mq[2][N0], vq[2][N0], e[2][N0],
        eq[2][N0];
    const size_t n[2] = {N0, N1};
    etk_adam_hp h = {1e-2, 0.9, 0.999, 1e-8, 1e-2, 0, 0, 1};
    etk_tensor t[2], u[2];
    etk_step_opts o;
    etk_step_report rep;
    etk_error err;
    double ss = 0.0, norm, mul;
    size_t i, j;
    int step;
    memset(t, 0, sizeof t);
    memset(u, 0, sizeof u);
    for (j = 0; j < 2; j++) {
        for (i = 0; i < n[j]; i++) {
            p[j][i] = q[j][i] = e[j][i] = eq[j][i] = (float)urand();
            g[j][i] = (float)(urand() * 3.0);
            m[j][i] = v[j][i] = mq[j][i] = vq[j][i] = 0.0f;
        }
        t[j].param = p[j], t[j].grad = g[j], t[j].state[0] = m[j], t[j].state[1] = v[j], t[j].n = n[j];
        t[j].dtype = t[j].state_dtype = ETK_FLOAT32, t[j].ema = e[j];
        u[j] = t[j];
        u[j].param = q[j], u[j].grad = gs[j], u[j].state[0] = mq[j], u[j].state[1] = vq[j], u[j].ema = NULL;
    }
    /* the norm as etakit.reference.global_grad_norm forms it: blocks of 4096, 16 lanes */
    for (j = 0; j < 2; j++) {
        double s = 0.0;
        for (i = 0; i < n[j]; i += 4096) {
            double lane[16] = {0.0}, b = 0.0;
            size_t k, end = i + 4096 < n[j] ? i + 4096 : n[j];
            int l;
            for (k = i; k < end; k++) lane[(k - i) % 16] += (double)g[j][k] * (double)g[j][k];
            for (l = 0; l < 16; l++) b += lane[l];
            s += b;
        }
        ss += s;
    }
    norm = sqrt(ss);
    mul = 5.0 / (norm + 1e-6);
    for (j = 0; j < 2; j++)
        for (i = 0; i < n[j]; i++) gs[j][i] = g[j][i] * (float)mul;
    for (step = 1; step <= 3; step++) {
        memset(&o, 0, sizeof o);
        o.max_grad_norm = 5.0, o.nonfinite = ETK_NONFINITE_RAISE, o.ema_weight = 0.25, o.report = &rep;
        t[0].step = t[1].step = u[0].step = u[1].step = step;
        CHECK(etk_step(ETK_RULE_ADAM, t, 2, &h, 1, &o, &err) == ETK_OK, "clipped step");
        CHECK(rep.grad_norm == norm && rep.skipped == 0, "norm %.17g vs %.17g", rep.grad_norm, norm);
        CHECK(etk_step(ETK_RULE_ADAM, u, 2, &h, 1, NULL, NULL) == ETK_OK, "plain step");
        for (j = 0; j < 2; j++)
            for (i = 0; i < n[j]; i++) {
                eq[j][i] = eq[j][i] + 0.25f * (q[j][i] - eq[j][i]);
                if (p[j][i] != q[j][i] || m[j][i] != mq[j][i] || v[j][i] != vq[j][i] || e[j][i] != eq[j][i]) {
                    CHECK(0, "step %d tensor %d element %d differs", step, (int)j, (int)i);
                    return;
                }
            }
    }
    /* a NaN: raise names the tensor, skip reports it; nothing is written either way */
    g[1][7] = NAN;
    memcpy(q, p, sizeof p);
    memcpy(mq, m, sizeof m);
    memcpy(eq, e, sizeof e);
    memset(&o, 0, sizeof o);
    o.nonfinite = ETK_NONFINITE_RAISE, o.ema_weight = 0.5, o.report = &rep;
    CHECK(etk_step(ETK_RULE_ADAM, t, 2, &h, 1, &o, &err) == ETK_ENONFINITE && err.tensor == 1, "raise");
    o.nonfinite = ETK_NONFINITE_SKIP;
    CHECK(etk_step(ETK_RULE_ADAM, t, 2, &h, 1, &o, &err) == ETK_OK && rep.skipped == 1 && rep.nonfinite_tensor == 1,
          "skip");
    CHECK(!memcmp(q, p, sizeof p) && !memcmp(mq, m, sizeof m) && !memcmp(eq, e, sizeof e), "skip wrote");
    o.nonfinite = 3;
    CHECK(etk_step(ETK_RULE_ADAM, t, 2, &h, 1, &o, &err) == ETK_EARG, "bad nonfinite");
    o.nonfinite = 0, o.grad_scale = -1.0;
    CHECK(etk_step(ETK_RULE_ADAM, t, 2, &h, 1, &o, &err) == ETK_EARG, "bad grad_scale");
    o.grad_scale = 0.0, o.ema_weight = 1.5;
    CHECK(etk_step(ETK_RULE_ADAM, t, 2, &h, 1, &o, &err) == ETK_EARG, "bad ema_weight");
    o.ema_weight = 0.0, o.max_grad_norm = NAN;
    CHECK(etk_step(ETK_RULE_ADAM, t, 2, &h, 1, &o, &err) == ETK_EARG, "bad max_grad_norm");
    CHECK(!memcmp(q, p, sizeof p) && !memcmp(mq, m, sizeof m) && !memcmp(eq, e, sizeof e), "refusals wrote");
}

int main(void)
{
    printf("etakit C tests: simd %s (available: %s), openmp %d, threads %d\n", etk_simd_variant(),
           etk_simd_available(), etk_has_openmp(), etk_get_num_threads());
    test_adam_f64_matches_reference();
    test_sgd_f32_momentum_first_step();
    test_nadam_radam_adamax_f64_match_reference();
    test_rprop_f32_sign_cases();
    test_bit_identical_threads_and_variants();
    test_reducing_rules();
    test_validation_writes_nothing();
    test_muon_phases();
    test_rule_table();
    test_adafactor();
    test_schedules();
    test_schedules_large_k();
    test_adan_f64_clips_by_the_call_norm();
    test_adan_adopt_ademamix_threads_and_variants();
    test_adopt_first_step_and_ademamix_check();
    test_dog();
    test_schedulefree();
    test_shared_step_size_rules();
    test_lowp_codecs();
    test_lowp_variants();
    test_q8_map_construction();
    test_lowp_adam();
    test_bf16_params();
    test_loop_passes();
    if (failures) {
        printf("%d failed\n", failures);
        return 1;
    }
    printf("all C tests passed\n");
    return 0;
}
