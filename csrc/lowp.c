/*
 * lowp.c -- low-precision optimizer state, host side: bfloat16 and 8-bit
 * blockwise state slots (see etk_dtype in etakit.h).
 *
 * Every rule's element loop is written for full-precision state; a tensor
 * with low-precision state runs that same float32 loop chunk by chunk: the
 * state of a chunk of ETK_LOWP_CHUNK elements is decoded into float32
 * temporaries on the stack (they stay in L1), the loop updates the
 * parameters and the temporaries, and the temporaries are encoded back, so
 * memory sees one pass of 2 (bfloat16) or 1 (8-bit) bytes per state element
 * each way.  Chunks are aligned in the tensor, never cut by the thread split
 * (thread ranges start on multiples of ETK_BLOCK), and the 8-bit blocks of
 * ETK_QBLOCK elements tile them, so results do not depend on the thread
 * count; the codec loops (lowp.h) are element-wise, so they do not depend on
 * the SIMD variant either.  Stochastic rounding draws its bits from a hash of
 * (tensor seed, step, slot, element index): reproducible, and the same for
 * any split.
 *
 * The nearest-code tables of 8-bit state (q8_tables.h) are generated from
 * etakit.reference by gen_q8_tables.py; etk_q8_map builds the maps the way
 * bitsandbytes' create_dynamic_map does, and the C test checks the two agree.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "etk_internal.h"
#include "q8_tables.h"

const etk_q8_codec etk_q8_signed = {etk_q8_map_signed,        etk_q8_thr_signed,   &etk_q8_lut_signed[0][0],
                                    &etk_q8_key_signed[0][0], etk_q8_oct_signed,   etk_q8_bp_signed,
                                    &etk_q8_line_signed[0][0], &etk_q8_planes_signed[0][0], 1};
const etk_q8_codec etk_q8_unsigned = {etk_q8_map_unsigned,        etk_q8_thr_unsigned, &etk_q8_lut_unsigned[0][0],
                                      &etk_q8_key_unsigned[0][0], etk_q8_oct_unsigned, etk_q8_bp_unsigned,
                                      &etk_q8_line_unsigned[0][0], &etk_q8_planes_unsigned[0][0], 0};

/* ------------------------------------------------------------ the maps */

/* float32 torch.linspace(start, end, steps) as torch computes it on the CPU:
 * the first half from start, the second from end, one fused multiply-add each. */
static void etk_linspace32(float start, float end, int steps, float *out)
{
    const float step = (end - start) / (float)(steps - 1);
    int i;
    for (i = 0; i < steps; i++)
        out[i] = i < steps / 2 ? fmaf(step, (float)i, start) : fmaf(-step, (float)(steps - 1 - i), end);
}

static int etk_cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void etk_q8_map(int is_signed, float out[256])
{
    float b[129];
    int i, j, k = 0;
    for (i = 0; i < 7; i++) {
        const int items = (is_signed ? 1 << i : 1 << (i + 1)) + 1;
        const float scale = (float)pow(10.0, (double)(i - 6));
        etk_linspace32(0.1f, 1.0f, items, b);
        for (j = 0; j + 1 < items; j++) {
            const float mean = (b[j] + b[j + 1]) / 2.0f;
            out[k++] = scale * mean;
            if (is_signed) out[k++] = -(scale * mean);
        }
    }
    out[k++] = 0.0f;
    out[k++] = 1.0f;
    qsort(out, (size_t)k, sizeof(float), etk_cmp_float);
}

/* ------------------------------------------------------------ stochastic rounding keys */

static uint64_t etk_splitmix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The keys of elements index0.. (a run that does not cross a multiple of 2^32). */
static void etk_sr_keys(uint64_t seed, int64_t step, unsigned slot, uint64_t index0, uint32_t *ka, uint32_t *kbh)
{
    uint64_t k = etk_splitmix64(etk_splitmix64(seed) ^ (((uint64_t)step << 3) | (uint64_t)slot));
    *ka = (uint32_t)k;
    *kbh = (uint32_t)(k >> 32) + (uint32_t)(index0 >> 32) * 0x9E3779B9u;
}

/* ------------------------------------------------------------ the chunk driver */

int etk_lowp_desc_ok(const etk_rule_desc *r)
{
    size_t j;
    if (r->nphases != 1 || r->nside || r->nred[0] || r->unit_phases || r->scratch || r->shared || r->between ||
        r->info.ngroup_state || (r->info.flags & (ETK_RULE_MATRIX | ETK_RULE_MATRIX_ONLY | ETK_RULE_SERIAL)))
        return 0;
    for (j = 0; j < r->info.nslots; j++)
        if ((r->info.slots[j].shape != ETK_SLOT_FULL && r->info.slots[j].shape != ETK_SLOT_SCALAR) ||
            r->info.slots[j].init == ETK_INIT_WORK)
            return 0;
    return 1;
}

int etk_rule_lowp(int rule)
{
    const etk_rule_desc *r = rule >= 0 && rule < ETK_NRULES ? etk_rule_desc_get(rule) : NULL;
    return r ? etk_lowp_desc_ok(r) : 0;
}

/* bfloat16 state: chunk by chunk, decode, loop, encode. */
static void etk_bf16_range(const etk_lowp_fns *f, etk_loop_fn fn, const etk_tensor *t, etk_tensor *w,
                           const etk_rule_info *info, unsigned used, size_t a, size_t b, const void *coef)
{
    float buf[ETK_MAX_SLOTS][ETK_LOWP_CHUNK];
    size_t j, lo, hi;
    for (lo = a; lo < b; lo = hi) {
        size_t len;
        hi = (lo / ETK_LOWP_CHUNK + 1) * ETK_LOWP_CHUNK;
        if (hi > b) hi = b;
        len = hi - lo;
        w->param = (float *)t->param + lo;
        w->grad = t->grad ? (const float *)t->grad + lo : NULL;
        w->n = len;
        for (j = 0; j < info->nslots; j++) {
            if (!(used >> j & 1u)) continue;
            w->state[j] = buf[j];
            f->bf16_dec((const uint16_t *)t->state[j] + lo, buf[j], len);
        }
        fn(w, 0, len, coef, NULL);
        for (j = 0; j < info->nslots; j++) {
            uint16_t *out = (uint16_t *)t->state[j] + lo;
            if (!(used >> j & 1u)) continue;
            if (t->stochastic) {
                uint32_t ka, kbh;
                etk_sr_keys(t->seed, t->step, (unsigned)j, (uint64_t)lo, &ka, &kbh);
                f->bf16_enc_sr(buf[j], out, len, ka, kbh, (uint32_t)lo);
            } else {
                f->bf16_enc(buf[j], out, len);
            }
        }
    }
}

/* 8-bit state: block by block, its state decoded into float32 temporaries
 * that stay in L1.  The loop of block k runs ETK_LOWP_STEP elements at a
 * time, each step followed by the encoding of the same elements of block
 * k - 1 (whose scale is known by then), so that the out-of-order core can run
 * a rule's divisions and square roots (a unit of their own) alongside the
 * codec's table lookups. */
static void etk_q8_range(const etk_lowp_fns *f, etk_loop_fn fn, const etk_tensor *t, etk_tensor *w,
                         const etk_rule_info *info, unsigned used, size_t a, size_t b, const void *coef)
{
    float buf[2][ETK_MAX_SLOTS][ETK_QBLOCK], scale[ETK_MAX_SLOTS], inv[ETK_MAX_SLOTS];
    const etk_q8_codec *q8[ETK_MAX_SLOTS];
    size_t j, lo, prev = 0, plen = 0; /* the block before: where it starts, its length (0: none) */
    int cur = 0;
    for (j = 0; j < info->nslots; j++) q8[j] = info->slots[j].nonneg ? &etk_q8_unsigned : &etk_q8_signed;
    for (lo = a; lo < b || plen; lo += ETK_QBLOCK, cur ^= 1) {
        const size_t len = lo < b ? (b - lo < ETK_QBLOCK ? b - lo : ETK_QBLOCK) : 0;
        size_t s;
        for (j = 0; j < info->nslots; j++)
            if ((used >> j & 1u) && len)
                f->q8_dec((const uint8_t *)t->state[j] + lo, q8[j], t->absmax[j][lo / ETK_QBLOCK], buf[cur][j], len);
        for (s = 0; s < len || s < plen; s += ETK_LOWP_STEP) {
            if (s < len) {
                const size_t n = len - s < ETK_LOWP_STEP ? len - s : ETK_LOWP_STEP;
                w->param = (float *)t->param + lo + s;
                w->grad = t->grad ? (const float *)t->grad + lo + s : NULL;
                w->n = n;
                for (j = 0; j < info->nslots; j++)
                    if (used >> j & 1u) w->state[j] = buf[cur][j] + s;
                fn(w, 0, n, coef, NULL);
            }
            if (s < plen)
                for (j = 0; j < info->nslots; j++)
                    if (used >> j & 1u)
                        f->q8_codes(buf[cur ^ 1][j] + s, (uint8_t *)t->state[j] + prev + s,
                                    plen - s < ETK_LOWP_STEP ? plen - s : ETK_LOWP_STEP, scale[j], inv[j], q8[j]);
        }
        for (j = 0; j < info->nslots; j++)
            if ((used >> j & 1u) && len) {
                inv[j] = f->q8_scale(buf[cur][j], len, &scale[j]);
                t->absmax[j][lo / ETK_QBLOCK] = scale[j];
            }
        prev = lo, plen = len;
    }
}

void etk_lowp_range(const etk_lowp_fns *f, etk_loop_fn fn, const etk_tensor *t, const etk_rule_info *info,
                    unsigned needs, size_t a, size_t b, const void *coef)
{
    unsigned used = 0u;
    etk_tensor w = *t;
    size_t j;
    for (j = 0; j < info->nslots; j++)
        if (info->slots[j].shape == ETK_SLOT_FULL) {
            if ((needs >> j & 1u) && t->state[j]) used |= 1u << j;
            w.state[j] = NULL;
        }
    w.state_dtype = ETK_FLOAT32;
    if (t->state_dtype == ETK_BFLOAT16)
        etk_bf16_range(f, fn, t, &w, info, used, a, b, coef);
    else if (fn == f->q8_fused_loop && f->q8_fused)
        f->q8_fused(t, &w, info, used, a, b, coef); /* the rule and the codecs in one pass */
    else
        etk_q8_range(f, fn, t, &w, info, used, a, b, coef);
}

void etk_bf16_param_store(const etk_lowp_fns *f, const etk_tensor *t, const float *x, size_t j, size_t n)
{
    uint16_t *p = (uint16_t *)t->param + j;
    if (t->comp) {
        f->bf16_kahan(x, p, (uint16_t *)t->comp + j, n);
    } else if (t->param_stochastic) {
        uint32_t ka, kbh;
        etk_sr_keys(t->seed, t->step, ETK_PARAM_SR_SLOT, (uint64_t)j, &ka, &kbh);
        f->bf16_enc_sr(x, p, n, ka, kbh, (uint32_t)j);
    } else {
        f->bf16_enc(x, p, n);
    }
}

/* ------------------------------------------------------------ public codecs (serial) */

void etk_bf16_encode(const float *x, uint16_t *out, size_t n, int stochastic, uint64_t seed, int64_t step,
                     unsigned slot, size_t index0)
{
    const etk_lowp_fns *f = &etk_kernels_now()->lowp;
    size_t lo, hi;
    if (!stochastic) {
        if (n) f->bf16_enc(x, out, n);
        return;
    }
    for (lo = 0; lo < n; lo = hi) {
        /* runs that do not cross a multiple of 2^32 of the element index */
        uint64_t at = (uint64_t)index0 + lo, room = 0x100000000ull - (at & 0xFFFFFFFFull);
        uint32_t ka, kbh;
        hi = n - lo < room ? n : lo + (size_t)room;
        etk_sr_keys(seed, step, slot, at, &ka, &kbh);
        f->bf16_enc_sr(x + lo, out + lo, hi - lo, ka, kbh, (uint32_t)at);
    }
}

void etk_bf16_decode(const uint16_t *x, float *out, size_t n)
{
    if (n) etk_kernels_now()->lowp.bf16_dec(x, out, n);
}

void etk_q8_encode(const float *x, uint8_t *codes, float *absmax, size_t n, int is_signed)
{
    const etk_lowp_fns *f = &etk_kernels_now()->lowp;
    size_t q;
    for (q = 0; q < n; q += ETK_QBLOCK) {
        const size_t len = n - q < ETK_QBLOCK ? n - q : ETK_QBLOCK;
        float *am = &absmax[q / ETK_QBLOCK];
        const float inv = f->q8_scale(x + q, len, am);
        f->q8_codes(x + q, codes + q, len, *am, inv, is_signed ? &etk_q8_signed : &etk_q8_unsigned);
    }
}

void etk_q8_decode(const uint8_t *codes, const float *absmax, float *out, size_t n, int is_signed)
{
    const etk_lowp_fns *f = &etk_kernels_now()->lowp;
    size_t q;
    for (q = 0; q < n; q += ETK_QBLOCK)
        f->q8_dec(codes + q, is_signed ? &etk_q8_signed : &etk_q8_unsigned, absmax[q / ETK_QBLOCK], out + q,
                  n - q < ETK_QBLOCK ? n - q : ETK_QBLOCK);
}
