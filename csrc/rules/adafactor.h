/*
 * rules/adafactor.h -- Adafactor (Shazeer and Stern 2018, "Adafactor:
 * Adaptive Learning Rates with Sublinear Memory Cost"), as
 * torch.optim.Adafactor.
 *
 *   g = -grad if maximize else grad;  w = t^beta2_decay  (1 - beta2_t)
 *   alpha = max(eps2, ||p|| / sqrt(n)) * min(lr, 1 / sqrt(t))     (p before the decay)
 *   a tensor (..., R, C) of two or more dimensions, per matrix of the batch:
 *     row_var = lerp(row_var, sum_c g^2 / C, w);  col_var = lerp(col_var, sum_r g^2 / R, w)
 *     v = row_var col_var / max(mean(row_var), eps1)
 *   a vector (or a scalar):  variance = lerp(variance, g^2, w);  v = variance
 *   u = g / sqrt(max(v, eps1^2));  p *= 1 - lr weight_decay   (if weight_decay != 0)
 *   p -= alpha / max(1, RMS(u) / d) * u
 * lerp is PyTorch's: a + w (b - a) for w < 0.5, else b - (b - a)(1 - w).
 * eps1 None (NaN here) is the machine epsilon of the tensor's dtype.
 *
 * A matrix needs its row and column sums of g^2 before any element can be
 * updated, and the update's norm before the parameter can be, so a step
 * takes four phases:
 *   0  matrices, over tiles of at most ETK_AF_WIDTH columns by as many rows
 *      as make ETK_AF_TILE elements (a matrix that fits one tile is one,
 *      several to a unit).  A tile sums g^2 along its rows (over its stripe
 *      of columns, in ETK_LANES lanes) and down its columns (over its group
 *      of rows, row after row).  A sum that covers a whole row (column)
 *      updates row_var (col_var) at once; otherwise it goes to scratch as a
 *      partial.  A matrix that is one tile is finished here (its mean too).
 *      Reads g.
 *   1  matrices of more than one tile, one matrix at a time: the partials
 *      added in stripe (group) order, row_var and col_var updated, and
 *      max(mean(row_var), eps1) into scratch.  O(R + C) per matrix.
 *   2  every tensor, over blocks, reducing ||p||^2 and ||u||^2 (vectors
 *      update variance here).  Reads p and g.
 *   3  every tensor: the update.  Reads p and g, writes p.
 * A vector takes two passes over memory (2 and 3), a matrix three (0, 2
 * and 3).  Row and column statistics are computed in double and stored in
 * the state dtype; element-wise work is in T, one rounding at a time.  In
 * the element loops v = (row_var / max(mean, eps1)) col_var and
 * u = g / sqrt(v) (PyTorch: (row_var col_var) / max(...), rsqrt(v) g): the
 * same values up to rounding, with one division per row instead of per
 * element.  Every sum has a fixed order whatever the thread count and the
 * vector width.  Scratch: a double per matrix, plus partial sums (about
 * n / 128 doubles at most) for matrices of more than one tile.
 */
#ifndef ETK_RULE_ADAFACTOR_COMMON
#define ETK_RULE_ADAFACTOR_COMMON
#include <float.h>
#include <string.h>

#define ETK_AF_TILE ((size_t)65536) /* elements of a tile, at most */
#define ETK_AF_WIDTH ((size_t)256)  /* columns of a tile, at most */

/* How a matrix tensor is cut into tiles: a function of (n, rows, cols) only. */
typedef struct etk_af_geom {
    size_t R, C, mat, nb; /* rows, columns, elements of one matrix, matrices in the batch */
    size_t w, h;          /* columns and rows of a full tile */
    size_t ns, nk;        /* stripes of columns and groups of rows of a matrix */
    size_t q0, q1;        /* matrices per unit in phase 0 (1 unless a matrix is one tile) and in phase 1 */
    /* scratch (doubles): row partials [nb][ns][R] if ns > 1, column partials
     * [nb][nk][C] if nk > 1, then max(mean(row_var), eps1) [nb] */
    size_t rowpart, colpart, denom, size;
} etk_af_geom;

static ETK_ALWAYS_INLINE etk_af_geom etk_af_geometry(const etk_tensor *t)
{
    etk_af_geom g;
    g.R = (size_t)t->rows;
    g.C = (size_t)t->cols;
    g.mat = g.R * g.C;
    g.nb = t->n / g.mat;
    g.w = g.C < ETK_AF_WIDTH ? g.C : ETK_AF_WIDTH;
    g.h = ETK_AF_TILE / g.w < g.R ? ETK_AF_TILE / g.w : g.R;
    g.ns = (g.C + g.w - 1) / g.w;
    g.nk = (g.R + g.h - 1) / g.h;
    g.q1 = g.mat < ETK_AF_TILE ? ETK_AF_TILE / g.mat : 1;
    g.q0 = g.ns == 1 && g.nk == 1 ? g.q1 : 1;
    g.rowpart = 0;
    g.colpart = g.ns > 1 ? g.nb * g.ns * g.R : 0;
    g.denom = g.colpart + (g.nk > 1 ? g.nb * g.nk * g.C : 0);
    g.size = g.denom + g.nb;
    return g;
}

static ETK_ALWAYS_INLINE double etk_af_lerp(double a, double b, double w, double omw, int hi)
{
    return hi ? b - (b - a) * omw : a + w * (b - a);
}

typedef struct etk_adafactor_coef {
    etk_af_geom geo;
    double *scratch;
    double w, one_minus_w, eps1, eps1_sq, decay, gsign, neg_step;
    int lerp_hi, wd;
} etk_adafactor_coef;

/* max(mean(row_var), eps1) from the sum of a matrix's row_var */
static ETK_ALWAYS_INLINE double etk_af_denom(double total, const etk_adafactor_coef *c)
{
    const double mean = total / (double)c->geo.R;
    return mean < c->eps1 ? c->eps1 : mean; /* clamp(min=eps1): NaN stays NaN */
}
#endif

#if defined(ETK_RULE_HOST)

static const etk_field_info adafactor_fields[] = {
    ETK_NONNEG(etk_adafactor_hp, lr, 1),
    ETK_REAL(etk_adafactor_hp, beta2_decay, 0, -ETK_INF, 0.0, 1, 0),
    ETK_NONNEG_OR_NONE(etk_adafactor_hp, eps1),
    ETK_NONNEG(etk_adafactor_hp, eps2, 0),
    ETK_REAL(etk_adafactor_hp, d, 0, 1.0, ETK_INF, 0, 1),
    ETK_NONNEG(etk_adafactor_hp, weight_decay, 1),
    ETK_FLAG(etk_adafactor_hp, maximize),
};
static const etk_slot_info adafactor_slots[] = {
    {"row_var", ETK_SLOT_ROWS, ETK_INIT_ZERO, 0},
    {"col_var", ETK_SLOT_COLS, ETK_INIT_ZERO, 0},
    {"variance", ETK_SLOT_VECTOR, ETK_INIT_ZERO, 0},
};

/* every slot; the engine asks each tensor only for those of its form */
static unsigned adafactor_needs(const void *hp) { (void)hp; return 7u; }

static size_t adafactor_unit(unsigned phase, const etk_tensor *t, size_t at, size_t *end)
{
    etk_af_geom g;
    size_t b, rem, k, hk, s, ws, start;
    if (t->rows <= 0) { /* vectors do nothing in phases 0 and 1: one unit */
        *end = t->n;
        return 0;
    }
    g = etk_af_geometry(t);
    b = at / g.mat;
    if (phase == 1 || (g.ns == 1 && g.nk == 1)) { /* whole matrices */
        const size_t q = phase == 1 ? g.q1 : g.q0, b0 = b / q * q;
        *end = (b0 + q < g.nb ? b0 + q : g.nb) * g.mat;
        return b0 * g.mat;
    }
    /* tiles in (matrix, row group, stripe) order, each tile's elements numbered row after row */
    rem = at - b * g.mat;
    k = rem / (g.h * g.C);
    hk = g.R - k * g.h < g.h ? g.R - k * g.h : g.h;
    rem -= k * g.h * g.C;
    s = rem / (hk * g.w);
    ws = g.C - s * g.w < g.w ? g.C - s * g.w : g.w;
    start = b * g.mat + k * g.h * g.C + s * hk * g.w;
    *end = start + hk * ws;
    return start;
}

static size_t adafactor_scratch(const void *hp, const etk_tensor *t)
{
    etk_af_geom g;
    (void)hp;
    if (t->rows <= 0) return 0;
    g = etk_af_geometry(t);
    return g.size;
}

static void adafactor_prepare(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *red, void *cf)
{
    const etk_adafactor_hp *h = (const etk_adafactor_hp *)hp;
    etk_adafactor_coef *c = (etk_adafactor_coef *)cf;
    const double k = (double)t->step;
    const double eps1 = h->eps1 == h->eps1 ? h->eps1 : t->dtype == ETK_FLOAT32 ? (double)FLT_EPSILON : DBL_EPSILON;
    memset(c, 0, sizeof *c);
    if (t->rows > 0) c->geo = etk_af_geometry(t);
    c->scratch = red->scratch;
    c->w = pow(k, h->beta2_decay);
    c->one_minus_w = 1.0 - c->w;
    c->lerp_hi = !(fabs(c->w) < 0.5);
    c->eps1 = eps1;
    c->eps1_sq = eps1 * eps1;
    c->gsign = h->maximize ? -1.0 : 1.0;
    c->wd = h->weight_decay != 0.0;
    c->decay = 1.0 - h->lr * h->weight_decay;
    if (phase == 3) {
        const double pp = red->tensor[2 * ETK_MAX_RED], uu = red->tensor[2 * ETK_MAX_RED + 1];
        const double inv_sqrt_t = 1.0 / sqrt(k), rms = sqrt(pp) / sqrt((double)t->n);
        const double rho = inv_sqrt_t < h->lr ? inv_sqrt_t : h->lr;        /* Python's min(lr, ...) */
        const double alpha = (rms > h->eps2 ? rms : h->eps2) * rho;        /* max(eps2, ...) */
        const double clip = sqrt(uu) / (sqrt((double)t->n) * h->d);
        const double denom = clip > 1.0 ? clip : 1.0;                       /* max(1.0, ...) */
        c->neg_step = -alpha / denom;
    }
}
ETK_COEF_FITS(etk_adafactor_coef);

static const etk_rule_desc etk_rule_desc_adafactor = {
    {"adafactor", sizeof(etk_adafactor_hp), adafactor_fields, ETK_NFIELDS(adafactor_fields), adafactor_slots, 3,
     ETK_RULE_USES_STEP | ETK_RULE_MATRIX, NULL, 0},
    4, {0, 0, 2, 0}, NULL, adafactor_needs, adafactor_prepare, NULL, NULL,
    3u, adafactor_unit, adafactor_scratch,
};

#elif defined(ETK_RULE_LOOPS)

/* Phase 0, one tile of hk rows by ws columns (row stride ld) of a matrix of
 * R rows and C columns.  Sums of g^2 down each column (over the tile's rows,
 * row after row) into col[0..ws); along each row (over the tile's columns,
 * in ETK_LANES lanes) into row[0..hk), or, when the tile spans whole rows
 * (row == NULL), straight into row_var: rv[0..hk).  Returns the sum of the
 * new row_var values in row order (0 when row != NULL). */
ETK_TGT static double FN(af_tile)(const T *restrict g, size_t ld, size_t hk, size_t ws, double *restrict col,
                                  double *restrict row, S *restrict rv, const etk_adafactor_coef *c)
{
    const double w = c->w, omw = c->one_minus_w, C = (double)c->geo.C;
    const int hi_w = c->lerp_hi;
    double total = 0.0;
    size_t r, k;
    int j;
    for (k = 0; k < ws; k++) col[k] = 0.0;
    for (r = 0; r < hk; r++) {
        const T *restrict gr = g + r * ld;
        double sum;
        if (ws < ETK_LANES) { /* one element per lane: the lane sum is the sum in column order */
            sum = 0.0;
            for (k = 0; k < ws; k++) {
                double x = (double)gr[k];
                x = x * x;
                sum += x;
                col[k] += x;
            }
        } else {
            double acc[ETK_LANES];
            for (j = 0; j < ETK_LANES; j++) acc[j] = 0.0;
            for (k = 0; k + ETK_LANES <= ws; k += ETK_LANES) {
#pragma omp simd
                for (j = 0; j < ETK_LANES; j++) {
                    double x = (double)gr[k + (size_t)j];
                    x = x * x;
                    acc[j] += x;
                    col[k + (size_t)j] += x;
                }
            }
            for (j = 0; k + (size_t)j < ws; j++) {
                double x = (double)gr[k + (size_t)j];
                x = x * x;
                acc[j] += x;
                col[k + (size_t)j] += x;
            }
            sum = etk_lane_sum(acc);
        }
        if (row) {
            row[r] = sum;
        } else {
            const S x = (S)etk_af_lerp((double)rv[r], sum / C, w, omw, hi_w);
            rv[r] = x;
            total += (double)x;
        }
    }
    return total;
}

/* col_var[0..n) = lerp(col_var, sums / R, w), in double, stored in S. */
ETK_TGT static ETK_ALWAYS_INLINE void FN(af_col_update)(S *restrict cv, const double *restrict sums, size_t n,
                                                const etk_adafactor_coef *c)
{
    const double w = c->w, omw = c->one_minus_w, R = (double)c->geo.R;
    const int hi_w = c->lerp_hi;
    size_t k;
    for (k = 0; k < n; k++) cv[k] = (S)etk_af_lerp((double)cv[k], sums[k] / R, w, omw, hi_w);
}

ETK_TGT static void FN(adafactor_p0)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adafactor_coef *c = (const etk_adafactor_coef *)cf;
    const etk_af_geom *G = &c->geo;
    const T *g = (const T *)t->grad;
    S *rv = (S *)t->state[0], *cv = (S *)t->state[1];
    double col[ETK_AF_WIDTH];
    (void)red;
    if (t->rows <= 0) return;
    if (G->ns == 1 && G->nk == 1) { /* whole matrices, one tile each: finished here */
        size_t b;
        for (b = lo / G->mat; b < hi / G->mat; b++) {
            const double total = FN(af_tile)(g + b * G->mat, G->C, G->R, G->C, col, NULL, rv + b * G->R, c);
            FN(af_col_update)(cv + b * G->C, col, G->C, c);
            c->scratch[G->denom + b] = etk_af_denom(total, c);
        }
    } else { /* one tile: [lo, hi) is the unit adafactor_unit gave */
        const size_t b = lo / G->mat;
        const size_t k = (lo - b * G->mat) / (G->h * G->C), r0 = k * G->h;
        const size_t hk = G->R - r0 < G->h ? G->R - r0 : G->h;
        const size_t s = (lo - b * G->mat - r0 * G->C) / (hk * G->w), c0 = s * G->w;
        const size_t ws = G->C - c0 < G->w ? G->C - c0 : G->w;
        double *cols = G->nk > 1 ? c->scratch + G->colpart + (b * G->nk + k) * G->C + c0 : col;
        double *rows = G->ns > 1 ? c->scratch + G->rowpart + (b * G->ns + s) * G->R + r0 : NULL;
        FN(af_tile)(g + b * G->mat + r0 * G->C + c0, G->C, hk, ws, cols, rows, rv + b * G->R + r0, c);
        if (G->nk == 1) FN(af_col_update)(cv + b * G->C + c0, col, ws, c);
    }
}

/* Phase 1, matrices of more than one tile, whole matrices: add the partials
 * in order, update row_var and col_var, and max(mean(row_var), eps1). */
ETK_TGT static void FN(adafactor_p1)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adafactor_coef *c = (const etk_adafactor_coef *)cf;
    const etk_af_geom *G = &c->geo;
    const size_t R = G->R, C = G->C;
    const double w = c->w, omw = c->one_minus_w;
    const int hi_w = c->lerp_hi;
    size_t b, r, j, s;
    (void)red;
    if (t->rows <= 0 || (G->ns == 1 && G->nk == 1)) return;
    for (b = lo / G->mat; b < hi / G->mat; b++) {
        S *rv = (S *)t->state[0] + b * R;
        double total = 0.0;
        if (G->ns > 1) {
            double *rp = c->scratch + G->rowpart + b * G->ns * R;
            for (s = 1; s < G->ns; s++)
                for (r = 0; r < R; r++) rp[r] += rp[s * R + r];
            for (r = 0; r < R; r++) rv[r] = (S)etk_af_lerp((double)rv[r], rp[r] / (double)C, w, omw, hi_w);
        }
        for (r = 0; r < R; r++) total += (double)rv[r];
        c->scratch[G->denom + b] = etk_af_denom(total, c);
        if (G->nk > 1) {
            double *cp = c->scratch + G->colpart + b * G->nk * C;
            for (s = 1; s < G->nk; s++)
                for (j = 0; j < C; j++) cp[j] += cp[s * C + j];
            FN(af_col_update)((S *)t->state[1] + b * C, cp, C, c);
        }
    }
}

/* u for the elements [lo, hi) of a matrix tensor, one row segment at a time
 * (`at`: the element's offset from lo):
 * v = (row_var[row] / denom[matrix]) col_var[col], u = g / sqrt(max(v, eps1^2)). */
#define ETK_AF_ROW_SEGMENTS(BODY)                                                                              \
    do {                                                                                                     \
        size_t row_ = lo / G->C, c0_ = lo - row_ * G->C, b_ = row_ / G->R, rib_ = row_ - b_ * G->R, i_ = lo; \
        while (i_ < hi) {                                                                                    \
            const size_t len = hi - i_ < G->C - c0_ ? hi - i_ : G->C - c0_;                                  \
            const T rs = (T)((double)rv[row_] / c->scratch[G->denom + b_]);                                  \
            const S *restrict cvb = cv + b_ * G->C + c0_;                                                    \
            const T *restrict gg = g + i_;                                                                   \
            const size_t at = i_ - lo;                                                                       \
            size_t j;                                                                                        \
            _Pragma("omp simd") for (j = 0; j < len; j++)                                                    \
            {                                                                                                \
                T v = rs * LD(cvb[j]);                                                                       \
                T u;                                                                                         \
                v = v < e2 ? e2 : v;                                                                         \
                u = (gg[j] * gsign) / ETK_SQRT(v);                                                           \
                BODY;                                                                                        \
            }                                                                                                \
            i_ += len;                                                                                       \
            c0_ = 0;                                                                                         \
            row_++;                                                                                          \
            if (++rib_ == G->R) { /* the next matrix of the batch */                                        \
                rib_ = 0;                                                                                    \
                b_++;                                                                                        \
            }                                                                                                \
        }                                                                                                    \
    } while (0)

ETK_TGT static ETK_ALWAYS_INLINE void FN(af_vector_p2)(const T *restrict p, const T *restrict g, S *restrict var,
                                                       size_t n, const etk_adafactor_coef *c, double *red,
                                                       const int hi_w)
{
    const T gsign = (T)c->gsign, w = (T)c->w, omw = (T)c->one_minus_w, e2 = (T)c->eps1_sq;
    double ap[ETK_LANES], au[ETK_LANES];
    size_t i;
    int j;
    for (j = 0; j < ETK_LANES; j++) ap[j] = au[j] = 0.0;
    for (i = 0; i < n; i += ETK_LANES) {
        const int m = n - i < ETK_LANES ? (int)(n - i) : ETK_LANES;
#pragma omp simd
        for (j = 0; j < m; j++) {
            const T pi = p[i + (size_t)j], gi = g[i + (size_t)j] * gsign, g2 = gi * gi;
            T v = LD(var[i + (size_t)j]), u;
            v = hi_w ? g2 - (g2 - v) * omw : v + w * (g2 - v);
            var[i + (size_t)j] = ST(v);
            v = v < e2 ? e2 : v;
            u = gi / ETK_SQRT(v);
            ap[j] += (double)pi * (double)pi;
            au[j] += (double)u * (double)u;
        }
    }
    red[0] = etk_lane_sum(ap);
    red[1] = etk_lane_sum(au);
}

/* Phase 2, one block: ||p||^2 and ||u||^2 (a vector updates variance first). */
ETK_TGT static void FN(adafactor_p2)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adafactor_coef *c = (const etk_adafactor_coef *)cf;
    const T *restrict p = (const T *)t->param, *restrict g = (const T *)t->grad;
    if (t->rows <= 0) {
        if (c->lerp_hi)
            FN(af_vector_p2)(p + lo, g + lo, (S *)t->state[2] + lo, hi - lo, c, red, 1);
        else
            FN(af_vector_p2)(p + lo, g + lo, (S *)t->state[2] + lo, hi - lo, c, red, 0);
    } else {
        const etk_af_geom *G = &c->geo;
        const T gsign = (T)c->gsign, e2 = (T)c->eps1_sq;
        const S *restrict rv = (const S *)t->state[0], *restrict cv = (const S *)t->state[1];
        T ub[ETK_BLOCK];
        double ap[ETK_LANES], au[ETK_LANES];
        size_t i, n = hi - lo;
        int j;
        ETK_AF_ROW_SEGMENTS(ub[at + j] = u);
        for (j = 0; j < ETK_LANES; j++) ap[j] = au[j] = 0.0;
        for (i = 0; i < n; i += ETK_LANES) {
            const int m = n - i < ETK_LANES ? (int)(n - i) : ETK_LANES;
#pragma omp simd
            for (j = 0; j < m; j++) {
                const T pi = p[lo + i + (size_t)j], u = ub[i + (size_t)j];
                ap[j] += (double)pi * (double)pi;
                au[j] += (double)u * (double)u;
            }
        }
        red[0] = etk_lane_sum(ap);
        red[1] = etk_lane_sum(au);
    }
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(af_vector_p3)(T *restrict p, const T *restrict g, const S *restrict var,
                                                       size_t n, const etk_adafactor_coef *c, const int wd)
{
    const T gsign = (T)c->gsign, e2 = (T)c->eps1_sq, decay = (T)c->decay, step = (T)c->neg_step;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        T pi = p[i], v = LD(var[i]), u;
        if (wd) pi = pi * decay;
        v = v < e2 ? e2 : v;
        u = (g[i] * gsign) / ETK_SQRT(v);
        p[i] = pi + step * u;
    }
}

ETK_TGT static ETK_ALWAYS_INLINE void FN(af_matrix_p3)(const etk_tensor *t, size_t lo, size_t hi,
                                                       const etk_adafactor_coef *c, const int wd)
{
    const etk_af_geom *G = &c->geo;
    const T gsign = (T)c->gsign, e2 = (T)c->eps1_sq, decay = (T)c->decay, step = (T)c->neg_step;
    T *restrict p = (T *)t->param + lo;
    const T *restrict g = (const T *)t->grad;
    const S *restrict rv = (const S *)t->state[0], *restrict cv = (const S *)t->state[1];
    ETK_AF_ROW_SEGMENTS({
        T pi = p[at + j];
        if (wd) pi = pi * decay;
        p[at + j] = pi + step * u;
    });
}

/* Phase 3: the update. */
ETK_TGT static void FN(adafactor_p3)(const etk_tensor *t, size_t lo, size_t hi, const void *cf, double *red)
{
    const etk_adafactor_coef *c = (const etk_adafactor_coef *)cf;
    (void)red;
    if (t->rows <= 0) {
        T *p = (T *)t->param + lo;
        const T *g = (const T *)t->grad + lo;
        const S *var = (const S *)t->state[2] + lo;
        if (c->wd)
            FN(af_vector_p3)(p, g, var, hi - lo, c, 1);
        else
            FN(af_vector_p3)(p, g, var, hi - lo, c, 0);
    } else if (c->wd) {
        FN(af_matrix_p3)(t, lo, hi, c, 1);
    } else {
        FN(af_matrix_p3)(t, lo, hi, c, 0);
    }
}
#undef ETK_AF_ROW_SEGMENTS

#elif defined(ETK_RULE_ROW)
[ETK_RULE_ADAFACTOR] = {{ETK_FNS(adafactor_p0), ETK_FNS(adafactor_p1), ETK_FNS(adafactor_p2), ETK_FNS(adafactor_p3)}},
#endif
