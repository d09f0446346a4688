/*
 * engine.c -- the part of a step that is not the element loop.
 *
 * For each call: validate every argument (nothing is written unless all of
 * it is valid), then run the rule's phases over the concatenation of all
 * tensors, split into one contiguous range per thread, in one OpenMP
 * parallel region per call (barriers between phases), however many tensors.
 * A step over hundreds of small tensors pays one fork/join, and a single
 * large tensor is shared evenly.  Range boundaries fall on blocks of
 * ETK_BLOCK elements of a tensor, the unit of reductions, so sums are formed
 * over the same blocks and combined in the same order for any thread count.
 *
 * Per-step scalars are prepared by the rule, in double, once per tensor piece
 * (at most tensors + threads pieces per phase).  A phase that runs over the
 * rule's own units of work (etk_rule_desc.unit) is cut on unit boundaries
 * instead of block boundaries, in the same way for every thread count.
 *
 * A call may run some of the phases only (etk_step_opts.phases), for rules
 * whose step has host work between phases.
 *
 * The training loop's other passes ride on the same region
 * (etk_step_opts: loss scale, global-norm clipping, non-finite policy, EMA).
 * A norm pass over the gradients comes first, with block partials combined
 * serially in a fixed order, and decides before anything is written whether
 * the step runs and with what gradient factor m.  The rules whose loops read
 * grad[i] * gsign run with gsign * m (etk_rule_gsign_at); the others read
 * each block of the gradient scaled into an L1 buffer (or, for phases over
 * units, a scaled copy).  The EMA follows the last phase block by block,
 * while the parameters are in cache.
 */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "etk_internal.h"

const char *etk_strerror(int status)
{
    switch (status) {
    case ETK_OK: return "success";
    case ETK_EARG: return "invalid argument (NULL buffer, bad count or step)";
    case ETK_EHPARAM: return "hyperparameter out of range or not finite";
    case ETK_EDTYPE: return "unsupported dtype combination";
    case ETK_ESTATE: return "a state buffer required by the options is NULL";
    case ETK_EGROUP: return "tensor group index out of range";
    case ETK_ERULE: return "unknown rule";
    case ETK_ESHAPE: return "matrix shape (rows, cols) inconsistent with the tensor size";
    case ETK_ENOMEM: return "out of memory";
    case ETK_ENONFINITE: return "a gradient holds inf or NaN";
    default: return "unknown status";
    }
}

static int etk_fail(etk_error *err, int status, int64_t tensor, int32_t group, int32_t slot, const char *field,
                    const char *message)
{
    if (err) {
        err->status = status;
        err->tensor = tensor;
        err->group = group;
        err->slot = slot;
        err->field = field;
        err->message = message;
    }
    return status;
}

/* ------------------------------------------------------------ one call */

#define ETK_TRED_STRIDE (ETK_MAX_PHASES * ETK_MAX_RED)

typedef struct etk_call {
    const etk_rule_desc *r;
    const etk_rule_loops *loops;
    etk_loop_fn bf16;         /* the rule's fused bfloat16 loop, if any */
    const etk_kernels *kernels;
    const etk_tensor *ts;
    size_t count;
    const unsigned char *hps; /* with scheduled values written in */
    size_t total;             /* elements over all tensors */
    size_t nhps;
    size_t *bbase;            /* per tensor: index of its first block (reducing rules) */
    double *part;             /* per block: ETK_MAX_RED partial sums of the current phase */
    double *tred;             /* per tensor: ETK_TRED_STRIDE reduced values, by phase */
    double *gsum;             /* per group: the same, summed over its tensors in order */
    double *csum;             /* the same, summed over every tensor in order */
    double *gstate;           /* per group: the rule's persistent scalars */
    double *scratch;          /* the rule's per-call scratch (etk_rule_desc.scratch) */
    size_t *sbase;            /* per tensor: offset of its scratch */
    unsigned phases;          /* bit p: run phase p */
    unsigned last;            /* the last phase to run (nphases + nside if none) */
    int needs_grad;           /* a step phase runs (side phases read no gradient) */
    double shared[ETK_MAX_SHARED]; /* the rule's per-call scalars (etk_rule_desc.shared) */
    /* the training loop's other passes (etk_step_opts) */
    const etk_step_opts *o;
    int norm_pass;            /* make the norm pass before the phases */
    size_t *nbase;            /* per tensor: index of its first block (norm partials) */
    double *npart;            /* per block: 3 norm partials (passes.h) */
    const char *why;          /* why the gradients are not finite (ETK_ENONFINITE's message) */
    double norm;              /* the global norm (NaN if not made) */
    double gmul;              /* gradients are read as grad * gmul */
    int gscaled;              /* gmul != 1 */
    size_t gsign_at;          /* the rule folds gmul into its gsign (etk_rule_gsign_at), or 0 */
    int skip;                 /* a non-finite gradient under SKIP or RAISE: nothing runs */
    int64_t bad_tensor;       /* the first tensor with a non-finite gradient, or -1 */
    double ema_w;             /* > 0: EMA after the rule's last step phase, in this call */
    int ema_fused;            /* the EMA rides on the last phase's block loop (else a pass of its own) */
    unsigned char *gcopy;     /* phases over units, gradients scaled: every gradient scaled (heap) */
    size_t *gcoff;            /* per tensor: byte offset of its scaled copy */
} etk_call;

static size_t etk_esize(const etk_tensor *t)
{
    return t->dtype == ETK_FLOAT32 ? sizeof(float) : t->dtype == ETK_BFLOAT16 ? sizeof(uint16_t) : sizeof(double);
}

static etk_reduced etk_reduced_of(const etk_call *c, size_t i)
{
    etk_reduced r;
    const uint32_t g = c->ts[i].group;
    r.tensor = c->tred ? c->tred + i * ETK_TRED_STRIDE : NULL;
    r.group = c->gsum ? c->gsum + (size_t)g * ETK_TRED_STRIDE : NULL;
    r.gstate = c->gstate ? c->gstate + (size_t)g * c->r->info.ngroup_state : NULL;
    r.call = c->csum;
    r.scratch = c->scratch ? c->scratch + c->sbase[i] : NULL;
    r.shared = c->shared;
    return r;
}

static const void *etk_hp_of(const etk_call *c, const etk_tensor *t)
{
    return c->hps ? c->hps + (size_t)t->group * c->r->info.hp_size : NULL;
}

static int etk_by_units(const etk_call *c, unsigned phase) { return c->r->unit_phases >> phase & 1u; }

#ifdef _OPENMP
/* Round a global element offset down to a block boundary (or, with `units`,
 * a boundary of the rule's units in `phase`) of the tensor that holds it.
 * Every thread snaps every cut the same way, so the pieces tile. */
static size_t etk_snap_to(const etk_call *c, unsigned phase, int units, size_t at)
{
    size_t i, off = 0, end;
    for (i = 0; i < c->count; off += c->ts[i].n, i++)
        if (at < off + c->ts[i].n)
            return off + (units ? c->r->unit(phase, &c->ts[i], at - off, &end) : (at - off) / ETK_BLOCK * ETK_BLOCK);
    return off;
}
static size_t etk_snap(const etk_call *c, unsigned phase, size_t at)
{
    return etk_snap_to(c, phase, etk_by_units(c, phase), at);
}
#endif

/* Elements [a, b) of tensor i (t: the tensor as the loop sees it) in `phase`. */
static void etk_run_piece(const etk_call *c, unsigned phase, size_t i, const etk_tensor *t, etk_loop_fn fn, size_t a,
                          size_t b, const etk_coef *coef)
{
    const unsigned nred = c->r->nred[phase];
    if (t->state_dtype == ETK_BFLOAT16 && !t->stochastic && c->bf16) {
        c->bf16(t, a, b, coef, NULL); /* fused: one pass, state read and written as bfloat16 */
    } else if (t->state_dtype >= ETK_NDTYPES) {
        const void *hp = etk_hp_of(c, t);
        etk_lowp_range(&c->kernels->lowp, fn, t, &c->r->info, hp && c->r->needs ? c->r->needs(hp) : 0u, a, b, coef);
    } else if (etk_by_units(c, phase)) {
        size_t j, e;
        for (j = a; j < b; j = e) {
            c->r->unit(phase, t, j, &e);
            fn(t, j, e, coef, NULL);
        }
    } else if (nred) {
        size_t j;
        for (j = a; j < b; j += ETK_BLOCK)
            fn(t, j, j + ETK_BLOCK < b ? j + ETK_BLOCK : b, coef,
               c->part + (c->bbase[i] + j / ETK_BLOCK) * ETK_MAX_RED);
    } else {
        fn(t, a, b, coef, NULL);
    }
}

/* Elements [a, b) of a tensor of bfloat16 parameters (its rule is one
 * element-wise phase): piece by piece (1024 elements: 4096 measured slower,
 * its float32 buffers filling L1), param and grad decoded to float32 in
 * L1 (the gradient scaled there when the rule does not fold the factor into
 * its gsign), the rule's float32 loop, the new values written back
 * (etk_bf16_param_store); the float32 tensor the loop sees is addressed
 * through pointers offset so that elements [j, e) fall in the buffers. */
#define ETK_BF16_PIECE ETK_LOWP_CHUNK /* elements per piece: its float32 param and grad stay in L1 with the state */
static void etk_bf16_param_range(const etk_call *c, unsigned phase, size_t i, const etk_tensor *t, size_t a, size_t b,
                                 const etk_coef *coef)
{
    /* one buffer: the gradient's part 64 bytes past a multiple of 4 KiB from the parameter's, so that
     * loads of one and stores to the other do not alias in the store buffer */
    float buf[2 * ETK_BF16_PIECE + 16], *const pbuf = buf, *const gbuf = buf + ETK_BF16_PIECE + 16;
    const etk_lowp_fns *lf = &c->kernels->lowp;
    const etk_loop_fn fn = c->loops->fn[phase][ETK_PAIR(ETK_FLOAT32, ETK_FLOAT32)];
    size_t j, e;
    for (j = a; j < b; j = e) {
        etk_tensor w = *t;
        e = (j / ETK_BF16_PIECE + 1) * ETK_BF16_PIECE;
        if (e > b) e = b;
        lf->bf16_dec((const uint16_t *)t->param + j, pbuf, e - j);
        lf->bf16_dec((const uint16_t *)t->grad + j, gbuf, e - j);
        if (c->gscaled && !c->gsign_at) c->kernels->pass[ETK_FLOAT32].scale(gbuf, gbuf, e - j, c->gmul);
        w.dtype = ETK_FLOAT32;
        w.param = (void *)((uintptr_t)pbuf - j * sizeof(float));
        w.grad = (const void *)((uintptr_t)gbuf - j * sizeof(float));
        etk_run_piece(c, phase, i, &w, fn, j, e, coef);
        etk_bf16_param_store(lf, t, pbuf, j, e - j);
    }
}

/* Run `phase` over the elements [lo, hi) of the concatenation of all tensors
 * (lo and hi already snapped).  With scaled gradients, each block of a tensor
 * is first scaled into a buffer on the stack (in L1) and the loop reads the
 * buffer as the block's gradient; with the EMA fused, each block's EMA
 * follows the loop's update of the block while the parameters are in cache. */
static void etk_run_range(const etk_call *c, unsigned phase, size_t lo, size_t hi)
{
    size_t i, off = 0;
    etk_coef coef;
    unsigned saved = etk_ftz_begin();
    const int step_phase = phase < c->r->nphases, units = etk_by_units(c, phase);
    const int ema_here = c->ema_fused && phase + 1 == c->r->nphases;
    for (i = 0; i < c->count && off < hi; off += c->ts[i].n, i++) {
        const etk_tensor *t = &c->ts[i];
        size_t a, b;
        etk_loop_fn fn;
        if (t->n == 0 || off + t->n <= lo) continue;
        a = lo > off ? lo - off : 0;
        b = hi - off < t->n ? hi - off : t->n;
        if (c->r->prepare) {
            etk_reduced r = etk_reduced_of(c, i);
            if (t->dtype == ETK_BFLOAT16) { /* the rule prepares for the float32 tensor it will see */
                etk_tensor w = *t;
                w.dtype = ETK_FLOAT32;
                c->r->prepare(phase, etk_hp_of(c, t), &w, &r, &coef);
            } else {
                c->r->prepare(phase, etk_hp_of(c, t), t, &r, &coef);
            }
        }
        if (step_phase && c->gscaled && c->gsign_at) {
            double gs;
            memcpy(&gs, coef.bytes + c->gsign_at - 1, sizeof gs);
            gs *= c->gmul;
            memcpy(coef.bytes + c->gsign_at - 1, &gs, sizeof gs);
        }
        if (t->dtype == ETK_BFLOAT16) {
            etk_bf16_param_range(c, phase, i, t, a, b, &coef);
            continue;
        }
        fn = c->loops->fn[phase][ETK_PAIR(t->dtype, t->state_dtype < ETK_NDTYPES ? t->state_dtype : ETK_FLOAT32)];
        if (step_phase && c->gscaled && !c->gsign_at && units) {
            etk_tensor w = *t;
            w.grad = c->gcopy + c->gcoff[i];
            etk_run_piece(c, phase, i, &w, fn, a, b, &coef);
        } else if (step_phase && !units && ((c->gscaled && !c->gsign_at) || (ema_here && t->ema))) {
            union {
                double align;
                unsigned char bytes[ETK_BLOCK * sizeof(double)];
            } buf;
            const etk_pass_fns *pf = &c->kernels->pass[t->dtype];
            const size_t es = etk_esize(t);
            size_t j, e;
            for (j = a; j < b; j = e) {
                etk_tensor w = *t;
                e = (j / ETK_BLOCK + 1) * ETK_BLOCK;
                if (e > b) e = b;
                if (c->gscaled && !c->gsign_at) {
                    pf->scale((const unsigned char *)t->grad + j * es, buf.bytes, e - j, c->gmul);
                    /* the loop reads grad[j .. e): point grad so that they fall in the buffer */
                    w.grad = (const void *)((uintptr_t)buf.bytes - j * es);
                }
                etk_run_piece(c, phase, i, &w, fn, j, e, &coef);
                if (ema_here && t->ema)
                    pf->ema((unsigned char *)t->ema + j * es, (const unsigned char *)t->param + j * es, e - j, c->ema_w);
            }
        } else {
            etk_run_piece(c, phase, i, t, fn, a, b, &coef);
        }
    }
    etk_ftz_end(saved);
}

/* The norm pass over the blocks of elements [lo, hi) (snapped to blocks) of
 * the concatenation of all gradients: each block's partials. */
/* The pieces of the tensors that elements [lo, hi) of their concatenation
 * cover: fn(c, i, a, b, arg) for tensor i's elements [a, b), a < b. */
typedef void (*etk_piece_fn)(const etk_call *c, size_t i, size_t a, size_t b, const void *arg);
static void etk_pieces(const etk_call *c, size_t lo, size_t hi, etk_piece_fn fn, const void *arg)
{
    size_t i, off = 0;
    for (i = 0; i < c->count && off < hi; off += c->ts[i].n, i++) {
        const size_t n = c->ts[i].n;
        if (n == 0 || off + n <= lo) continue;
        fn(c, i, lo > off ? lo - off : 0, hi - off < n ? hi - off : n, arg);
    }
}

/* The norm pass over a piece (its first element on a block boundary): each block's partials. */
static void etk_norm_piece(const etk_call *c, size_t i, size_t a, size_t b, const void *arg)
{
    const etk_tensor *t = &c->ts[i];
    const etk_pass_fns *pf = &c->kernels->pass[t->dtype == ETK_FLOAT64 ? ETK_FLOAT64 : ETK_FLOAT32];
    const size_t es = etk_esize(t);
    const int inf = c->o->norm_inf != 0;
    size_t j;
    (void)arg;
    if (t->dtype == ETK_BFLOAT16) { /* the float32 norm of the decoded gradient */
        float buf[ETK_BLOCK];
        for (j = a; j < b; j += ETK_BLOCK) {
            const size_t n = (j + ETK_BLOCK < b ? j + ETK_BLOCK : b) - j;
            c->kernels->lowp.bf16_dec((const uint16_t *)t->grad + j, buf, n);
            c->kernels->pass[ETK_FLOAT32].norm(buf, n, inf, c->npart + 3 * (c->nbase[i] + j / ETK_BLOCK));
        }
        return;
    }
    for (j = a; j < b; j += ETK_BLOCK) {
        if (!inf && j + 4 * ETK_BLOCK <= b) { /* four blocks at once: the same sums, four streams */
            pf->norm4((const unsigned char *)t->grad + j * es, c->npart + 3 * (c->nbase[i] + j / ETK_BLOCK));
            j += 3 * ETK_BLOCK;
            continue;
        }
        pf->norm((const unsigned char *)t->grad + j * es, (j + ETK_BLOCK < b ? j + ETK_BLOCK : b) - j, inf,
                 c->npart + 3 * (c->nbase[i] + j / ETK_BLOCK));
    }
}

/* The largest magnitude of a tensor's gradient. */
static double etk_grad_absmax(const etk_call *c, const etk_tensor *t)
{
    float buf[ETK_BLOCK];
    double m = 0.0, x;
    size_t j, n;
    if (t->dtype != ETK_BFLOAT16) return c->kernels->pass[t->dtype].absmax(t->grad, t->n);
    for (j = 0; j < t->n; j += n) {
        n = t->n - j < ETK_BLOCK ? t->n - j : ETK_BLOCK;
        c->kernels->lowp.bf16_dec((const uint16_t *)t->grad + j, buf, n);
        x = c->kernels->pass[ETK_FLOAT32].absmax(buf, n);
        m = x > m ? x : m;
    }
    return m;
}

/* After the norm pass (serially): the global norm, the tensors' finiteness,
 * and what the step does: skip, or read the gradients times gmul. */
static void etk_norm_decide(etk_call *c)
{
    const etk_step_opts *o = c->o;
    const int inf = o->norm_inf != 0;
    const double scale = o->grad_scale > 0.0 ? o->grad_scale : 1.0;
    double total = 0.0, coef = 1.0, nans = 0.0;
    size_t i, j;
    for (i = 0; i < c->count; i++) {
        const size_t nb = (c->ts[i].n + ETK_BLOCK - 1) / ETK_BLOCK;
        const double *q = c->npart + 3 * c->nbase[i];
        double s = 0.0, bad = 0.0;
        for (j = 0; j < nb; j++) {
            if (inf)
                s = q[3 * j] > s ? q[3 * j] : s;
            else
                s += q[3 * j];
            bad += q[3 * j + 1];
            nans += q[3 * j + 2];
        }
        if (bad != 0.0 && c->bad_tensor < 0) c->bad_tensor = (int64_t)i;
        if (inf)
            total = s > total ? s : total;
        else
            total += s;
    }
    /* as torch: the max norm is NaN when an element is NaN (the maximum above passed over it) */
    c->norm = inf && nans != 0.0 ? NAN : (inf ? total : sqrt(total)) / scale;
    c->why = c->bad_tensor >= 0 ? "holds inf or NaN" : "the global gradient norm overflowed to inf";
    if (o->max_grad_norm > 0.0) {
        /* torch.nn.utils.clip_grad_norm_: max_norm / (norm + 1e-6), clamped to 1 (NaN stays NaN) */
        coef = o->max_grad_norm / (c->norm + 1e-6);
        if (coef > 1.0) coef = 1.0;
    }
    c->gmul = coef / scale;
    c->gscaled = c->gmul != 1.0;
    if (c->bad_tensor < 0 && etk_finite(c->norm) && c->gmul > 1.0 && o->nonfinite != ETK_NONFINITE_IGNORE) {
        /* a loss scale below 1 can make finite gradients overflow their dtype when unscaled */
        for (i = 0; i < c->count && c->bad_tensor < 0; i++) {
            const etk_tensor *t = &c->ts[i];
            const size_t nb = (t->n + ETK_BLOCK - 1) / ETK_BLOCK;
            const double big = t->dtype == ETK_FLOAT64 ? DBL_MAX : (double)FLT_MAX; /* bfloat16: read as float32 */
            double s = 0.0, m;
            for (j = 0; j < nb; j++) {
                const double x = c->npart[3 * (c->nbase[i] + j)];
                if (inf)
                    s = x > s ? x : s;
                else
                    s += x;
            }
            if ((inf ? s : sqrt(s)) * c->gmul <= big / 2.0) continue; /* no element can reach the limit */
            m = inf ? s : etk_grad_absmax(c, t);
            if (t->dtype != ETK_FLOAT64 ? !etk_finite((double)((float)m * (float)c->gmul)) : !etk_finite(m * c->gmul)) {
                c->bad_tensor = (int64_t)i;
                c->why = "overflows its dtype when divided by grad_scale";
            }
        }
    }
    if ((c->bad_tensor >= 0 || !etk_finite(c->norm)) && o->nonfinite != ETK_NONFINITE_IGNORE) c->skip = 1;
}

/* Scale a piece of a gradient into c->gcopy (phases over units read it). */
static void etk_gcopy_piece(const etk_call *c, size_t i, size_t a, size_t b, const void *arg)
{
    const etk_tensor *t = &c->ts[i];
    const size_t es = etk_esize(t);
    (void)arg;
    c->kernels->pass[t->dtype].scale((const unsigned char *)t->grad + a * es, c->gcopy + c->gcoff[i] + a * es, b - a,
                                      c->gmul);
}

/* The EMA of a piece, as a pass of its own (a last phase over units). */
static void etk_ema_piece(const etk_call *c, size_t i, size_t a, size_t b, const void *arg)
{
    const etk_tensor *t = &c->ts[i];
    const size_t es = etk_esize(t);
    (void)arg;
    if (t->ema)
        c->kernels->pass[t->dtype].ema((unsigned char *)t->ema + a * es, (const unsigned char *)t->param + a * es,
                                        b - a, c->ema_w);
}

/* After `phase`: sum its block partials per tensor in block order, then per
 * group and over the call in tensor order, and let the rule update its group
 * scalars. */
static void etk_combine(const etk_call *c, unsigned phase)
{
    size_t i, j, g;
    unsigned v, nred = c->r->nred[phase];
    for (i = 0; nred && i < c->count; i++) {
        size_t nb = (c->ts[i].n + ETK_BLOCK - 1) / ETK_BLOCK;
        double *out = c->tred + i * ETK_TRED_STRIDE + phase * ETK_MAX_RED;
        double *gout = c->gsum + (size_t)c->ts[i].group * ETK_TRED_STRIDE + phase * ETK_MAX_RED;
        double *cout = c->csum + phase * ETK_MAX_RED;
        for (v = 0; v < nred; v++) {
            double s = 0.0;
            for (j = 0; j < nb; j++) s += c->part[(c->bbase[i] + j) * ETK_MAX_RED + v];
            out[v] = s;
            gout[v] += s;
            cout[v] += s;
        }
    }
    if (c->r->between)
        for (g = 0; g < c->nhps; g++)
            c->r->between(phase, c->hps + g * c->r->info.hp_size, c->gsum ? c->gsum + g * ETK_TRED_STRIDE : NULL,
                          c->gstate ? c->gstate + g * c->r->info.ngroup_state : NULL);
}

/* The rule's call-wide hook before `phase` (after the last phase: phase == nphases). */
static void etk_shared(etk_call *c, unsigned phase)
{
    etk_call_info info;
    info.hps = c->hps;
    info.nhps = c->nhps;
    info.group = c->gsum;
    info.call = c->csum;
    info.gstate = c->gstate;
    c->r->shared(phase, &info, c->shared);
}

#ifdef _OPENMP
static size_t etk_cut(size_t total, int i, int nth)
{
    size_t q = total / (size_t)nth, r = total % (size_t)nth;
    if (i >= nth) return total;
    return q * (size_t)i + ((size_t)i < r ? (size_t)i : r);
}
#endif

/* Whether the EMA runs as a pass of its own after the phases (the rule's
 * last phase runs over units, whose offsets are not memory order). */
static int etk_ema_after(const etk_call *c)
{
    return c->ema_w > 0.0 && !c->ema_fused && c->last + 1 == c->r->nphases;
}

static void etk_run_phases(etk_call *c)
{
    const unsigned last = c->last;
    unsigned p;
    if (last >= c->r->nphases + c->r->nside) return;
#ifdef _OPENMP
    {
        int nth = c->r->info.flags & ETK_RULE_SERIAL ? 1 : etk_threads_for(c->total);
        if (nth > 1) {
#pragma omp parallel num_threads(nth) private(p)
            {
                int tid = omp_get_thread_num(), got = omp_get_num_threads();
                const size_t blo = etk_snap_to(c, 0, 0, etk_cut(c->total, tid, got));
                const size_t bhi = etk_snap_to(c, 0, 0, etk_cut(c->total, tid + 1, got));
                if (c->norm_pass) {
                    etk_pieces(c, blo, bhi, etk_norm_piece, NULL);
#pragma omp barrier
#pragma omp single
                    etk_norm_decide(c);
                }
                if (!c->skip && c->gscaled && c->gcopy) {
                    etk_pieces(c, blo, bhi, etk_gcopy_piece, NULL);
#pragma omp barrier
                }
                for (p = 0; p <= last && !c->skip; p++) {
                    size_t lo, hi;
                    if (!(c->phases >> p & 1u)) continue;
                    if (c->r->shared && p < c->r->nphases) {
#pragma omp single
                        etk_shared(c, p);
                    }
                    lo = etk_snap(c, p, etk_cut(c->total, tid, got));
                    hi = etk_snap(c, p, etk_cut(c->total, tid + 1, got));
                    etk_run_range(c, p, lo, hi);
                    if (p < last) {
#pragma omp barrier
                        if (c->r->nred[p] || c->r->between) {
#pragma omp single
                            etk_combine(c, p);
                        }
                    }
                }
                if (!c->skip && etk_ema_after(c)) {
#pragma omp barrier
                    etk_pieces(c, blo, bhi, etk_ema_piece, NULL);
                }
            }
            if (c->skip) return;
            if (c->r->nred[last] || c->r->between) etk_combine(c, last);
            if (c->r->shared && last + 1 == c->r->nphases) etk_shared(c, c->r->nphases);
            return;
        }
    }
#endif
    if (c->norm_pass) {
        etk_pieces(c, 0, c->total, etk_norm_piece, NULL);
        etk_norm_decide(c);
        if (c->skip) return;
    }
    if (c->gscaled && c->gcopy) etk_pieces(c, 0, c->total, etk_gcopy_piece, NULL);
    for (p = 0; p <= last; p++) {
        if (!(c->phases >> p & 1u)) continue;
        if (c->r->shared && p < c->r->nphases) etk_shared(c, p);
        etk_run_range(c, p, 0, c->total);
        if (c->r->nred[p] || c->r->between) etk_combine(c, p);
    }
    if (etk_ema_after(c)) etk_pieces(c, 0, c->total, etk_ema_piece, NULL);
    if (c->r->shared && last + 1 == c->r->nphases) etk_shared(c, c->r->nphases);
}

/* ---------------------------------------------------------- validation */

static int etk_check_tensors(const etk_call *c, size_t nhps, etk_error *err)
{
    const etk_rule_desc *r = c->r;
    size_t i, j;
    unsigned p;
    if (c->count && !c->ts) return etk_fail(err, ETK_EARG, -1, -1, -1, NULL, "tensors is NULL");
    for (i = 0; i < c->count; i++) {
        const etk_tensor *t = &c->ts[i];
        const int64_t ti = (int64_t)i;
        unsigned needs = 0u;
        const int lowp = t->state_dtype >= ETK_NDTYPES, bf16 = t->dtype == ETK_BFLOAT16;
        if ((t->dtype >= ETK_NDTYPES && !bf16) || t->state_dtype >= ETK_NSTATE_DTYPES)
            return etk_fail(err, ETK_EDTYPE, ti, -1, -1, NULL, "unknown dtype");
        if (lowp && t->dtype == ETK_FLOAT64)
            return etk_fail(err, ETK_EDTYPE, ti, -1, -1, NULL,
                            "low-precision state needs float32 (or bfloat16) parameters");
        if (bf16 && t->state_dtype == ETK_FLOAT64)
            return etk_fail(err, ETK_EDTYPE, ti, -1, -1, NULL, "bfloat16 parameters keep float32 or low-precision state");
        if ((lowp || bf16) && !etk_lowp_desc_ok(r))
            return etk_fail(err, ETK_EDTYPE, ti, -1, -1, NULL,
                            bf16 ? "this rule cannot update bfloat16 parameters (it is not one element-wise pass)"
                                 : "this rule cannot keep low-precision state (it is not one element-wise pass)");
        if (bf16 && t->ema)
            return etk_fail(err, ETK_EDTYPE, ti, -1, -1, NULL, "the EMA of bfloat16 parameters is not supported");
        for (p = 0; p < r->nphases + r->nside; p++)
            if (!c->loops->fn[p][ETK_PAIR(bf16 ? ETK_FLOAT32 : t->dtype, lowp ? ETK_FLOAT32 : t->state_dtype)])
                return etk_fail(err, ETK_EDTYPE, ti, -1, -1, NULL, "this (param, state) dtype pair is not supported");
        if (r->info.hp_size) {
            if (t->group >= nhps) return etk_fail(err, ETK_EGROUP, ti, (int32_t)t->group, -1, NULL, "no such group");
            needs = r->needs ? r->needs(c->hps + (size_t)t->group * r->info.hp_size) : 0u;
        }
        if ((r->info.flags & ETK_RULE_USES_STEP) && t->step < 1)
            return etk_fail(err, ETK_EARG, ti, -1, -1, NULL, "step must be >= 1");
        if (t->rows < 0 || t->cols < 0 || (t->rows == 0) != (t->cols == 0))
            return etk_fail(err, ETK_ESHAPE, ti, -1, -1, NULL, "rows and cols must both be 0 or both be > 0");
        if (t->rows > 0 && (t->n % (size_t)t->rows != 0 || (t->n / (size_t)t->rows) % (size_t)t->cols != 0))
            return etk_fail(err, ETK_ESHAPE, ti, -1, -1, NULL, "n is not a multiple of rows * cols");
        if ((r->info.flags & ETK_RULE_MATRIX_ONLY) && t->n && t->rows == 0)
            return etk_fail(err, ETK_ESHAPE, ti, -1, -1, NULL, "this rule updates matrices: rows and cols must be > 0");
        if (t->n && (!t->param || (c->needs_grad && !t->grad)))
            return etk_fail(err, ETK_EARG, ti, -1, -1, NULL, "param or grad is NULL");
        for (j = 0; j < r->info.nslots; j++) {
            const unsigned shape = r->info.slots[j].shape;
            const int scalar = shape == ETK_SLOT_SCALAR;
            if (t->rows > 0 ? shape == ETK_SLOT_VECTOR : shape == ETK_SLOT_ROWS || shape == ETK_SLOT_COLS)
                continue; /* a slot of the other form (matrix or vector) */
            if ((needs >> j & 1u) && !t->state[j] && (t->n || scalar))
                return etk_fail(err, ETK_ESTATE, ti, -1, (int32_t)j, NULL, "a state slot the options need is NULL");
            if (t->state_dtype == ETK_QINT8 && (needs >> j & 1u) && !scalar && t->n && !t->absmax[j])
                return etk_fail(err, ETK_ESTATE, ti, -1, (int32_t)j, NULL,
                                "8-bit state needs the scales (absmax) of every slot");
        }
    }
    return ETK_OK;
}

/* Every field in range and the rule's own constraints met (the fast path; etk_rule_check says why not). */
static int etk_hp_ok(const etk_rule_desc *r, const void *hp)
{
    etk_error scratch;
    size_t i;
    for (i = 0; i < r->info.nfields; i++)
        if (!etk_field_ok(&r->info.fields[i], hp)) return 0;
    return !r->check || r->check(hp, &scratch) == ETK_OK;
}

static int etk_check_hps(const etk_rule_desc *r, int rule, const unsigned char *hps, size_t nhps, etk_error *err)
{
    size_t g;
    int st;
    if (!r->info.hp_size) return ETK_OK;
    if (nhps && !hps) return etk_fail(err, ETK_EARG, -1, -1, -1, NULL, "hps is NULL");
    for (g = 0; g < nhps; g++) {
        if (etk_hp_ok(r, hps + g * r->info.hp_size)) continue;
        if ((st = etk_rule_check(rule, hps + g * r->info.hp_size, err)) != ETK_OK) {
            if (err) err->group = (int32_t)g;
            return st;
        }
    }
    if (r->check_groups && nhps) {
        etk_error scratch;
        if (r->check_groups(hps, nhps, &scratch) != ETK_OK) return etk_rule_check_groups(rule, hps, nhps, err);
    }
    return ETK_OK;
}

static const etk_field_info *etk_field_at(const etk_rule_desc *r, uint32_t offset)
{
    size_t i;
    for (i = 0; i < r->info.nfields; i++)
        if (r->info.fields[i].offset == offset) return &r->info.fields[i];
    return NULL;
}

/* ---------------------------------------------------------- the step */

/* Check the options of the loop's other passes and allocate what they need
 * (nothing is written yet). */
static int etk_setup_passes(etk_call *c, const etk_step_opts *o, etk_error *err)
{
    size_t i, nblocks = 0, bytes = 0;
    int clip;
    c->o = o;
    if (!o) return ETK_OK;
    if (!(o->grad_scale == 0.0 || (o->grad_scale > 0.0 && etk_finite(o->grad_scale))))
        return etk_fail(err, ETK_EARG, -1, -1, -1, "grad_scale", "grad_scale must be finite and > 0 (or 0 for none)");
    if (!(o->max_grad_norm >= 0.0))
        return etk_fail(err, ETK_EARG, -1, -1, -1, "max_grad_norm", "max_grad_norm must be >= 0 (0: no clipping)");
    if (o->norm_inf != 0 && o->norm_inf != 1)
        return etk_fail(err, ETK_EARG, -1, -1, -1, "norm_inf", "norm_inf must be 0 or 1");
    if (o->nonfinite < ETK_NONFINITE_IGNORE || o->nonfinite > ETK_NONFINITE_RAISE)
        return etk_fail(err, ETK_EARG, -1, -1, -1, "nonfinite", "nonfinite must be one of ETK_NONFINITE_*");
    if (!(o->ema_weight >= 0.0 && o->ema_weight <= 1.0))
        return etk_fail(err, ETK_EARG, -1, -1, -1, "ema_weight", "ema_weight must be in [0, 1]");
    if (!c->needs_grad) return ETK_OK; /* side phases: no gradient, no step */
    clip = o->max_grad_norm > 0.0;
    c->norm_pass = clip || o->nonfinite != ETK_NONFINITE_IGNORE || o->report_norm;
    if (c->last + 1 == c->r->nphases && o->ema_weight > 0.0) {
        c->ema_w = o->ema_weight;
        c->ema_fused = !etk_by_units(c, c->r->nphases - 1);
    }
    if (!c->norm_pass) {
        /* no norm: only the loss scale */
        if (o->grad_scale > 0.0) {
            c->gmul = 1.0 / o->grad_scale;
            c->gscaled = c->gmul != 1.0;
        }
    }
    for (i = 0; i < c->count; i++) nblocks += (c->ts[i].n + ETK_BLOCK - 1) / ETK_BLOCK;
    if (c->norm_pass) {
        c->npart = (double *)calloc(3 * nblocks + 1, sizeof(double));
        c->nbase = (size_t *)calloc(c->count + 1, sizeof(size_t));
    }
    if ((clip || o->grad_scale > 0.0) && (c->r->unit_phases & c->phases)) {
        c->gcoff = (size_t *)calloc(c->count + 1, sizeof(size_t));
        for (i = 0; c->gcoff && i < c->count; i++) {
            c->gcoff[i] = bytes;
            bytes += c->ts[i].n * etk_esize(&c->ts[i]);
        }
        c->gcopy = (unsigned char *)malloc(bytes + 1);
    }
    if ((c->norm_pass && (!c->npart || !c->nbase)) || (c->gcoff == NULL) != (c->gcopy == NULL) ||
        ((clip || o->grad_scale > 0.0) && (c->r->unit_phases & c->phases) && !c->gcopy)) {
        free(c->nbase), free(c->gcoff);
        c->nbase = c->gcoff = NULL;
        return etk_fail(err, ETK_ENOMEM, -1, -1, -1, NULL, "out of memory");
    }
    for (i = 0, nblocks = 0; c->nbase && i < c->count; i++) {
        c->nbase[i] = nblocks;
        nblocks += (c->ts[i].n + ETK_BLOCK - 1) / ETK_BLOCK;
    }
    return ETK_OK;
}


static int etk_step_desc(const etk_rule_desc *r, int rule, const etk_tensor *ts, size_t count, const void *hps,
                         size_t nhps, const etk_step_opts *o, etk_error *err)
{
    union {
        double align;
        unsigned char bytes[1024];
    } local;
    unsigned char *hbuf = NULL;
    void *scratch = NULL;
    etk_call c;
    size_t i, hsize = nhps * r->info.hp_size;
    unsigned p;
    int st, reduces = 0;

    memset(&c, 0, sizeof c);
    c.r = r;
    c.norm = NAN;
    c.gmul = 1.0;
    c.bad_tensor = -1;
    {
        /* step phases, or else side phases (never both) */
        const unsigned step_mask = (1u << r->nphases) - 1u, all = (1u << (r->nphases + r->nside)) - 1u;
        c.phases = o && o->phases ? o->phases : step_mask;
        c.phases &= c.phases & step_mask ? step_mask : all;
        c.needs_grad = (c.phases & step_mask) != 0;
    }
    c.last = r->nphases + r->nside;
    for (p = 0; p < r->nphases + r->nside; p++)
        if (c.phases >> p & 1u) c.last = p;
    c.kernels = etk_kernels_now();
    c.gsign_at = etk_rule_gsign_at(rule);
    c.loops = &c.kernels->rule[rule];
    c.bf16 = c.kernels->bf16[rule];
    c.ts = ts;
    c.count = count;
    c.nhps = nhps;
    c.hps = (const unsigned char *)hps;
    if (r->info.ngroup_state && nhps) {
        if (!o || !o->group_state)
            return etk_fail(err, ETK_EARG, -1, -1, -1, NULL, "this rule needs group_state (etk_step_opts)");
        c.gstate = o->group_state;
    }

    if (o && o->nsched) {
        if (!o->sched || !hps) return etk_fail(err, ETK_EARG, -1, -1, -1, NULL, "sched or hps is NULL");
        if (o->k < 0) return etk_fail(err, ETK_EARG, -1, -1, -1, NULL, "the step count k is negative");
        for (i = 0; i < o->nsched; i++) {
            const etk_field_info *f = etk_field_at(r, o->sched[i].offset);
            if (o->sched[i].group >= nhps)
                return etk_fail(err, ETK_EGROUP, -1, (int32_t)o->sched[i].group, -1, NULL, "no such group");
            if (!f || f->kind != ETK_FIELD_REAL || !f->schedulable)
                return etk_fail(err, ETK_EARG, -1, (int32_t)o->sched[i].group, -1, f ? f->name : NULL,
                                "this field cannot follow a schedule");
            if (!o->sched[i].schedule || etk_schedule_check(o->sched[i].schedule) != ETK_OK)
                return etk_fail(err, ETK_EARG, -1, (int32_t)o->sched[i].group, -1, f->name, "invalid schedule");
        }
        hbuf = hsize <= sizeof local.bytes ? local.bytes : (unsigned char *)malloc(hsize);
        if (!hbuf) return etk_fail(err, ETK_ENOMEM, -1, -1, -1, NULL, "out of memory");
        memcpy(hbuf, hps, hsize);
        for (i = 0; i < o->nsched; i++) {
            double v = etk_schedule_eval(o->sched[i].schedule, o->k);
            memcpy(hbuf + (size_t)o->sched[i].group * r->info.hp_size + o->sched[i].offset, &v, sizeof v);
        }
        c.hps = hbuf;
    }

    if ((st = etk_check_hps(r, rule, c.hps, nhps, err)) != ETK_OK) goto done;
    if ((st = etk_check_tensors(&c, nhps, err)) != ETK_OK) goto done;

    for (i = 0; i < count; i++) c.total += ts[i].n;
    for (p = 0; p < r->nphases; p++) reduces |= r->nred[p] != 0;
    if (reduces || r->between || r->scratch || r->shared) {
        size_t nblocks = 0, nscratch = 0;
        for (i = 0; i < count; i++) {
            nblocks += (ts[i].n + ETK_BLOCK - 1) / ETK_BLOCK;
            if (r->scratch && ts[i].n) nscratch += r->scratch(etk_hp_of(&c, &ts[i]), &ts[i]);
        }
        scratch = calloc(2 * count * sizeof(size_t) +
                             (nblocks * ETK_MAX_RED + (count + nhps + 1) * ETK_TRED_STRIDE + nscratch) *
                                 sizeof(double) +
                             1,
                         1);
        if (!scratch) {
            st = etk_fail(err, ETK_ENOMEM, -1, -1, -1, NULL, "out of memory");
            goto done;
        }
        c.tred = (double *)scratch;
        c.gsum = c.tred + count * ETK_TRED_STRIDE;
        c.csum = c.gsum + nhps * ETK_TRED_STRIDE;
        c.part = c.csum + ETK_TRED_STRIDE;
        c.scratch = r->scratch ? c.part + nblocks * ETK_MAX_RED : NULL;
        c.bbase = (size_t *)(c.part + nblocks * ETK_MAX_RED + nscratch);
        c.sbase = c.bbase + count;
        for (i = 0, nblocks = 0, nscratch = 0; i < count; i++) {
            c.bbase[i] = nblocks;
            c.sbase[i] = nscratch;
            nblocks += (ts[i].n + ETK_BLOCK - 1) / ETK_BLOCK;
            if (r->scratch && ts[i].n) nscratch += r->scratch(etk_hp_of(&c, &ts[i]), &ts[i]);
        }
    }
    if ((st = etk_setup_passes(&c, o, err)) != ETK_OK) goto done;
    if (count) etk_run_phases(&c);
    if (c.skip) {
        st = o->nonfinite == ETK_NONFINITE_RAISE ? etk_fail(err, ETK_ENONFINITE, c.bad_tensor, -1, -1, NULL, c.why)
                                                  : ETK_OK;
        goto done;
    }
    if (r->finish && c.last + 1 == r->nphases)
        for (i = 0; i < count; i++) {
            etk_reduced red = etk_reduced_of(&c, i);
            r->finish(etk_hp_of(&c, &ts[i]), &ts[i], &red);
        }
    st = ETK_OK;
done:
    if (o && o->report) {
        o->report->grad_norm = c.norm;
        o->report->grad_mul = c.gmul;
        o->report->skipped = c.skip && st == ETK_OK;
        o->report->nonfinite_tensor = c.bad_tensor;
    }
    if (hbuf && hbuf != local.bytes) free(hbuf);
    free(scratch);
    free(c.npart);
    free(c.nbase);
    free(c.gcopy);
    free(c.gcoff);
    return st;
}

int etk_step(int rule, const etk_tensor *tensors, size_t count, const void *hps, size_t nhps,
             const etk_step_opts *opts, etk_error *err)
{
    const etk_rule_desc *r = rule == ETK_RULE_PROBE ? NULL : etk_rule_desc_get(rule);
    if (err) etk_fail(err, ETK_OK, -1, -1, -1, NULL, NULL);
    if (!r) return etk_fail(err, ETK_ERULE, -1, -1, -1, NULL, "unknown rule id");
    return etk_step_desc(r, rule, tensors, count, hps, nhps, opts, err);
}

/* fn over every piece of the call's tensors, in block-aligned ranges, one
 * per thread of one parallel region (serially below the threshold). */
static void etk_blocks(const etk_call *c, etk_piece_fn fn, const void *arg)
{
#ifdef _OPENMP
    int nth = etk_threads_for(c->total);
    if (nth > 1) {
#pragma omp parallel num_threads(nth)
        {
            int tid = omp_get_thread_num(), got = omp_get_num_threads();
            etk_pieces(c, etk_snap_to(c, 0, 0, etk_cut(c->total, tid, got)),
                       etk_snap_to(c, 0, 0, etk_cut(c->total, tid + 1, got)), fn, arg);
        }
        return;
    }
#endif
    etk_pieces(c, 0, c->total, fn, arg);
}

int etk_grad_norm(const etk_tensor *tensors, size_t count, int norm_inf, double *norm, int64_t *first_nonfinite)
{
    etk_call c;
    etk_step_opts o;
    size_t i, nblocks = 0;
    if (!norm || (count && !tensors) || (norm_inf != 0 && norm_inf != 1)) return ETK_EARG;
    for (i = 0; i < count; i++)
        if ((tensors[i].dtype >= ETK_NDTYPES && tensors[i].dtype != ETK_BFLOAT16) || (tensors[i].n && !tensors[i].grad))
            return ETK_EARG;
    memset(&c, 0, sizeof c);
    memset(&o, 0, sizeof o);
    o.norm_inf = norm_inf;
    c.o = &o;
    c.ts = tensors;
    c.count = count;
    c.kernels = etk_kernels_now();
    c.bad_tensor = -1;
    for (i = 0; i < count; i++) {
        c.total += tensors[i].n;
        nblocks += (tensors[i].n + ETK_BLOCK - 1) / ETK_BLOCK;
    }
    c.npart = (double *)calloc(3 * nblocks + 1, sizeof(double));
    c.nbase = (size_t *)calloc(count + 1, sizeof(size_t));
    if (!c.npart || !c.nbase) {
        free(c.npart), free(c.nbase);
        return ETK_ENOMEM;
    }
    for (i = 0, nblocks = 0; i < count; i++) {
        c.nbase[i] = nblocks;
        nblocks += (tensors[i].n + ETK_BLOCK - 1) / ETK_BLOCK;
    }
    etk_blocks(&c, etk_norm_piece, NULL);
    etk_norm_decide(&c);
    *norm = c.norm;
    if (first_nonfinite) *first_nonfinite = c.bad_tensor;
    free(c.npart);
    free(c.nbase);
    return ETK_OK;
}

int etk_grad_block_sums(const void *grad, int dtype, size_t n, double *sums)
{
    const etk_pass_fns *pf;
    size_t j, es;
    double part[3];
    if ((n && (!grad || !sums)) || (dtype != ETK_FLOAT32 && dtype != ETK_FLOAT64)) return ETK_EARG;
    pf = &etk_kernels_now()->pass[dtype];
    es = dtype == ETK_FLOAT32 ? sizeof(float) : sizeof(double);
    for (j = 0; j < n; j += ETK_BLOCK) {
        if (j + 4 * ETK_BLOCK <= n) {
            double four[12];
            pf->norm4((const unsigned char *)grad + j * es, four);
            sums[j / ETK_BLOCK] = four[0], sums[j / ETK_BLOCK + 1] = four[3];
            sums[j / ETK_BLOCK + 2] = four[6], sums[j / ETK_BLOCK + 3] = four[9];
            j += 3 * ETK_BLOCK;
            continue;
        }
        pf->norm((const unsigned char *)grad + j * es, (j + ETK_BLOCK < n ? j + ETK_BLOCK : n) - j, 0, part);
        sums[j / ETK_BLOCK] = part[0];
    }
    return ETK_OK;
}

typedef struct etk_axpy_arg {
    double w;
    int first;
} etk_axpy_arg;

/* A piece of etk_accumulate. */
static void etk_axpy_piece(const etk_call *c, size_t i, size_t a, size_t b, const void *arg)
{
    const etk_tensor *t = &c->ts[i];
    const etk_axpy_arg *x = (const etk_axpy_arg *)arg;
    const size_t es = etk_esize(t);
    c->kernels->pass[t->dtype].axpy((unsigned char *)t->param + a * es, (const unsigned char *)t->grad + a * es, b - a,
                                     x->w, x->first);
}

int etk_accumulate(const etk_tensor *tensors, size_t count, double weight, int first)
{
    etk_call c;
    size_t i;
    if ((count && !tensors) || !etk_finite(weight)) return ETK_EARG;
    for (i = 0; i < count; i++)
        if (tensors[i].dtype >= ETK_NDTYPES || (tensors[i].n && (!tensors[i].grad || !tensors[i].param)))
            return ETK_EARG;
    memset(&c, 0, sizeof c);
    c.ts = tensors;
    c.count = count;
    c.kernels = etk_kernels_now();
    for (i = 0; i < count; i++) c.total += tensors[i].n;
    {
        etk_axpy_arg x;
        x.w = weight, x.first = first;
        etk_blocks(&c, etk_axpy_piece, &x);
    }
    return ETK_OK;
}

int etk_probe_multi(const etk_tensor *tensors, size_t count)
{
    return etk_step_desc(etk_rule_desc_get(ETK_RULE_PROBE), ETK_RULE_PROBE, tensors, count, NULL, 0, NULL, NULL);
}

/* ------------------------------------------------ typed entry points */

static int etk_single(int rule, etk_dtype dt, void *param, const void *grad, void *const *state, size_t n,
                      const void *hp, int64_t step)
{
    const etk_rule_info *info = etk_rule_info_get(rule);
    etk_tensor t;
    size_t j;
    if (!info || !hp) return ETK_EARG;
    memset(&t, 0, sizeof t);
    t.param = param;
    t.grad = grad;
    for (j = 0; state && j < info->nslots; j++) t.state[j] = state[j];
    t.n = n;
    t.step = step;
    t.dtype = (uint8_t)dt;
    t.state_dtype = (uint8_t)dt;
    t.flags = step == 1 ? (uint16_t)((1u << ETK_MAX_SLOTS) - 1u) : 0u;
    return etk_step(rule, &t, 1, hp, 1, NULL, NULL);
}

#define ETK_DEFINE_RULE_API_(name, NAME)                                                                         \
    int etk_##name##_multi(const etk_tensor *tensors, size_t count, const etk_##name##_hp *hps, size_t nhps)      \
    {                                                                                                              \
        return etk_step(ETK_RULE_##NAME, tensors, count, hps, nhps, NULL, NULL);                                   \
    }                                                                                                              \
    int etk_##name##_multi_scheduled(const etk_tensor *tensors, size_t count, const etk_##name##_hp *hps,          \
                                     size_t nhps, const etk_hp_schedule *sched, size_t nsched, int64_t k)         \
    {                                                                                                              \
        etk_step_opts o;                                                                                           \
        memset(&o, 0, sizeof o);                                                                                   \
        o.sched = sched, o.nsched = nsched, o.k = k;                                                               \
        return etk_step(ETK_RULE_##NAME, tensors, count, hps, nhps, &o, NULL);                                     \
    }                                                                                                              \
    int etk_##name##_f32(float *param, const float *grad, void *const *state, size_t n,                           \
                         const etk_##name##_hp *hp, int64_t step)                                                  \
    {                                                                                                              \
        return etk_single(ETK_RULE_##NAME, ETK_FLOAT32, param, grad, state, n, hp, step);                          \
    }                                                                                                              \
    int etk_##name##_f64(double *param, const double *grad, void *const *state, size_t n,                         \
                         const etk_##name##_hp *hp, int64_t step)                                                  \
    {                                                                                                              \
        return etk_single(ETK_RULE_##NAME, ETK_FLOAT64, param, grad, state, n, hp, step);                          \
    }
ETK_RULE_LIST(ETK_DEFINE_RULE_API_)
#undef ETK_DEFINE_RULE_API_
