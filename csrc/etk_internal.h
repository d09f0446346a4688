/*
 * etk_internal.h -- what the engine (engine.c), the rule table (rules.c),
 * the element loops (kernels.c) and the run-time configuration (config.c)
 * share.  Not installed, not public.
 *
 * How a rule is written.  Each rule lives in one file, rules/<name>.h, listed
 * once in rules/all.h and once in ETK_RULE_LIST (etakit.h); the compiler
 * cross-checks the two lists.  The file is included in three modes:
 *   ETK_RULE_HOST   (rules.c, once): the hyperparameter fields with their
 *                   ranges (by offsetof), the state slots, the checks that
 *                   span fields, which slots the options need, and
 *                   `prepare`, which turns hyperparameters and the tensor's
 *                   step into the per-step scalars of the element loop (in
 *                   double, once per tensor and step);
 *   ETK_RULE_LOOPS  (kernels.c, once per SIMD variant and (param, state)
 *                   type pair): the element loops, one per phase;
 *   ETK_RULE_ROW    (kernels.c, once per variant): the rule's row of the
 *                   variant's function table.
 * A common part outside the modes (with its own include guard) declares the
 * per-step scalars both sides read.
 *
 * A rule makes one pass per phase.  A phase may reduce (sums of squares, dot
 * products): its loop is then called once per block of ETK_BLOCK elements of
 * one tensor and adds its partial sums for that block into `red`; the engine
 * sums the blocks of each tensor in block order, so the results do not depend
 * on the thread count.  Inside a block a loop sums over ETK_LANES fixed lanes
 * (ETK_LANE_SUM), so they do not depend on the vector width either.
 *
 * A rule whose work is not element-wise (row and column sums of a matrix,
 * say) may run a phase over units of work of its own instead of blocks
 * (etk_rule_desc.unit: tiles of a matrix, whole matrices of a batch) and keep
 * per-unit partial results in per-call scratch (etk_rule_desc.scratch), which
 * a later phase combines in a fixed order.  Threads take whole units, so the
 * results do not depend on the thread count either.
 */
#ifndef ETK_INTERNAL_H
#define ETK_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "etakit.h"

#if defined(__GNUC__) || defined(__clang__)
#define ETK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ETK_ALWAYS_INLINE inline
#endif

/* ---- work split ------------------------------------------------------- */
/* Thread boundaries fall on multiples of ETK_BLOCK elements of a tensor: the
 * unit of work and of reductions (a multiple of 16 float32 = one 64-byte
 * line, so threads never share a cache line they write). */
#define ETK_BLOCK ((size_t)4096)
/* Fixed lanes of an in-block reduction. */
#define ETK_LANES 16
#define ETK_MAX_PHASES 4
#define ETK_MAX_RED 4 /* reduction values per phase */
#define ETK_MAX_SHARED 8 /* per-call scalars of a rule's `shared` hook */

/* ---- per-step scalars ------------------------------------------------- */
/* Storage for any rule's per-step scalars (each rule casts it to its own
 * struct; ETK_COEF_FITS checks the size at compile time). */
typedef union etk_coef {
    double align;
    unsigned char bytes[320];
} etk_coef;
#define ETK_COEF_FITS(type) typedef char etk_coef_fits_##type[sizeof(type) <= sizeof(etk_coef) ? 1 : -1]

/* Update elements [lo, hi) of one tensor; `red` is NULL, or (reducing
 * phases) the ETK_MAX_RED partial sums of the block [lo, hi) to fill. */
typedef void (*etk_loop_fn)(const etk_tensor *t, size_t lo, size_t hi, const void *coef, double *red);

/* ---- the rule descriptor (host side) ---------------------------------- */
/* What the reductions of earlier phases produced, for one tensor. */
typedef struct etk_reduced {
    const double *tensor; /* this tensor's sums: ETK_MAX_RED per phase, by phase */
    const double *group;  /* the same sums over every tensor of its group, in tensor order */
    double *gstate;       /* its group's persistent scalars (etk_step_opts.group_state) */
    const double *call;   /* the same sums over every tensor of the call, in tensor order (a clip by
                           * the norm of all gradients, whatever their group) */
    double *scratch;      /* this tensor's per-call scratch (etk_rule_desc.scratch), or NULL */
    const double *shared; /* the per-call scalars of the rule's `shared` hook (ETK_MAX_SHARED) */
} etk_reduced;

/* What a rule's `shared` hook sees of the whole call. */
typedef struct etk_call_info {
    const unsigned char *hps; /* every group's hyperparameters (nhps structs, scheduled values written in) */
    size_t nhps;
    const double *group;      /* per group: ETK_MAX_PHASES * ETK_MAX_RED sums (by phase, as
                               * etk_reduced.tensor), over its tensors in order */
    const double *call;       /* the same over every tensor of the call */
    double *gstate;           /* every group's persistent scalars: nhps * info.ngroup_state */
} etk_call_info;

typedef struct etk_rule_desc {
    etk_rule_info info;
    unsigned nphases;
    unsigned nred[ETK_MAX_PHASES]; /* values a phase reduces per tensor (0: none) */
    /* constraints that span fields (ranges are in info.fields); NULL if none.
     * Returns ETK_OK or ETK_EHPARAM with err->field and err->message set. */
    int (*check)(const void *hp, etk_error *err);
    /* bit j: slot j is needed for these hyperparameters */
    unsigned (*needs)(const void *hp);
    /* the per-step scalars of tensor t for `phase` (reduced values of earlier
     * phases in *r) */
    void (*prepare)(unsigned phase, const void *hp, const etk_tensor *t, const etk_reduced *r, void *coef);
    /* after each phase's reductions, once per group, serially: may update the
     * group's persistent scalars from the group sums; NULL if none */
    void (*between)(unsigned phase, const void *hp, const double *group_sums, double *gstate);
    /* after a successful step, once per tensor, serially: scalar state; NULL if none */
    void (*finish)(const void *hp, const etk_tensor *t, const etk_reduced *r);
    /* Optional, for rules whose work is not element-wise (zero for the others).
     * unit_phases: bit p set = phase p runs over the rule's own units of work
     * instead of blocks of ETK_BLOCK elements; such a phase does not reduce
     * (nred[p] == 0) and its loop is called once per unit. */
    unsigned unit_phases;
    /* the unit of tensor t (n > 0) that holds offset `at` (< n) in such a
     * phase: returns the unit's first offset and sets *end past its last.
     * Offsets are the rule's own numbering of the tensor's elements (a tile
     * order, say); the units of a tensor tile [0, n), each non-empty. */
    size_t (*unit)(unsigned phase, const etk_tensor *t, size_t at, size_t *end);
    /* doubles of zeroed per-call scratch tensor t (n > 0) needs
     * (etk_reduced.scratch, in prepare); NULL if none */
    size_t (*scratch)(const void *hp, const etk_tensor *t);
    /* Side phases: passes that are not part of a step, numbered nphases ..
     * nphases + nside - 1, run only when etk_step_opts.phases names them and
     * no step phase (a mode switch: schedule-free's move between the point
     * it trains at and the average it is evaluated at).  They read no
     * gradient and do not reduce (nred 0); `prepare` and `between` see their
     * phase number; `finish` does not run. */
    unsigned nside;
    /* Optional, for rules whose per-step scalars are shared by every group (a
     * step size adapted from sums over all the tensors of the step: Prodigy,
     * D-Adaptation).  Called serially once per call before each phase that
     * runs, and once more after the rule's last phase (phase == nphases, its
     * sums complete): reads every group's hyperparameters and sums, may update
     * every group's persistent scalars, and fills `shared` (ETK_MAX_SHARED
     * doubles, zero at the start of the call), which every tensor's prepare
     * reads (etk_reduced.shared).  NULL if none. */
    void (*shared)(unsigned phase, const etk_call_info *call, double *shared);
    /* Optional: constraints across the groups of a call (values the groups
     * must share), checked with the other checks, before anything is written;
     * ETK_OK, or ETK_EHPARAM with err->group, field and message set. */
    int (*check_groups)(const unsigned char *hps, size_t nhps, etk_error *err);
} etk_rule_desc;

/* The bandwidth probe runs through the engine as one more rule. */
#define ETK_RULE_PROBE ETK_NRULES
#define ETK_NROWS (ETK_NRULES + 1)

const etk_rule_desc *etk_rule_desc_get(int rule);
/* 1 + the byte offset of the rule's gsign in its per-step scalars, or 0 (rules.c). */
size_t etk_rule_gsign_at(int rule);
/* Whether one field of a hyperparameter struct is in its range (rules.c). */
int etk_field_ok(const etk_field_info *f, const void *hp);

/* Field-table helpers for rule files. */
#define ETK_INF HUGE_VAL
#define ETK_REAL(S, f, sched, lo, hi, lo_open, hi_open) \
    {#f, (uint32_t)offsetof(S, f), ETK_FIELD_REAL, sched, lo_open, hi_open, lo, hi}
#define ETK_NONNEG(S, f, sched) ETK_REAL(S, f, sched, 0.0, ETK_INF, 0, 1)
#define ETK_UNIT_OPEN(S, f, sched) ETK_REAL(S, f, sched, 0.0, 1.0, 0, 1)
#define ETK_UNIT(S, f, sched) ETK_REAL(S, f, sched, 0.0, 1.0, 0, 0)
#define ETK_FLAG(S, f) {#f, (uint32_t)offsetof(S, f), ETK_FIELD_FLAG, 0, 0, 0, 0.0, 1.0}
/* >= 0, or NaN for the reference's None (not schedulable) */
#define ETK_NONNEG_OR_NONE(S, f) {#f, (uint32_t)offsetof(S, f), ETK_FIELD_REAL_OR_NONE, 0, 0, 1, 0.0, ETK_INF}
#define ETK_INT(S, f, lo, hi) {#f, (uint32_t)offsetof(S, f), ETK_FIELD_INT, 0, 0, 0, lo, hi}
#define ETK_NFIELDS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- one SIMD variant's function table (kernels.c) ------------------- */
#define ETK_NPAIRS (ETK_NDTYPES * ETK_NDTYPES)
#define ETK_PAIR(param, state) ((param) * ETK_NDTYPES + (state))

typedef struct etk_rule_loops {
    etk_loop_fn fn[ETK_MAX_PHASES][ETK_NPAIRS];
} etk_rule_loops;

/* ---- low-precision state (lowp.c, lowp.h) ---------------------------- */
/* The 8-bit map of a slot and its nearest-code tables (q8_tables.h): buckets of
 * |x| by its float32 bits >> 16, from 2^-23 (ETK_Q8_KMIN) to 1 (ETK_Q8_KMAX). */
#define ETK_Q8_KMIN 0x3400u
#define ETK_Q8_KMAX 0x3F80u
#define ETK_Q8_NKEY 2945
#define ETK_Q8_OCT0 96 /* octave of |x| in the VBMI search: max(biased exponent - ETK_Q8_OCT0, 0) */
typedef struct etk_q8_codec {
    const float *map;                /* 256 values, sorted */
    const float *thr;                /* 256 thresholds: the code of x is the number <= x (the last is +inf) */
    const unsigned char *lut;        /* 2 x ETK_Q8_NKEY: per sign and bucket, the code at the bucket's low end */
    /* 2 x ETK_Q8_NKEY: the same search in one word, for a vector gather: per
     * sign and bucket, lut << 17 | t, where x gets code lut + 1 exactly when
     * its low 16 bits (inverted if x < 0) are >= t (t = 2^16: never) */
    const int32_t *key;
    /* the gather-free search of the VBMI loops (gen_q8_tables.py, estimate_tables):
     * per octave of |x| its first segment and breakpoint, per segment (+ 8 if
     * x < 0) a line whose floor is the code or one below it; and the map's
     * values and thresholds as byte planes ([b]: byte b of the values, [4 + b]:
     * of the thresholds, 256 bytes each) */
    const int32_t *oct;              /* 32 */
    const float *bp;                 /* 32 */
    const float *line;               /* 2 x 16: slopes, then intercepts */
    const unsigned char *planes;     /* 8 x 256 */
    int is_signed;                   /* 0: the unsigned map; a positive x never gets code 0 */
} etk_q8_codec;
extern const etk_q8_codec etk_q8_signed, etk_q8_unsigned;

/* An 8-bit range of one rule in one pass (lowp.h): tensor t, its working copy
 * w, the slots in `used` (those the rule's hyperparameters need). */
typedef void (*etk_q8_range_fn)(const etk_tensor *t, etk_tensor *w, const etk_rule_info *info, unsigned used,
                                size_t a, size_t b, const void *coef);

/* The codec loops of one SIMD variant. */
typedef struct etk_lowp_fns {
    void (*bf16_dec)(const uint16_t *in, float *out, size_t n);
    void (*bf16_enc)(const float *in, uint16_t *out, size_t n);
    /* stochastic: element i adds the hash of its index's low word lo0 + i under the keys ka, kbh */
    void (*bf16_enc_sr)(const float *in, uint16_t *out, size_t n, uint32_t ka, uint32_t kbh, uint32_t lo0);
    void (*q8_dec)(const uint8_t *in, const etk_q8_codec *q, float scale, float *out, size_t n);
    /* the scale of a block (n <= ETK_QBLOCK) into *absmax; returns its inverse */
    float (*q8_scale)(const float *in, size_t n, float *absmax);
    /* the codes of n values of a block with that scale and inverse
     * (etakit.reference.q8_quantize, the unsigned map's rule included) */
    void (*q8_codes)(const float *in, uint8_t *out, size_t n, float scale, float inv, const etk_q8_codec *q);
    /* a rule's float32 loop and its 8-bit range in one pass (NULL: none in this variant) */
    etk_loop_fn q8_fused_loop;
    etk_q8_range_fn q8_fused;
    /* bfloat16 parameters with Kahan compensation: new float32 values x, bits p and comp updated */
    void (*bf16_kahan)(const float *x, uint16_t *p, uint16_t *comp, size_t n);
} etk_lowp_fns;

/* Elements [a, b) of tensor t (a a multiple of ETK_BLOCK) with low-precision
 * state: chunk by chunk (ETK_LOWP_CHUNK elements, aligned in the tensor, so
 * the cut does not depend on the thread split), decode the slots in `needs`
 * into float32, run the float32 loop fn, encode.  8-bit state goes block by
 * block (ETK_QBLOCK), the loop of one block followed by the encoding of the
 * block before it, ETK_LOWP_STEP elements at a time (a whole block measured
 * best here: 64 and inlined per-rule drivers gained nothing). */
#define ETK_LOWP_CHUNK ((size_t)1024)
#define ETK_LOWP_STEP ((size_t)256)
void etk_lowp_range(const etk_lowp_fns *f, etk_loop_fn fn, const etk_tensor *t, const etk_rule_info *info,
                    unsigned needs, size_t a, size_t b, const void *coef);
/* Whether rule descriptor r can keep low-precision state. */
int etk_lowp_desc_ok(const etk_rule_desc *r);
/* bfloat16 parameters: write the new float32 values x of elements [j, j + n)
 * of tensor t back to its bfloat16 parameter (t->comp: Kahan; else
 * t->param_stochastic: stochastic rounding; else to nearest even).  A run
 * must not cross a multiple of 2^32 (blocks never do). */
void etk_bf16_param_store(const etk_lowp_fns *f, const etk_tensor *t, const float *x, size_t j, size_t n);
#define ETK_PARAM_SR_SLOT 7u /* the stochastic-rounding stream of bfloat16 parameters (slots are < ETK_MAX_SLOTS) */

/* The loops of the training loop's other passes (passes.h), per parameter dtype. */
typedef struct etk_pass_fns {
    void (*norm)(const void *g, size_t n, int inf, double *out);
    void (*scale)(const void *g, void *out, size_t n, double mul);
    void (*ema)(void *ema, const void *p, size_t n, double w);
    double (*absmax)(const void *g, size_t n);
    void (*axpy)(void *acc, const void *g, size_t n, double w, int first);
    void (*norm4)(const void *g, double *out);
} etk_pass_fns;

typedef struct etk_kernels {
    const char *name;
    etk_rule_loops rule[ETK_NROWS];
    etk_lowp_fns lowp;
    /* by rule: its one phase with bfloat16 state rounded to nearest, fused
     * (NULL: decode, float32 loop, encode, chunk by chunk) */
    etk_loop_fn bf16[ETK_NROWS];
    etk_pass_fns pass[ETK_NDTYPES];
} etk_kernels;

extern const etk_kernels etk_kernels_baseline;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ETK_X86_DISPATCH 1
extern const etk_kernels etk_kernels_avx2;
extern const etk_kernels etk_kernels_avx512;
extern const etk_kernels etk_kernels_avx512vbmi;
#else
#define ETK_X86_DISPATCH 0
#endif

/* ---- run-time configuration (config.c) -------------------------------- */
const etk_kernels *etk_kernels_now(void);
/* Threads for a call over `total` elements (1 below the threshold). */
int etk_threads_for(size_t total);
/* Flush-to-zero around a kernel call on this thread: begin returns the state
 * to hand to end. */
unsigned etk_ftz_begin(void);
void etk_ftz_end(unsigned saved);

/* ---- shared by rule files --------------------------------------------- */
static ETK_ALWAYS_INLINE int etk_finite(double x) { return x == x && x - x == 0.0; }

/* Python's max(a, b) and min(a, b) (the first argument unless the second is
 * larger, or smaller; NaN included), for rules whose reference computes its
 * scalars in Python. */
static ETK_ALWAYS_INLINE double etk_py_max(double a, double b) { return b > a ? b : a; }
static ETK_ALWAYS_INLINE double etk_py_min(double a, double b) { return b < a ? b : a; }
/* Two hyperparameter values are the same (NaN, a None, is the same as NaN). */
static ETK_ALWAYS_INLINE int etk_same_real(double a, double b) { return a == b || (a != a && b != b); }

/* Sum ETK_LANES lane accumulators in a fixed order. */
static ETK_ALWAYS_INLINE double etk_lane_sum(const double *acc)
{
    double s = 0.0;
    int j;
    for (j = 0; j < ETK_LANES; j++) s += acc[j];
    return s;
}

#endif /* ETK_INTERNAL_H */
