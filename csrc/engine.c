/*
 * engine.c -- the part of a step that is not the element loop.
 *
 * For each call: validate every argument (nothing is written unless all of
 * it is valid), then split the concatenation of all tensors into one
 * contiguous range per thread and run the selected SIMD variant's element
 * loop on each piece.  One parallel region per call, however many tensors,
 * so a step over hundreds of small tensors pays one fork/join, and a single
 * large tensor is shared evenly.  Per-step scalars are prepared here, in
 * double, once per piece (at most tensors + threads pieces per step).
 *
 * Element results do not depend on how the range is split, so any thread
 * count gives bit-identical results.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "etk_internal.h"

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define ETK_HAS_FTZ 1
#define ETK_FTZ_DAZ 0x8040u /* MXCSR flush-to-zero (bit 15) and denormals-are-zero (bit 6) */
#else
#define ETK_HAS_FTZ 0
#endif

/* Below this many elements in one call, a fork/join costs more than a
 * second core gives back.  benchmarks/threshold.py on a 2-core AVX-512
 * machine: 2 threads break even near 8192 elements and win by 1.1-1.5x at
 * 16384 for every rule. */
#define ETK_PARALLEL_MIN_DEFAULT ((size_t)1 << 14)
static size_t etk_par_min = ETK_PARALLEL_MIN_DEFAULT;
/* Thread boundaries fall on multiples of 16 elements (a 64-byte line of
 * float32) so threads never share a cache line they write. */
#define ETK_SPLIT_ALIGN ((size_t)16)

const char *etk_strerror(int status)
{
    switch (status) {
    case ETK_OK: return "success";
    case ETK_EARG: return "invalid argument (NULL buffer, bad count or step)";
    case ETK_EHPARAM: return "hyperparameter out of range or not finite";
    case ETK_EDTYPE: return "unsupported dtype combination";
    case ETK_ESTATE: return "a state buffer required by the options is NULL";
    case ETK_EGROUP: return "tensor group index out of range";
    default: return "unknown status";
    }
}

/* ------------------------------------------------------- SIMD dispatch */

static const etk_kernels *etk_active;

static int etk_supported(const etk_kernels *k)
{
#if ETK_X86_DISPATCH
    __builtin_cpu_init();
    if (k == &etk_kernels_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (k == &etk_kernels_avx2) return __builtin_cpu_supports("avx2");
#endif
    return k == &etk_kernels_baseline;
}

/* Best first. */
static const etk_kernels *const etk_all[] = {
#if ETK_X86_DISPATCH
    &etk_kernels_avx512,
    &etk_kernels_avx2,
#endif
    &etk_kernels_baseline,
};
#define ETK_NVARIANTS (sizeof(etk_all) / sizeof(etk_all[0]))

static const etk_kernels *etk_find(const char *name)
{
    size_t i;
    for (i = 0; i < ETK_NVARIANTS; i++)
        if (name && strcmp(etk_all[i]->name, name) == 0 && etk_supported(etk_all[i])) return etk_all[i];
    return NULL;
}

static const etk_kernels *etk_kernels_now(void)
{
    if (!etk_active) {
        const etk_kernels *k = etk_find(getenv("ETAKIT_SIMD"));
        size_t i;
        for (i = 0; !k && i < ETK_NVARIANTS; i++)
            if (etk_supported(etk_all[i])) k = etk_all[i];
        etk_active = k;
    }
    return etk_active;
}

const char *etk_simd_variant(void) { return etk_kernels_now()->name; }

int etk_set_simd_variant(const char *name)
{
    const etk_kernels *k = etk_find(name);
    if (!k) return ETK_EARG;
    etk_active = k;
    return ETK_OK;
}

const char *etk_simd_available(void)
{
    static char buf[64];
    size_t i;
    if (!buf[0]) {
        char tmp[64] = "";
        for (i = 0; i < ETK_NVARIANTS; i++) {
            if (!etk_supported(etk_all[i])) continue;
            if (tmp[0]) strcat(tmp, " ");
            strcat(tmp, etk_all[i]->name);
        }
        memcpy(buf, tmp, sizeof buf);
    }
    return buf;
}

/* ------------------------------------------------------------- threads */

int etk_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int etk_get_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void etk_set_num_threads(int n)
{
#ifdef _OPENMP
    if (n >= 1) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

size_t etk_parallel_min(void) { return etk_par_min; }
void etk_set_parallel_min(size_t n) { etk_par_min = n ? n : ETK_PARALLEL_MIN_DEFAULT; }

/* --------------------------------------------------------------- rules */

typedef struct etk_rule {
    int id;
    size_t hp_size;
    size_t n_doubles; /* leading double fields of the hp struct: the schedulable ones */
    int uses_step;
    int (*check)(const void *hp);
    unsigned (*needs)(const void *hp); /* bit j: state[j] must be non-NULL */
    void (*prepare)(const void *hp, const etk_tensor *t, etk_coef *c);
} etk_rule;

static int etk_finite(double x) { return x == x && x - x == 0.0; }
static int etk_flag(int f) { return f == 0 || f == 1; }
static int etk_nonneg(double x) { return etk_finite(x) && x >= 0.0; }
static int etk_unit_open(double x) { return etk_finite(x) && x >= 0.0 && x < 1.0; }

static int sgd_check(const void *hp)
{
    const etk_sgd_hp *h = (const etk_sgd_hp *)hp;
    if (!etk_nonneg(h->lr) || !etk_nonneg(h->momentum) || !etk_nonneg(h->weight_decay)) return ETK_EHPARAM;
    if (!etk_finite(h->dampening) || h->dampening < 0.0 || h->dampening > 1.0) return ETK_EHPARAM;
    if (!etk_flag(h->nesterov) || !etk_flag(h->maximize)) return ETK_EHPARAM;
    if (h->nesterov && (h->momentum <= 0.0 || h->dampening != 0.0)) return ETK_EHPARAM;
    return ETK_OK;
}
static unsigned sgd_needs(const void *hp) { return ((const etk_sgd_hp *)hp)->momentum != 0.0 ? 1u : 0u; }
static void sgd_prepare(const void *hp, const etk_tensor *t, etk_coef *cf)
{
    const etk_sgd_hp *h = (const etk_sgd_hp *)hp;
    etk_sgd_coef *c = &cf->sgd;
    c->neg_lr = -h->lr;
    c->momentum = h->momentum;
    c->one_minus_dampening = 1.0 - h->dampening;
    c->weight_decay = h->weight_decay;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
    c->use_momentum = h->momentum != 0.0;
    c->nesterov = h->nesterov;
    c->fresh = (t->flags & ETK_FRESH_STATE) != 0;
}

static int adam_check(const void *hp)
{
    const etk_adam_hp *h = (const etk_adam_hp *)hp;
    if (!etk_nonneg(h->lr) || !etk_nonneg(h->eps) || !etk_nonneg(h->weight_decay)) return ETK_EHPARAM;
    if (!etk_unit_open(h->beta1) || !etk_unit_open(h->beta2)) return ETK_EHPARAM;
    if (!etk_flag(h->amsgrad) || !etk_flag(h->maximize) || !etk_flag(h->decoupled_weight_decay))
        return ETK_EHPARAM;
    return ETK_OK;
}
static unsigned adam_needs(const void *hp) { return ((const etk_adam_hp *)hp)->amsgrad ? 7u : 3u; }
static void adam_prepare(const void *hp, const etk_tensor *t, etk_coef *cf)
{
    const etk_adam_hp *h = (const etk_adam_hp *)hp;
    etk_adam_coef *c = &cf->adam;
    double k = (double)t->step;
    double bias_correction1 = 1.0 - pow(h->beta1, k);
    double bias_correction2 = 1.0 - pow(h->beta2, k);
    c->one_minus_beta1 = 1.0 - h->beta1;
    c->beta2 = h->beta2;
    c->one_minus_beta2 = 1.0 - h->beta2;
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->decay = 1.0 - h->lr * h->weight_decay;
    c->bias_correction2_sqrt = sqrt(bias_correction2);
    c->neg_step_size = -(h->lr / bias_correction1);
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay == 0.0 ? ETK_WD_NONE : h->decoupled_weight_decay ? ETK_WD_DECOUPLED : ETK_WD_L2;
    c->amsgrad = h->amsgrad;
}

static int rmsprop_check(const void *hp)
{
    const etk_rmsprop_hp *h = (const etk_rmsprop_hp *)hp;
    if (!etk_nonneg(h->lr) || !etk_nonneg(h->eps) || !etk_nonneg(h->weight_decay) || !etk_nonneg(h->momentum))
        return ETK_EHPARAM;
    if (!etk_finite(h->alpha) || h->alpha < 0.0 || h->alpha > 1.0) return ETK_EHPARAM;
    if (!etk_flag(h->centered) || !etk_flag(h->maximize)) return ETK_EHPARAM;
    return ETK_OK;
}
static unsigned rmsprop_needs(const void *hp)
{
    const etk_rmsprop_hp *h = (const etk_rmsprop_hp *)hp;
    return 1u | (h->momentum > 0.0 ? 2u : 0u) | (h->centered ? 4u : 0u);
}
static void rmsprop_prepare(const void *hp, const etk_tensor *t, etk_coef *cf)
{
    const etk_rmsprop_hp *h = (const etk_rmsprop_hp *)hp;
    etk_rmsprop_coef *c = &cf->rmsprop;
    (void)t;
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

static int adagrad_check(const void *hp)
{
    const etk_adagrad_hp *h = (const etk_adagrad_hp *)hp;
    if (!etk_nonneg(h->lr) || !etk_nonneg(h->lr_decay) || !etk_nonneg(h->weight_decay) || !etk_nonneg(h->eps))
        return ETK_EHPARAM;
    if (!etk_flag(h->maximize)) return ETK_EHPARAM;
    return ETK_OK;
}
static unsigned adagrad_needs(const void *hp) { (void)hp; return 1u; }
static void adagrad_prepare(const void *hp, const etk_tensor *t, etk_coef *cf)
{
    const etk_adagrad_hp *h = (const etk_adagrad_hp *)hp;
    etk_adagrad_coef *c = &cf->adagrad;
    c->neg_clr = -(h->lr / (1.0 + (double)(t->step - 1) * h->lr_decay));
    c->eps = h->eps;
    c->weight_decay = h->weight_decay;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
}

static const etk_rule etk_rule_sgd = {ETK_RULE_SGD, sizeof(etk_sgd_hp), 4, 0, sgd_check, sgd_needs, sgd_prepare};
static const etk_rule etk_rule_adam = {ETK_RULE_ADAM, sizeof(etk_adam_hp), 5, 1, adam_check, adam_needs, adam_prepare};
static const etk_rule etk_rule_rmsprop = {ETK_RULE_RMSPROP, sizeof(etk_rmsprop_hp), 5, 0, rmsprop_check,
                                          rmsprop_needs, rmsprop_prepare};
static const etk_rule etk_rule_adagrad = {ETK_RULE_ADAGRAD, sizeof(etk_adagrad_hp), 4, 1, adagrad_check,
                                          adagrad_needs, adagrad_prepare};

/* -------------------------------------------------------------- engine */

static const void *etk_hp_at(const etk_rule *r, const void *hps, uint32_t group)
{
    return r ? (const char *)hps + (size_t)group * r->hp_size : NULL;
}

/* r == NULL is the bandwidth probe: no hyperparameters, no state needed. */
static int etk_validate(const etk_rule *r, const etk_kernels *k, int id, const etk_tensor *ts, size_t count,
                        const void *hps, size_t nhps)
{
    size_t i;
    int j, st;
    if (count && !ts) return ETK_EARG;
    if (r && nhps && !hps) return ETK_EARG;
    for (i = 0; r && i < nhps; i++)
        if ((st = r->check(etk_hp_at(r, hps, (uint32_t)i))) != ETK_OK) return st;
    for (i = 0; i < count; i++) {
        const etk_tensor *t = &ts[i];
        unsigned needs;
        if (t->dtype >= ETK_NDTYPES || t->state_dtype >= ETK_NDTYPES ||
            !k->fn[id][t->dtype * ETK_NDTYPES + t->state_dtype])
            return ETK_EDTYPE;
        if (r && t->group >= nhps) return ETK_EGROUP;
        if (r && r->uses_step && t->step < 1) return ETK_EARG;
        if (t->n == 0) continue;
        if (!t->param || !t->grad) return ETK_EARG;
        needs = r ? r->needs(etk_hp_at(r, hps, t->group)) : 0u;
        for (j = 0; j < 3; j++)
            if ((needs >> j & 1u) && !t->state[j]) return ETK_ESTATE;
    }
    return ETK_OK;
}

#ifdef _OPENMP
static size_t etk_split(size_t total, int i, int nth)
{
    size_t q, at;
    if (i >= nth) return total;
    q = total / (size_t)nth;
    at = q * (size_t)i + ((size_t)i < total % (size_t)nth ? (size_t)i : total % (size_t)nth);
    return at & ~(ETK_SPLIT_ALIGN - 1);
}
#endif

static int etk_flush;

int etk_set_flush_denormal(int on)
{
    etk_flush = ETK_HAS_FTZ && on;
    return ETK_HAS_FTZ;
}

int etk_get_flush_denormal(void) { return etk_flush; }

/* Run the elements [lo, hi) of the concatenation of all tensors. */
static void etk_run_range(const etk_rule *r, const etk_kernels *k, int id, const etk_tensor *ts, size_t count,
                          const void *hps, size_t lo, size_t hi)
{
    size_t i, off = 0;
    etk_coef coef;
#if ETK_HAS_FTZ
    const unsigned csr = _mm_getcsr();
    if (etk_flush) _mm_setcsr(csr | ETK_FTZ_DAZ);
#endif
    memset(&coef, 0, sizeof coef);
    for (i = 0; i < count && off < hi; off += ts[i].n, i++) {
        const etk_tensor *t = &ts[i];
        size_t a = lo > off ? lo - off : 0, b = hi - off < t->n ? hi - off : t->n;
        if (t->n == 0 || off + t->n <= lo) continue;
        if (r) r->prepare(etk_hp_at(r, hps, t->group), t, &coef);
        k->fn[id][t->dtype * ETK_NDTYPES + t->state_dtype](t, a, b, &coef);
    }
#if ETK_HAS_FTZ
    if (etk_flush) _mm_setcsr(csr);
#endif
}

static int etk_run(const etk_rule *r, int id, const etk_tensor *ts, size_t count, const void *hps, size_t nhps)
{
    const etk_kernels *k = etk_kernels_now();
    size_t i, total = 0;
    int st = etk_validate(r, k, id, ts, count, hps, nhps);
    if (st != ETK_OK) return st;
    for (i = 0; i < count; i++) total += ts[i].n;
#ifdef _OPENMP
    int nth = 1;
    if (total >= etk_par_min) {
        size_t min_share = etk_par_min / 2 ? etk_par_min / 2 : 1; /* per thread */
        nth = omp_get_max_threads();
        if ((size_t)nth > total / min_share) nth = (int)(total / min_share);
    }
    if (nth > 1) {
#pragma omp parallel num_threads(nth)
        {
            int tid = omp_get_thread_num(), got = omp_get_num_threads();
            etk_run_range(r, k, id, ts, count, hps, etk_split(total, tid, got), etk_split(total, tid + 1, got));
        }
        return ETK_OK;
    }
#endif
    etk_run_range(r, k, id, ts, count, hps, 0, total);
    return ETK_OK;
}

/* Apply scheduled hyperparameters to a copy of hps, then run. */
static int etk_run_scheduled(const etk_rule *r, int id, const etk_tensor *ts, size_t count, const void *hps,
                             size_t nhps, const etk_hp_schedule *sc, size_t nsc, int64_t k)
{
    union {
        double align;
        unsigned char bytes[1024];
    } local;
    unsigned char *buf;
    size_t i, size = nhps * r->hp_size;
    int st = ETK_OK;
    if (nsc == 0) return etk_run(r, id, ts, count, hps, nhps);
    if (!sc || !hps || k < 0) return ETK_EARG;
    for (i = 0; i < nsc; i++) {
        if (sc[i].group >= nhps) return ETK_EGROUP;
        if (sc[i].offset % sizeof(double) || sc[i].offset >= r->n_doubles * sizeof(double)) return ETK_EARG;
        if ((st = etk_schedule_check(sc[i].schedule)) != ETK_OK) return st;
    }
    buf = size <= sizeof local.bytes ? local.bytes : (unsigned char *)malloc(size);
    if (!buf) return ETK_EARG;
    memcpy(buf, hps, size);
    for (i = 0; i < nsc; i++) {
        double v = etk_schedule_eval(sc[i].schedule, k);
        memcpy(buf + (size_t)sc[i].group * r->hp_size + sc[i].offset, &v, sizeof v);
    }
    st = etk_run(r, id, ts, count, buf, nhps);
    if (buf != local.bytes) free(buf);
    return st;
}

int etk_sgd_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_sgd_hp *hps, size_t nhps,
                            const etk_hp_schedule *sched, size_t nsched, int64_t k)
{
    return etk_run_scheduled(&etk_rule_sgd, ETK_RULE_SGD, tensors, count, hps, nhps, sched, nsched, k);
}
int etk_adam_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_adam_hp *hps, size_t nhps,
                             const etk_hp_schedule *sched, size_t nsched, int64_t k)
{
    return etk_run_scheduled(&etk_rule_adam, ETK_RULE_ADAM, tensors, count, hps, nhps, sched, nsched, k);
}
int etk_rmsprop_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_rmsprop_hp *hps,
                                size_t nhps, const etk_hp_schedule *sched, size_t nsched, int64_t k)
{
    return etk_run_scheduled(&etk_rule_rmsprop, ETK_RULE_RMSPROP, tensors, count, hps, nhps, sched, nsched, k);
}
int etk_adagrad_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_adagrad_hp *hps,
                                size_t nhps, const etk_hp_schedule *sched, size_t nsched, int64_t k)
{
    return etk_run_scheduled(&etk_rule_adagrad, ETK_RULE_ADAGRAD, tensors, count, hps, nhps, sched, nsched, k);
}

int etk_sgd_multi(const etk_tensor *tensors, size_t count, const etk_sgd_hp *hps, size_t nhps)
{
    return etk_run(&etk_rule_sgd, ETK_RULE_SGD, tensors, count, hps, nhps);
}
int etk_adam_multi(const etk_tensor *tensors, size_t count, const etk_adam_hp *hps, size_t nhps)
{
    return etk_run(&etk_rule_adam, ETK_RULE_ADAM, tensors, count, hps, nhps);
}
int etk_rmsprop_multi(const etk_tensor *tensors, size_t count, const etk_rmsprop_hp *hps, size_t nhps)
{
    return etk_run(&etk_rule_rmsprop, ETK_RULE_RMSPROP, tensors, count, hps, nhps);
}
int etk_adagrad_multi(const etk_tensor *tensors, size_t count, const etk_adagrad_hp *hps, size_t nhps)
{
    return etk_run(&etk_rule_adagrad, ETK_RULE_ADAGRAD, tensors, count, hps, nhps);
}
int etk_probe_multi(const etk_tensor *tensors, size_t count)
{
    return etk_run(NULL, ETK_RULE_PROBE, tensors, count, NULL, 0);
}

/* ------------------------------------------------ single-tensor wrappers */

static etk_tensor etk_one(void *p, const void *g, void *s0, void *s1, void *s2, size_t n, int64_t step,
                          etk_dtype dt, uint16_t flags)
{
    etk_tensor t;
    memset(&t, 0, sizeof t);
    t.param = p;
    t.grad = g;
    t.state[0] = s0;
    t.state[1] = s1;
    t.state[2] = s2;
    t.n = n;
    t.step = step;
    t.dtype = (uint8_t)dt;
    t.state_dtype = (uint8_t)dt;
    t.flags = flags;
    return t;
}

#define ETK_FRESH(first) ((uint16_t)((first) ? ETK_FRESH_STATE : 0u))

int etk_sgd_f32(float *param, const float *grad, float *momentum_buffer, size_t n, const etk_sgd_hp *hp,
                int first_step)
{
    etk_tensor t = etk_one(param, grad, momentum_buffer, NULL, NULL, n, 1, ETK_FLOAT32, ETK_FRESH(first_step));
    return hp ? etk_sgd_multi(&t, 1, hp, 1) : ETK_EARG;
}
int etk_sgd_f64(double *param, const double *grad, double *momentum_buffer, size_t n, const etk_sgd_hp *hp,
                int first_step)
{
    etk_tensor t = etk_one(param, grad, momentum_buffer, NULL, NULL, n, 1, ETK_FLOAT64, ETK_FRESH(first_step));
    return hp ? etk_sgd_multi(&t, 1, hp, 1) : ETK_EARG;
}
int etk_adam_f32(float *param, const float *grad, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
                 size_t n, const etk_adam_hp *hp, int64_t step)
{
    etk_tensor t = etk_one(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, step, ETK_FLOAT32, 0);
    return hp ? etk_adam_multi(&t, 1, hp, 1) : ETK_EARG;
}
int etk_adam_f64(double *param, const double *grad, double *exp_avg, double *exp_avg_sq,
                 double *max_exp_avg_sq, size_t n, const etk_adam_hp *hp, int64_t step)
{
    etk_tensor t = etk_one(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, step, ETK_FLOAT64, 0);
    return hp ? etk_adam_multi(&t, 1, hp, 1) : ETK_EARG;
}
int etk_rmsprop_f32(float *param, const float *grad, float *square_avg, float *momentum_buffer, float *grad_avg,
                    size_t n, const etk_rmsprop_hp *hp)
{
    etk_tensor t = etk_one(param, grad, square_avg, momentum_buffer, grad_avg, n, 1, ETK_FLOAT32, 0);
    return hp ? etk_rmsprop_multi(&t, 1, hp, 1) : ETK_EARG;
}
int etk_rmsprop_f64(double *param, const double *grad, double *square_avg, double *momentum_buffer,
                    double *grad_avg, size_t n, const etk_rmsprop_hp *hp)
{
    etk_tensor t = etk_one(param, grad, square_avg, momentum_buffer, grad_avg, n, 1, ETK_FLOAT64, 0);
    return hp ? etk_rmsprop_multi(&t, 1, hp, 1) : ETK_EARG;
}
int etk_adagrad_f32(float *param, const float *grad, float *sum, size_t n, const etk_adagrad_hp *hp, int64_t step)
{
    etk_tensor t = etk_one(param, grad, sum, NULL, NULL, n, step, ETK_FLOAT32, 0);
    return hp ? etk_adagrad_multi(&t, 1, hp, 1) : ETK_EARG;
}
int etk_adagrad_f64(double *param, const double *grad, double *sum, size_t n, const etk_adagrad_hp *hp,
                    int64_t step)
{
    etk_tensor t = etk_one(param, grad, sum, NULL, NULL, n, step, ETK_FLOAT64, 0);
    return hp ? etk_adagrad_multi(&t, 1, hp, 1) : ETK_EARG;
}
