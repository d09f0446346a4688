/*
 * schedule.c -- learning-rate schedules as pure functions of the step count.
 *
 * A schedule is a post-order tree of nodes (see etakit.h), built by the
 * Python layer from composable objects and evaluated here, so a scheduled
 * optimizer step needs no Python call and values() needs no Python per
 * element.  Formulas follow the libraries users switch from (PyTorch's
 * lr_scheduler closed forms, transformers, timm, optax), in their order of
 * operations, so the numbers match to the last bit or close to it.
 *
 * Node parameters, by kind (k = completed steps, kd = (double)k):
 *   CONSTANT         p0 value
 *   LINEAR           p0 start, p1 end, p2 steps
 *   STEP             p0 lr, p1 step_size, p2 gamma
 *   MULTISTEP        p0 lr, p1 gamma; data: milestones (non-decreasing)
 *   EXPONENTIAL      p0 lr, p1 gamma
 *   POLYNOMIAL       p0 lr, p1 total_steps, p2 power, p3 end_lr
 *   COSINE           p0 lr, p1 total_steps, p2 min_lr
 *   COSINE_RESTARTS  p0 lr, p1 first_period, p2 period_mult, p3 min_lr, p4 decay
 *   ONE_CYCLE        p0 total_steps, p1 pct_start, p2 a, p3 b, p4 c;
 *                    mode bit 0: linear anneal, bit 1: three phases.
 *                    Phases a->b, b->c; or a->b, b->a, a->c.
 *   CYCLIC           p0 base, p1 max, p2 up, p3 down, p4 gamma; mode 0/1/2:
 *                    triangular, triangular2, exp_range
 *   INVERSE_SQRT     p0 lr, p1 warmup_steps, p2 timescale
 *   WARMUP_COSINE    p0 peak, p1 warmup_steps, p2 total_steps, p3 min_lr, p4 start_lr
 *   WSD              p0 peak, p1 warmup, p2 stable, p3 decay steps, p4 min_lr;
 *                    mode 0/1/2: linear, cosine, 1-sqrt
 *   PIECEWISE        p0 n; data: n boundaries, n + 1 values
 *   JOIN             p0 n; data: n boundaries, n + 1 child node indices
 *   WARMUP           child; p0 warmup_steps, p1 start_lr
 *   SCALE            child; p0 factor
 *   PLATEAU          child; p0 scale, p1 min_lr: max(scale * v, min(min_lr, v))
 *
 * Any int64 k is valid (a negative k is taken as 0) and the arithmetic on
 * step counts never overflows: a step count is only compared with, divided
 * by or reduced by integral parameters in [0, 2^62], and comparisons with
 * boundaries and warmup lengths are exact integer comparisons (kd rounds
 * above 2^53; a rounded comparison could hand a child a negative count).
 * values() refuses a range k0 .. k0 + n - 1 that does not fit in int64.
 */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "etakit.h"

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* Integral parameters are stored as doubles; this bounds them so that
 * conversions to int64 are defined. */
#define ETK_SCHED_INT_MAX 4611686018427387904.0 /* 2^62 */

static int etk_is_int(double x, double lo) { return x == x && x >= lo && x <= ETK_SCHED_INT_MAX && floor(x) == x; }

static int etk_fin(double x) { return x == x && x - x == 0.0; }

/* x <= k, exactly, for a finite double x and any int64 k (no rounding of k). */
static int etk_le_k(double x, int64_t k)
{
    if (x < -9223372036854775808.0) return 1;  /* below INT64_MIN */
    if (x >= 9223372036854775808.0) return 0;  /* 2^63 and above */
    return (int64_t)floor(x) <= k;             /* floor(x) <= k <=> x <= k */
}

/* Number of the first n entries of d that are <= k (d non-decreasing). */
static size_t etk_upper_bound(const double *d, size_t n, int64_t k)
{
    size_t a = 0, b = n;
    while (a < b) {
        size_t m = a + (b - a) / 2;
        if (etk_le_k(d[m], k)) a = m + 1;
        else b = m;
    }
    return a;
}

int etk_schedule_check(const etk_schedule *s)
{
    size_t i, j;
    if (!s || !s->nodes || s->nnodes == 0 || (s->ndata && !s->data)) return ETK_EARG;
    for (i = 0; i < s->nnodes; i++) {
        const etk_sched_node *n = &s->nodes[i];
        const double *p = n->p;
        const double *d = s->data + n->data_off;
        if (n->kind < 0 || n->kind >= ETK_S_NKINDS) return ETK_EARG;
        if ((size_t)n->data_off + n->data_len > s->ndata) return ETK_EARG;
        for (j = 0; j < 6; j++)
            if (!etk_fin(p[j])) return ETK_EHPARAM;
        for (j = 0; j < n->data_len; j++)
            if (!etk_fin(d[j])) return ETK_EHPARAM;
        switch (n->kind) {
        case ETK_S_STEP:
            if (!etk_is_int(p[1], 1.0)) return ETK_EHPARAM;
            break;
        case ETK_S_COSINE_RESTARTS:
            if (!etk_is_int(p[1], 1.0) || !etk_is_int(p[2], 1.0)) return ETK_EHPARAM;
            break;
        case ETK_S_ONE_CYCLE:
            if (!etk_is_int(p[0], 2.0)) return ETK_EHPARAM;
            break;
        case ETK_S_MULTISTEP:
            for (j = 1; j < n->data_len; j++)
                if (d[j] < d[j - 1]) return ETK_EHPARAM;
            break;
        case ETK_S_PIECEWISE:
        case ETK_S_JOIN:
            if (!etk_is_int(p[0], 0.0) || n->data_len != 2 * (size_t)p[0] + 1) return ETK_EARG;
            for (j = 0; j < (size_t)p[0]; j++)
                if (!etk_is_int(d[j], 0.0) || (j && d[j] < d[j - 1])) return ETK_EHPARAM;
            if (n->kind == ETK_S_JOIN)
                for (j = (size_t)p[0]; j < n->data_len; j++)
                    if (!etk_is_int(d[j], 0.0) || d[j] >= (double)i) return ETK_EARG;
            break;
        case ETK_S_WARMUP:
            if (!etk_is_int(p[0], 0.0)) return ETK_EHPARAM;
            /* fall through */
        case ETK_S_SCALE:
        case ETK_S_PLATEAU:
            if (n->child < 0 || (size_t)n->child >= i) return ETK_EARG;
            break;
        default:
            break;
        }
    }
    return ETK_OK;
}

static double etk_anneal(double start, double end, double pct, int linear)
{
    if (linear) return (end - start) * pct + start;
    return end + (start - end) / 2.0 * (cos(M_PI * pct) + 1.0);
}

static double etk_one_cycle(const double *p, int mode, double kd)
{
    const double total = p[0], pct = p[1], a = p[2], b = p[3], c = p[4];
    const int linear = mode & 1, three = (mode & 2) != 0;
    double ends[3], from[3], to[3], start = 0.0;
    int nph, i;
    if (kd > total - 1.0) kd = total - 1.0; /* hold the last value past the end */
    if (three) {
        ends[0] = pct * total - 1.0, from[0] = a, to[0] = b;
        ends[1] = 2.0 * pct * total - 2.0, from[1] = b, to[1] = a;
        ends[2] = total - 1.0, from[2] = a, to[2] = c;
        nph = 3;
    } else {
        ends[0] = pct * total - 1.0, from[0] = a, to[0] = b;
        ends[1] = total - 1.0, from[1] = b, to[1] = c;
        nph = 2;
    }
    for (i = 0; i < nph; i++) {
        if (kd <= ends[i] || i == nph - 1) return etk_anneal(from[i], to[i], (kd - start) / (ends[i] - start), linear);
        start = ends[i];
    }
    return c;
}

static double etk_eval_node(const etk_schedule *s, int32_t at, int64_t k)
{
    const etk_sched_node *n = &s->nodes[at];
    const double *p = n->p;
    const double *d = s->data + n->data_off;
    const double kd = (double)k;
    switch (n->kind) {
    case ETK_S_CONSTANT:
        return p[0];
    case ETK_S_LINEAR:
        return kd >= p[2] ? p[1] : p[0] + (p[1] - p[0]) * (kd / p[2]);
    case ETK_S_STEP:
        return p[0] * pow(p[2], (double)(k / (int64_t)p[1]));
    case ETK_S_MULTISTEP:
        return p[0] * pow(p[1], (double)etk_upper_bound(d, n->data_len, k));
    case ETK_S_EXPONENTIAL:
        return p[0] * pow(p[1], kd);
    case ETK_S_POLYNOMIAL:
        return (p[0] - p[3]) * pow(1.0 - (kd < p[1] ? kd : p[1]) / p[1], p[2]) + p[3];
    case ETK_S_COSINE:
        return kd >= p[1] ? p[2] : p[2] + (p[0] - p[2]) * (1.0 + cos(M_PI * kd / p[1])) / 2.0;
    case ETK_S_COSINE_RESTARTS: {
        int64_t t = k, period = (int64_t)p[1], mult = (int64_t)p[2], cycle = 0;
        if (mult == 1) {
            cycle = t / period;
            t = t % period;
        } else {
            while (t >= period) {
                t -= period;
                cycle++;
                if (period > INT64_MAX / mult) break; /* t < period from here on */
                period *= mult;
            }
        }
        return p[3] + (p[0] * pow(p[4], (double)cycle) - p[3]) * (1.0 + cos(M_PI * (double)t / (double)period)) / 2.0;
    }
    case ETK_S_ONE_CYCLE:
        return etk_one_cycle(p, n->mode, kd);
    case ETK_S_CYCLIC: {
        const double total = p[2] + p[3], ratio = p[2] / total;
        const double cycle = floor(1.0 + kd / total), x = 1.0 + kd / total - cycle;
        const double height = (p[1] - p[0]) * (x <= ratio ? x / ratio : (x - 1.0) / (ratio - 1.0));
        if (n->mode == 1) return p[0] + height * (1.0 / pow(2.0, cycle - 1.0));
        if (n->mode == 2) return p[0] + height * pow(p[4], kd);
        return p[0] + height * 1.0;
    }
    case ETK_S_INVERSE_SQRT:
        if (kd < p[1]) return p[0] * (kd / (p[1] > 1.0 ? p[1] : 1.0));
        return p[0] * (1.0 / sqrt((kd + (p[2] - p[1])) / p[2]));
    case ETK_S_WARMUP_COSINE: {
        double progress;
        if (kd < p[1]) return p[4] + (p[0] - p[4]) * (kd / (p[1] > 1.0 ? p[1] : 1.0));
        progress = (kd - p[1]) / (p[2] - p[1] > 1.0 ? p[2] - p[1] : 1.0);
        if (progress > 1.0) progress = 1.0;
        return p[3] + (p[0] - p[3]) * (0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress)));
    }
    case ETK_S_WSD: {
        double prog, f;
        if (kd < p[1]) return p[0] * (kd / p[1]);
        if (kd < p[1] + p[2]) return p[0];
        prog = (kd - p[1] - p[2]) / p[3];
        if (prog >= 1.0) return p[4];
        f = n->mode == 1 ? 0.5 * (1.0 + cos(M_PI * prog)) : n->mode == 2 ? 1.0 - sqrt(prog) : 1.0 - prog;
        return p[4] + (p[0] - p[4]) * f;
    }
    case ETK_S_PIECEWISE: {
        size_t nb = (size_t)p[0];
        return d[nb + etk_upper_bound(d, nb, k)];
    }
    case ETK_S_JOIN: {
        size_t nb = (size_t)p[0], j = etk_upper_bound(d, nb, k);
        /* 0 <= d[j - 1] <= k: no overflow, and the child's count is >= 0 */
        return etk_eval_node(s, (int32_t)d[nb + j], j ? k - (int64_t)d[j - 1] : k);
    }
    case ETK_S_WARMUP:
        if (k < (int64_t)p[0]) { /* exact: kd may round up to p[0] */
            double v0 = etk_eval_node(s, n->child, 0);
            return p[1] + (v0 - p[1]) * (kd / p[0]);
        }
        return etk_eval_node(s, n->child, k - (int64_t)p[0]);
    case ETK_S_SCALE:
        return p[0] * etk_eval_node(s, n->child, k);
    case ETK_S_PLATEAU: {
        double v = etk_eval_node(s, n->child, k), floor_v = v < p[1] ? v : p[1], scaled = p[0] * v;
        return scaled > floor_v ? scaled : floor_v;
    }
    default:
        return NAN;
    }
}

double etk_schedule_eval(const etk_schedule *s, int64_t k)
{
    return etk_eval_node(s, (int32_t)(s->nnodes - 1), k < 0 ? 0 : k);
}

int etk_schedule_values(const etk_schedule *s, int64_t k0, double *out, size_t n)
{
    int st = etk_schedule_check(s);
    size_t i;
    if (st != ETK_OK) return st;
    if (n && !out) return ETK_EARG;
    /* k0 + i must not overflow for i < n */
    if (n && ((uint64_t)(n - 1) > (uint64_t)INT64_MAX || k0 > INT64_MAX - (int64_t)(n - 1))) return ETK_EARG;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if (n >= etk_parallel_min())
#endif
    for (i = 0; i < n; i++) out[i] = etk_schedule_eval(s, k0 + (int64_t)i);
    return ETK_OK;
}
