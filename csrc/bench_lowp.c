/*
 * bench_lowp.c -- timing harness for low-precision optimizer state (not a
 * test): the codecs in ns/element on L1/L2-resident data, and Adam steps
 * with float32, bfloat16 and 8-bit state, small (in cache) and large
 * (memory), 1 and 2 threads.  Medians of interleaved repeats, and the fastest
 * repeat (on a shared machine, the closest to the cost of the code alone).
 *
 *   make -C csrc bench_lowp && ./csrc/bench_lowp [N_large] [variant]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "etakit.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmpd(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return ((float)(*s >> 8) / 16777216.0f - 0.5f) * 2.0f;
}

typedef struct job {
    const char *name;
    int dt;
    size_t n;
    float *p, *g, *absmax[2];
    void *s[2];
    int64_t step;
} job;

static void job_init(job *j, const char *name, int dt, size_t n)
{
    unsigned seed = 1;
    size_t i, es = dt == ETK_FLOAT32 ? 4 : dt == ETK_BFLOAT16 ? 2 : 1;
    memset(j, 0, sizeof *j);
    j->name = name, j->dt = dt, j->n = n;
    j->p = malloc(n * 4), j->g = malloc(n * 4);
    for (i = 0; i < n; i++) j->p[i] = frand(&seed), j->g[i] = 1e-2f * frand(&seed);
    for (i = 0; i < 2; i++) {
        j->s[i] = calloc(n, es);
        j->absmax[i] = calloc(n / ETK_QBLOCK + 1, 4);
    }
}

static void job_run(job *j)
{
    etk_adam_hp hp = {1e-3, 0.9, 0.999, 1e-8, 0.0, 0, 0, 0};
    etk_tensor t;
    memset(&t, 0, sizeof t);
    t.param = j->p, t.grad = j->g, t.state[0] = j->s[0], t.state[1] = j->s[1];
    t.absmax[0] = j->absmax[0], t.absmax[1] = j->absmax[1];
    t.n = j->n, t.step = ++j->step, t.dtype = ETK_FLOAT32, t.state_dtype = (uint8_t)j->dt;
    if (etk_step(ETK_RULE_ADAM, &t, 1, &hp, 1, NULL, NULL) != ETK_OK) abort();
}

static void steps(size_t n, int threads, int reps)
{
    job js[3];
    double tm[3][64];
    int k, r;
    const size_t inner = n < 1000000 ? 20000000 / n : 1;
    etk_set_num_threads(threads);
    job_init(&js[0], "float32", ETK_FLOAT32, n);
    job_init(&js[1], "bfloat16", ETK_BFLOAT16, n);
    job_init(&js[2], "int8", ETK_QINT8, n);
    for (k = 0; k < 3; k++) job_run(&js[k]);
    for (r = 0; r < reps; r++)
        for (k = 0; k < 3; k++) {
            size_t q;
            double t0 = now();
            for (q = 0; q < inner; q++) job_run(&js[k]);
            tm[k][r] = (now() - t0) / (double)inner;
        }
    for (k = 0; k < 3; k++) {
        qsort(tm[k], (size_t)reps, sizeof(double), cmpd);
        printf("adam n=%-9zu threads=%d %-9s %9.3f ms  %6.3f ns/elem (median)  %6.3f (fastest)\n", n, threads,
               js[k].name, 1e3 * tm[k][reps / 2], 1e9 * tm[k][reps / 2] / (double)n, 1e9 * tm[k][0] / (double)n);
    }
    for (k = 0; k < 3; k++) {
        free(js[k].p), free(js[k].g);
        for (r = 0; r < 2; r++) free(js[k].s[r]), free(js[k].absmax[r]);
    }
}

static void codecs(void)
{
    enum { N = 8192, R = 4000, REPS = 9 };
    static float x[N], y[N], am[N / 256];
    static uint16_t h[N];
    static uint8_t c[N];
    double tm[5][REPS];
    const char *names[5] = {"bf16 decode", "bf16 encode", "bf16 encode sr", "q8 decode", "q8 encode"};
    unsigned seed = 7;
    int i, r, k;
    etk_set_num_threads(1);
    for (i = 0; i < N; i++) x[i] = 1e-3f * frand(&seed);
    etk_bf16_encode(x, h, N, 0, 0, 0, 0, 0);
    etk_q8_encode(x, c, am, N, 1);
    for (r = 0; r < REPS; r++)
        for (k = 0; k < 5; k++) {
            double t0 = now();
            for (i = 0; i < R; i++) switch (k) {
                case 0: etk_bf16_decode(h, y, N); break;
                case 1: etk_bf16_encode(x, h, N, 0, 0, 0, 0, 0); break;
                case 2: etk_bf16_encode(x, h, N, 1, 5, 3, 1, (size_t)i); break;
                case 3: etk_q8_decode(c, am, y, N, 1); break;
                default: etk_q8_encode(x, c, am, N, 1); break;
                }
            tm[k][r] = (now() - t0) / ((double)R * N);
        }
    for (k = 0; k < 5; k++) {
        qsort(tm[k], REPS, sizeof(double), cmpd);
        printf("%-15s %6.3f ns/elem (L1/L2, 1 thread)\n", names[k], 1e9 * tm[k][REPS / 2]);
    }
}

int main(int argc, char **argv)
{
    size_t big = argc > 1 ? (size_t)atol(argv[1]) : 50000000;
    if (argc > 2 && etk_set_simd_variant(argv[2]) != 0) return 1;
    printf("simd %s\n", etk_simd_variant());
    codecs();
    steps(16384, 1, 41);
    steps(big, 1, 5);
    steps(big, 2, 5);
    return 0;
}
