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

static void run_all_rules(etk_tensor *ts)
{
    etk_adam_hp ah[2] = {{1e-3, 0.9, 0.999, 1e-8, 0.01, 1, 0, 1}, {1e-2, 0.8, 0.99, 1e-6, 0.1, 0, 1, 0}};
    etk_sgd_hp sh[2] = {{0.1, 0.9, 0.0, 1e-4, 1, 0}, {0.01, 0.5, 0.1, 0.0, 0, 1}};
    etk_rmsprop_hp rh[2] = {{1e-2, 0.99, 1e-8, 0.0, 0.9, 1, 0}, {1e-3, 0.9, 1e-6, 0.01, 0.0, 0, 1}};
    etk_adagrad_hp gh[2] = {{1e-2, 0.01, 0.0, 1e-10, 0.0, 0}, {0.1, 0.0, 0.1, 1e-10, 0.0, 1}};
    etk_lion_hp lh[2] = {{1e-4, 0.9, 0.99, 0.1, 1, 0, 0}, {1e-3, 0.5, 0.9, 0.01, 0, 0, 1}};
    CHECK(etk_adam_multi(ts, NT, ah, 2) == ETK_OK, "adam multi");
    CHECK(etk_sgd_multi(ts, NT, sh, 2) == ETK_OK, "sgd multi");
    CHECK(etk_rmsprop_multi(ts, NT, rh, 2) == ETK_OK, "rmsprop multi");
    CHECK(etk_adagrad_multi(ts, NT, gh, 2) == ETK_OK, "adagrad multi");
    CHECK(etk_lion_multi(ts, NT, lh, 2) == ETK_OK, "lion multi");
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
            CHECK(f->offset + (f->kind == ETK_FIELD_REAL ? sizeof(double) : sizeof(int)) <= info->hp_size,
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

int main(void)
{
    printf("etakit C tests: simd %s (available: %s), openmp %d, threads %d\n", etk_simd_variant(),
           etk_simd_available(), etk_has_openmp(), etk_get_num_threads());
    test_adam_f64_matches_reference();
    test_sgd_f32_momentum_first_step();
    test_bit_identical_threads_and_variants();
    test_validation_writes_nothing();
    test_muon_phases();
    test_rule_table();
    test_schedules();
    test_schedules_large_k();
    if (failures) {
        printf("%d failed\n", failures);
        return 1;
    }
    printf("all C tests passed\n");
    return 0;
}
