/*
 * fit_linear.c -- fit y = X w + b by least squares with etakit's C API.
 *
 * Two parameter tensors (w and b) are updated by AdamW in one multi-tensor
 * call per step, with a warmup-cosine learning-rate schedule evaluated by
 * the C step itself.  Build and run: make -C examples/c run
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "etakit.h"

enum { N = 512, D = 8, STEPS = 600 };

static double X[N][D], y[N];

static unsigned long long state = 12345;
static double uniform(void) /* in [-1, 1) */
{
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(state >> 11) / 4503599627370496.0 - 1.0;
}

/* mean squared error and its gradient */
static double loss_grad(const float *w, const float *b, float *gw, float *gb)
{
    double loss = 0.0, acc[D + 1];
    int i, j;
    memset(acc, 0, sizeof acc);
    for (i = 0; i < N; i++) {
        double r = b[0] - y[i];
        for (j = 0; j < D; j++) r += X[i][j] * w[j];
        loss += r * r;
        for (j = 0; j < D; j++) acc[j] += 2.0 * r * X[i][j];
        acc[D] += 2.0 * r;
    }
    for (j = 0; j < D; j++) gw[j] = (float)(acc[j] / N);
    gb[0] = (float)(acc[D] / N);
    return loss / N;
}

int main(void)
{
    const double w_true[D] = {1.5, -2.0, 0.5, 3.0, -1.0, 0.25, 2.0, -0.75}, b_true = 0.5;
    float w[D] = {0}, b[1] = {0}, gw[D], gb[1];
    float mw[D] = {0}, vw[D] = {0}, mb[1] = {0}, vb[1] = {0};
    etk_adam_hp hp = {0.0, 0.9, 0.999, 1e-8, 1e-4, 0, 0, 1}; /* AdamW; lr comes from the schedule */
    /* warmup(cosine(0.1, 570, min 1e-3), 30): post-order nodes, root last */
    etk_sched_node nodes[2];
    etk_schedule sched = {nodes, 2, NULL, 0};
    etk_hp_schedule bind = {0, 0, &sched}; /* group 0, field lr (offset 0) */
    etk_tensor t[2];
    double first = 0.0, loss = 0.0, err = 0.0;
    int i, j, k, st;

    memset(nodes, 0, sizeof nodes);
    nodes[0].kind = ETK_S_COSINE;
    nodes[0].p[0] = 0.1, nodes[0].p[1] = STEPS - 30, nodes[0].p[2] = 1e-3;
    nodes[1].kind = ETK_S_WARMUP;
    nodes[1].child = 0;
    nodes[1].p[0] = 30;
    if (etk_schedule_check(&sched) != ETK_OK) return 1;

    for (i = 0; i < N; i++) {
        y[i] = b_true + 0.01 * uniform();
        for (j = 0; j < D; j++) {
            X[i][j] = uniform();
            y[i] += X[i][j] * w_true[j];
        }
    }
    memset(t, 0, sizeof t);
    t[0].param = w, t[0].grad = gw, t[0].state[0] = mw, t[0].state[1] = vw, t[0].n = D;
    t[1].param = b, t[1].grad = gb, t[1].state[0] = mb, t[1].state[1] = vb, t[1].n = 1;
    for (i = 0; i < 2; i++) t[i].dtype = t[i].state_dtype = ETK_FLOAT32;

    for (k = 0; k < STEPS; k++) {
        loss = loss_grad(w, b, gw, gb);
        if (k == 0) first = loss;
        t[0].step = t[1].step = k + 1;
        st = etk_adam_multi_scheduled(t, 2, &hp, 1, &bind, 1, k);
        if (st != ETK_OK) {
            fprintf(stderr, "step %d failed: %s\n", k, etk_strerror(st));
            return 1;
        }
    }
    loss = loss_grad(w, b, gw, gb);
    for (j = 0; j < D; j++) err = fmax(err, fabs(w[j] - w_true[j]));
    err = fmax(err, fabs(b[0] - b_true));
    printf("etakit %d.%d.%d C example (SIMD %s): AdamW + warmup-cosine, %d steps\n", ETAKIT_VERSION_MAJOR,
           ETAKIT_VERSION_MINOR, ETAKIT_VERSION_PATCH, etk_simd_variant(), STEPS);
    printf("mean squared error: %.6f -> %.6f; largest parameter error %.4f\n", first, loss, err);
    return loss < 1e-3 && err < 0.01 ? 0 : 1;
}
