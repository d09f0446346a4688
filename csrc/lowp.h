/*
 * lowp.h -- the codec loops of low-precision optimizer state, instantiated
 * once per SIMD variant by kernels_variant.h (ETK_LOWP_LOOPS; ETK_LOWP_ROW
 * gives the variant's table entry).  The host side, the chunk driver that
 * decodes a chunk of state, runs a rule's float32 loop on it and encodes it
 * back, is lowp.c.  Every loop is a pure function of its inputs, element by
 * element (the scale of a block is a maximum, whose value does not depend on
 * the order), so the results are the same for every variant; they are the
 * functions etakit.reference.bf16_round, bf16_round_stochastic,
 * q8_quantize and q8_dequantize.
 */
#if defined(ETK_LOWP_LOOPS)

#define ETK_LFN(name) ETK_CAT2(name, ETK_VARIANT)

#ifndef ETK_LOWP_HELPERS
#define ETK_LOWP_HELPERS
static ETK_ALWAYS_INLINE uint32_t etk_bits_of(float f)
{
    union { float f; uint32_t u; } x;
    x.f = f;
    return x.u;
}
static ETK_ALWAYS_INLINE float etk_float_of(uint32_t u)
{
    union { float f; uint32_t u; } x;
    x.u = u;
    return x.f;
}
/* Chris Wellons' lowbias32 integer hash */
static ETK_ALWAYS_INLINE uint32_t etk_lowbias32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}
/* One element of each codec, as the portable loops write it (the tails of the
 * vector loops). */
static ETK_ALWAYS_INLINE uint16_t etk_bf16_rne1(float f)
{
    uint32_t u = etk_bits_of(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    uint32_t q = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
}
static ETK_ALWAYS_INLINE uint16_t etk_bf16_sr1(float f, uint32_t idx, uint32_t ka, uint32_t kbh)
{
    uint32_t u = etk_bits_of(f);
    uint32_t h = etk_lowbias32(etk_lowbias32(idx ^ ka) ^ kbh) >> 16;
    uint32_t r = (u + h) >> 16;
    uint32_t q = (u >> 16) | 0x40u;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
}
static ETK_ALWAYS_INLINE uint8_t etk_q8_code1(float x, const unsigned char *lut, const float *thr)
{
    uint32_t u = etk_bits_of(x);
    uint32_t k = (u & 0x7fffffffu) >> 16;
    uint32_t base, c;
    k = k < ETK_Q8_KMIN ? ETK_Q8_KMIN : k > ETK_Q8_KMAX ? ETK_Q8_KMAX : k;
    base = (uint32_t)lut[(u >> 31) * ETK_Q8_NKEY + (k - ETK_Q8_KMIN)];
    c = base + (x >= thr[base]);
    c = c > 255u ? 255u : c;
    return (uint8_t)(x != x ? 255u : c);
}
/* The unsigned map (second moments, under a square root in a denominator)
 * never rounds a positive value to code 0: a first moment that stays non-zero
 * would then be divided by eps alone, a step thousands of times lr.  Such a
 * value takes the smallest positive code. */
static ETK_ALWAYS_INLINE void etk_q8_nonneg(const float *restrict in, uint8_t *restrict out, size_t n)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) out[i] = (uint8_t)(out[i] == 0 && in[i] > 0.0f ? 1u : out[i]);
}
/* The byte order of the VBMI lookups (see there): position 16 L + 4 k + j
 * holds byte 16 k + 4 L + j, and the reverse (the permutation is its own
 * inverse). */
static const unsigned char etk_q8_perm64[64] = {
    0, 1, 2, 3, 16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51, 4,  5,  6,  7,  20, 21,
    22, 23, 36, 37, 38, 39, 52, 53, 54, 55, 8, 9, 10, 11, 24, 25, 26, 27, 40, 41, 42, 43,
    56, 57, 58, 59, 12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63,
};
/* The scale of a block: max |x|, NaN if any is NaN; returns 1 / scale (0 for
 * 0).  The largest magnitude is the largest of the magnitudes' bits (as
 * unsigned integers), and a NaN's bits are above +inf's. */
static ETK_ALWAYS_INLINE float etk_q8_absmax(const float *restrict in, size_t n, float *absmax)
{
    uint32_t m = 0;
    float f;
    size_t i;
#pragma omp simd reduction(max : m)
    for (i = 0; i < n; i++) {
        uint32_t a = etk_bits_of(in[i]) & 0x7fffffffu;
        m = a > m ? a : m;
    }
    f = etk_float_of(m > 0x7f800000u ? 0x7fc00000u : m);
    *absmax = f;
    return f == 0.0f ? 0.0f : 1.0f / f;
}
#endif

#if ETK_ISA >= 2
/* AVX-512 (F, VL, BW, DQ): 16 lanes, masked tails. */
static ETK_TGT ETK_ALWAYS_INLINE __mmask16 ETK_LFN(tail16)(size_t left)
{
    return left >= 16 ? (__mmask16)0xFFFFu : (__mmask16)((1u << left) - 1u);
}

ETK_TGT static void ETK_LFN(bf16_dec)(const uint16_t *restrict in, float *restrict out, size_t n)
{
    size_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m256i h = _mm256_loadu_si256((const __m256i *)(in + i));
        _mm512_storeu_si512((void *)(out + i), _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
    if (i < n) {
        const __mmask16 k = ETK_LFN(tail16)(n - i);
        const __m256i h = _mm256_maskz_loadu_epi16(k, in + i);
        _mm512_mask_storeu_epi32(out + i, k, _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
}

/* NaN: the quiet NaN of the top half; else (u + round) >> 16 */
static ETK_TGT ETK_ALWAYS_INLINE __m256i ETK_LFN(bf16_pack16)(__m512i u, __m512i add)
{
    const __m512i hi = _mm512_srli_epi32(u, 16);
    const __mmask16 nan =
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    __m512i r = _mm512_srli_epi32(_mm512_add_epi32(u, add), 16);
    r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(r);
}

static ETK_TGT ETK_ALWAYS_INLINE __m512i ETK_LFN(bf16_rne_add)(__m512i u)
{
    return _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1)));
}

ETK_TGT static void ETK_LFN(bf16_enc)(const float *restrict in, uint16_t *restrict out, size_t n)
{
    size_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512i u = _mm512_loadu_si512((const void *)(in + i));
        _mm256_storeu_si256((__m256i *)(out + i), ETK_LFN(bf16_pack16)(u, ETK_LFN(bf16_rne_add)(u)));
    }
    if (i < n) {
        const __mmask16 k = ETK_LFN(tail16)(n - i);
        const __m512i u = _mm512_maskz_loadu_epi32(k, in + i);
        _mm256_mask_storeu_epi16(out + i, k, ETK_LFN(bf16_pack16)(u, ETK_LFN(bf16_rne_add)(u)));
    }
}

static ETK_TGT ETK_ALWAYS_INLINE __m512i ETK_LFN(lowbias32x16)(__m512i x)
{
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32((int)0x846ca68bu));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}

ETK_TGT static void ETK_LFN(bf16_enc_sr)(const float *restrict in, uint16_t *restrict out, size_t n, uint32_t ka,
                                         uint32_t kbh, uint32_t lo0)
{
    const __m512i vka = _mm512_set1_epi32((int)ka), vkb = _mm512_set1_epi32((int)kbh);
    __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)lo0),
                                   _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    size_t i;
    for (i = 0; i < n; i += 16) {
        const __mmask16 k = ETK_LFN(tail16)(n - i);
        const __m512i u = _mm512_maskz_loadu_epi32(k, in + i);
        const __m512i h = _mm512_srli_epi32(
            ETK_LFN(lowbias32x16)(_mm512_xor_si512(ETK_LFN(lowbias32x16)(_mm512_xor_si512(idx, vka)), vkb)), 16);
        _mm256_mask_storeu_epi16(out + i, k, ETK_LFN(bf16_pack16)(u, h));
        idx = _mm512_add_epi32(idx, _mm512_set1_epi32(16));
    }
}

#if ETK_ISA == 2
ETK_TGT static void ETK_LFN(q8_dec)(const uint8_t *restrict in, const etk_q8_codec *q, float scale,
                                    float *restrict out, size_t n)
{
    const float *restrict map = q->map;
    const __m512 s = _mm512_set1_ps(scale);
    size_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512i c = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(in + i)));
        _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_i32gather_ps(c, map, 4), s));
    }
    if (i < n) {
        const __mmask16 k = ETK_LFN(tail16)(n - i);
        const __m512i c = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(k, in + i));
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(_mm512_i32gather_ps(c, map, 4), s));
    }
}

/* The codes of 16 values x (already scaled), as etk_q8_code1, from one
 * gather of the bucket's key (etk_q8_codec.key). */
static ETK_TGT ETK_ALWAYS_INLINE __m128i ETK_LFN(q8_code16)(__m512 x, const int32_t *key)
{
    const __m512i u = _mm512_castps_si512(x);
    const __mmask16 neg = _mm512_movepi32_mask(u);
    const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512i k = _mm512_srli_epi32(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), 16);
    __m512i e, low, c;
    k = _mm512_min_epi32(_mm512_max_epi32(k, _mm512_set1_epi32((int)ETK_Q8_KMIN)), _mm512_set1_epi32((int)ETK_Q8_KMAX));
    k = _mm512_sub_epi32(k, _mm512_set1_epi32((int)ETK_Q8_KMIN));
    k = _mm512_mask_add_epi32(k, neg, k, _mm512_set1_epi32(ETK_Q8_NKEY));
    e = _mm512_i32gather_epi32(k, key, 4);
    low = _mm512_and_si512(_mm512_mask_xor_epi32(u, neg, u, _mm512_set1_epi32(0xffff)), _mm512_set1_epi32(0xffff));
    c = _mm512_srli_epi32(e, 17);
    c = _mm512_mask_add_epi32(c, _mm512_cmpge_epi32_mask(low, _mm512_and_si512(e, _mm512_set1_epi32(0x1ffff))), c,
                              _mm512_set1_epi32(1));
    c = _mm512_min_epi32(c, _mm512_set1_epi32(255));
    c = _mm512_mask_mov_epi32(c, nan, _mm512_set1_epi32(255));
    return _mm512_cvtepi32_epi8(c);
}

ETK_TGT static void ETK_LFN(q8_codes)(const float *restrict in, uint8_t *restrict out, size_t n, float scale,
                                      float inv1, const etk_q8_codec *q)
{
    const int32_t *key = q->key;
    const __m512 inv = _mm512_set1_ps(inv1);
    size_t i;
    (void)scale;
    for (i = 0; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(out + i), ETK_LFN(q8_code16)(_mm512_mul_ps(_mm512_loadu_ps(in + i), inv), key));
    if (i < n) {
        const __mmask16 k = ETK_LFN(tail16)(n - i);
        _mm_mask_storeu_epi8(out + i, k, ETK_LFN(q8_code16)(_mm512_mul_ps(_mm512_maskz_loadu_ps(k, in + i), inv), key));
    }
    if (!q->is_signed) etk_q8_nonneg(in, out, n);
}

#else
/* AVX-512 VBMI: the 8-bit codecs without gathers.  A lookup of 64 float32
 * entries of a 256-entry table by 64 byte indices reads the table's four byte
 * planes with two vpermi2b each (128 entries per pair of registers, the
 * index's top bit choosing the pair) and interleaves the planes back into
 * dwords.  The interleave (within 128-bit lanes) leaves in lane L of dword
 * vector k the entry of index byte 16 L + 4 k + j; the dword-to-byte packing
 * (also within lanes) puts element 4 L + j of vector k at that byte, so a
 * lookup by packed indices lines up with the vectors they came from, and
 * etk_q8_perm64 turns natural byte order into that order and back. */
static ETK_TGT ETK_ALWAYS_INLINE __mmask64 ETK_LFN(tail64)(size_t left)
{
    return left >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << left) - 1u);
}

static ETK_TGT ETK_ALWAYS_INLINE void ETK_LFN(lut64)(__m512i idx, const unsigned char *planes, __m512i out[4])
{
    const __mmask64 up = _mm512_movepi8_mask(idx);
    __m512i b[4], w0, w1, w2, w3;
    int k;
    for (k = 0; k < 4; k++) {
        const unsigned char *p = planes + 256 * k;
        const __m512i lo = _mm512_permutex2var_epi8(_mm512_loadu_si512((const void *)p), idx,
                                                    _mm512_loadu_si512((const void *)(p + 64)));
        const __m512i hi = _mm512_permutex2var_epi8(_mm512_loadu_si512((const void *)(p + 128)), idx,
                                                    _mm512_loadu_si512((const void *)(p + 192)));
        b[k] = _mm512_mask_blend_epi8(up, lo, hi);
    }
    w0 = _mm512_unpacklo_epi8(b[0], b[1]);
    w1 = _mm512_unpackhi_epi8(b[0], b[1]);
    w2 = _mm512_unpacklo_epi8(b[2], b[3]);
    w3 = _mm512_unpackhi_epi8(b[2], b[3]);
    out[0] = _mm512_unpacklo_epi16(w0, w2);
    out[1] = _mm512_unpackhi_epi16(w0, w2);
    out[2] = _mm512_unpacklo_epi16(w1, w3);
    out[3] = _mm512_unpackhi_epi16(w1, w3);
}

/* four vectors of 16 dwords in [0, 255] to 64 bytes, in lookup order */
static ETK_TGT ETK_ALWAYS_INLINE __m512i ETK_LFN(pack64)(const __m512i v[4])
{
    return _mm512_packus_epi16(_mm512_packus_epi32(v[0], v[1]), _mm512_packus_epi32(v[2], v[3]));
}

ETK_TGT static void ETK_LFN(q8_dec)(const uint8_t *restrict in, const etk_q8_codec *q, float scale,
                                    float *restrict out, size_t n)
{
    const __m512 s = _mm512_set1_ps(scale);
    const __m512i perm = _mm512_loadu_si512((const void *)etk_q8_perm64);
    size_t i;
    int k;
    for (i = 0; i < n; i += 64) {
        const __mmask64 m = ETK_LFN(tail64)(n - i);
        __m512i v[4];
        ETK_LFN(lut64)(_mm512_permutexvar_epi8(perm, _mm512_maskz_loadu_epi8(m, in + i)), q->planes, v);
        for (k = 0; k < 4; k++)
            _mm512_mask_storeu_ps(out + i + 16 * k, (__mmask16)(m >> (16 * k)),
                                  _mm512_mul_ps(_mm512_castsi512_ps(v[k]), s));
    }
}

/* The codes of values x (finite, |x| < 2): the estimate c0 of each code, the
 * code or one below it (the segment of |x| from its octave and the octave's
 * breakpoint, then floor of the segment's line: etk_q8_codec.oct, .bp,
 * .line), and then c0 + (x >= the threshold above c0).  With the unsigned map
 * x is clamped at 0 first (a negative x takes code 0 either way) and a
 * positive input never takes code 0.  The tables go into registers once per
 * call (stores through uint8_t pointers may alias them). */
typedef struct ETK_LFN(q8_regs) {
    __m512 bp0, bp1, la, lb;
    __m512i oc0, oc1;
    const unsigned char *tp; /* the thresholds' byte planes (read as memory operands) */
} ETK_LFN(q8_regs);

static ETK_TGT ETK_ALWAYS_INLINE void ETK_LFN(q8_regs_load)(ETK_LFN(q8_regs) * r, const etk_q8_codec *q)
{
    r->bp0 = _mm512_loadu_ps(q->bp), r->bp1 = _mm512_loadu_ps(q->bp + 16);
    r->la = _mm512_loadu_ps(q->line), r->lb = _mm512_loadu_ps(q->line + 16);
    r->oc0 = _mm512_loadu_si512((const void *)q->oct), r->oc1 = _mm512_loadu_si512((const void *)(q->oct + 16));
    r->tp = q->planes + 4 * 256;
}

/* c0 of 16 values x */
static ETK_TGT ETK_ALWAYS_INLINE __m512i ETK_LFN(q8_est16)(__m512 x, const ETK_LFN(q8_regs) * r, const int nonneg)
{
    const __m512i u = _mm512_castps_si512(x), one = _mm512_set1_epi32(1);
    __m512i ua, o, seg;
    __m512 a;
    if (nonneg) {
        a = _mm512_max_ps(x, _mm512_setzero_ps());
        ua = _mm512_castps_si512(a);
    } else {
        ua = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));
        a = _mm512_castsi512_ps(ua);
    }
    /* max(biased exponent - ETK_Q8_OCT0, 0): the exponent fits the low 16 bits */
    o = _mm512_subs_epu16(_mm512_srli_epi32(ua, 23), _mm512_set1_epi32(ETK_Q8_OCT0));
    seg = _mm512_permutex2var_epi32(r->oc0, o, r->oc1);
    seg = _mm512_mask_add_epi32(seg, _mm512_cmp_ps_mask(a, _mm512_permutex2var_ps(r->bp0, o, r->bp1), _CMP_GE_OQ), seg,
                                one);
    if (!nonneg) seg = _mm512_mask_add_epi32(seg, _mm512_movepi32_mask(u), seg, _mm512_set1_epi32(8));
    return _mm512_cvt_roundps_epi32(_mm512_fmadd_ps(_mm512_permutexvar_ps(seg, r->la), a, _mm512_permutexvar_ps(seg, r->lb)),
                                    _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
}

/* The codes of 64 values x (v: the inputs x was scaled from) from their
 * estimates c, into out (mask m): the thresholds above the estimates read
 * from byte planes (see ETK_LFN(lut64)). */
static ETK_TGT ETK_ALWAYS_INLINE void ETK_LFN(q8_finish64)(const __m512 x[4], const __m512 v[4], __m512i c[4],
                                                           const ETK_LFN(q8_regs) * r, uint8_t *out, __mmask64 m,
                                                           const int nonneg)
{
    const __m512i one = _mm512_set1_epi32(1);
    const __m512i idx = ETK_LFN(pack64)(c);
    const __mmask64 up = _mm512_movepi8_mask(idx);
    __m512i b[4], t[4], w0, w1, w2, w3;
    int k;
    for (k = 0; k < 4; k++) {
        const unsigned char *pl = r->tp + 256 * k;
        b[k] = _mm512_mask_blend_epi8(up,
                                      _mm512_permutex2var_epi8(_mm512_loadu_si512((const void *)pl), idx,
                                                               _mm512_loadu_si512((const void *)(pl + 64))),
                                      _mm512_permutex2var_epi8(_mm512_loadu_si512((const void *)(pl + 128)), idx,
                                                               _mm512_loadu_si512((const void *)(pl + 192))));
    }
    w0 = _mm512_unpacklo_epi8(b[0], b[1]);
    w1 = _mm512_unpackhi_epi8(b[0], b[1]);
    w2 = _mm512_unpacklo_epi8(b[2], b[3]);
    w3 = _mm512_unpackhi_epi8(b[2], b[3]);
    t[0] = _mm512_unpacklo_epi16(w0, w2);
    t[1] = _mm512_unpackhi_epi16(w0, w2);
    t[2] = _mm512_unpacklo_epi16(w1, w3);
    t[3] = _mm512_unpackhi_epi16(w1, w3);
    for (k = 0; k < 4; k++) {
        c[k] = _mm512_mask_add_epi32(c[k], _mm512_cmp_ps_mask(x[k], _mm512_castsi512_ps(t[k]), _CMP_GE_OQ), c[k], one);
        /* a positive input: at least code 1 (min(bits, 1) is 1, 0 for +0, negative for x < 0) */
        if (nonneg) c[k] = _mm512_max_epi32(c[k], _mm512_min_epi32(_mm512_castps_si512(v[k]), one));
    }
    _mm512_mask_storeu_epi8(out, m,
                            _mm512_permutexvar_epi8(_mm512_loadu_si512((const void *)etk_q8_perm64), ETK_LFN(pack64)(c)));
}

static ETK_TGT ETK_ALWAYS_INLINE void ETK_LFN(q8_codes_body)(const float *restrict in, uint8_t *restrict out,
                                                             size_t n, float inv1, const etk_q8_codec *q,
                                                             const int nonneg)
{
    const __m512 inv = _mm512_set1_ps(inv1);
    ETK_LFN(q8_regs) r;
    size_t i;
    int k;
    ETK_LFN(q8_regs_load)(&r, q);
    for (i = 0; i < n; i += 64) {
        const __mmask64 m = ETK_LFN(tail64)(n - i);
        __m512 v[4], x[4];
        __m512i c[4];
        for (k = 0; k < 4; k++) {
            v[k] = _mm512_maskz_loadu_ps((__mmask16)(m >> (16 * k)), in + i + 16 * k);
            x[k] = _mm512_mul_ps(v[k], inv);
            c[k] = ETK_LFN(q8_est16)(x[k], &r, nonneg);
        }
        ETK_LFN(q8_finish64)(x, v, c, &r, out + i, m, nonneg);
    }
}

ETK_TGT static void ETK_LFN(q8_codes)(const float *restrict in, uint8_t *restrict out, size_t n, float scale,
                                      float inv, const etk_q8_codec *q)
{
    size_t i;
    if (!(scale <= FLT_MAX && inv <= FLT_MAX)) {
        /* a NaN or infinite scale or inverse (x NaN or unbounded): the bucket search */
        for (i = 0; i < n; i++) out[i] = etk_q8_code1(in[i] * inv, q->lut, q->thr);
        if (!q->is_signed) etk_q8_nonneg(in, out, n);
    } else if (q->is_signed) {
        ETK_LFN(q8_codes_body)(in, out, n, inv, q, 0);
    } else {
        ETK_LFN(q8_codes_body)(in, out, n, inv, q, 1);
    }
}

/* Adam/AdamW (rules/adam.h) with 8-bit state in one pass, block by block.
 * Per 64 elements of block k: the state decoded in registers, the update (the
 * float32 loop of rules/adam.h, operation for operation, so the same bits),
 * the new moments stored in an L1 buffer and their largest magnitudes kept,
 * and, 16 elements at a time between the updates, the code estimates of the
 * same elements of block k - 1, whose scales are known: Adam's divisions and
 * square roots (a unit of their own) and the codecs' permutes then run side
 * by side in the out-of-order core instead of one after the other. */
static ETK_TGT ETK_ALWAYS_INLINE void ETK_LFN(adam_q8_body)(const etk_tensor *t, size_t a, size_t b,
                                                            const etk_adam_coef *c, const int wd, const int ams)
{
    enum { NS = 3 };
    float buf[2][NS][ETK_QBLOCK], dec[NS][64], scale[NS] = {0}, inv[NS] = {0};
    const etk_q8_codec *q[NS] = {&etk_q8_signed, &etk_q8_unsigned, &etk_q8_unsigned};
    const int ns = ams ? 3 : 2;
    const __m512 gsign = _mm512_set1_ps((float)c->gsign), wdv = _mm512_set1_ps((float)c->weight_decay);
    const __m512 decay = _mm512_set1_ps((float)c->decay), omb1 = _mm512_set1_ps((float)c->one_minus_beta1);
    const __m512 b2 = _mm512_set1_ps((float)c->beta2), omb2 = _mm512_set1_ps((float)c->one_minus_beta2);
    const __m512 bc2s = _mm512_set1_ps((float)c->bias_correction2_sqrt), eps = _mm512_set1_ps((float)c->eps);
    const __m512 nss = _mm512_set1_ps((float)c->neg_step_size);
    const __m512i perm = _mm512_loadu_si512((const void *)etk_q8_perm64), absm = _mm512_set1_epi32(0x7fffffff);
    float *pp = (float *)t->param;
    const float *gg = (const float *)t->grad;
    ETK_LFN(q8_regs) rs, ru;
    size_t lo, prev = 0, plen = 0, s;
    int cur = 0, j, k, fast[NS] = {0};
    ETK_LFN(q8_regs_load)(&rs, &etk_q8_signed);
    ETK_LFN(q8_regs_load)(&ru, &etk_q8_unsigned);
    for (lo = a; lo < b || plen; lo += ETK_QBLOCK, cur ^= 1) {
        const size_t len = lo < b ? (b - lo < ETK_QBLOCK ? b - lo : ETK_QBLOCK) : 0;
        __m512i top[NS];
        float sc[NS];
        for (j = 0; j < ns; j++) {
            top[j] = _mm512_setzero_si512();
            sc[j] = len ? t->absmax[j][lo / ETK_QBLOCK] : 0.0f;
        }
        for (s = 0; s < len || s < plen; s += 64) {
            const __mmask64 m = s < len ? ETK_LFN(tail64)(len - s) : 0;
            const __mmask64 pm = s < plen ? ETK_LFN(tail64)(plen - s) : 0;
            __m512i ce[NS][4];
            if (m)
                for (j = 0; j < ns; j++) {
                    __m512i d[4];
                    ETK_LFN(lut64)(_mm512_permutexvar_epi8(perm, _mm512_maskz_loadu_epi8(m, (const uint8_t *)t->state[j] + lo + s)),
                                   q[j]->planes, d);
                    for (k = 0; k < 4; k++)
                        _mm512_storeu_ps(dec[j] + 16 * k, _mm512_mul_ps(_mm512_castsi512_ps(d[k]), _mm512_set1_ps(sc[j])));
                }
            for (k = 0; k < 4; k++) {
                const __mmask16 mk = (__mmask16)(m >> (16 * k)), pk = (__mmask16)(pm >> (16 * k));
                if (mk) {
                    float *p = pp + lo + s + 16 * k;
                    __m512 pi = _mm512_maskz_loadu_ps(mk, p);
                    __m512 gi = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk, gg + lo + s + 16 * k), gsign);
                    __m512 mi = _mm512_loadu_ps(dec[0] + 16 * k), vi = _mm512_loadu_ps(dec[1] + 16 * k), den;
                    if (wd == ETK_WD_L2) gi = _mm512_add_ps(gi, _mm512_mul_ps(wdv, pi));
                    if (wd == ETK_WD_DECOUPLED) pi = _mm512_mul_ps(pi, decay);
                    mi = _mm512_add_ps(mi, _mm512_mul_ps(omb1, _mm512_sub_ps(gi, mi)));
                    vi = _mm512_add_ps(_mm512_mul_ps(vi, b2), _mm512_mul_ps(_mm512_mul_ps(omb2, gi), gi));
                    _mm512_storeu_ps(buf[cur][0] + s + 16 * k, mi);
                    _mm512_storeu_ps(buf[cur][1] + s + 16 * k, vi);
                    top[0] = _mm512_mask_max_epu32(top[0], mk, top[0], _mm512_and_si512(_mm512_castps_si512(mi), absm));
                    top[1] = _mm512_mask_max_epu32(top[1], mk, top[1], _mm512_and_si512(_mm512_castps_si512(vi), absm));
                    if (ams) {
                        /* vm > vi ? vm : vi, as the loop writes it (max_ps returns its second operand on NaN) */
                        const __m512 vm = _mm512_max_ps(_mm512_loadu_ps(dec[2] + 16 * k), vi);
                        _mm512_storeu_ps(buf[cur][2] + s + 16 * k, vm);
                        top[2] = _mm512_mask_max_epu32(top[2], mk, top[2], _mm512_and_si512(_mm512_castps_si512(vm), absm));
                        vi = vm;
                    }
                    den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2s), eps);
                    _mm512_mask_storeu_ps(p, mk, _mm512_add_ps(pi, _mm512_div_ps(_mm512_mul_ps(nss, mi), den)));
                }
                /* the estimates of the same elements of block k - 1, while the divisions run */
                for (j = 0; j < ns; j++)
                    ce[j][k] = pk && fast[j] ? ETK_LFN(q8_est16)(_mm512_mul_ps(_mm512_maskz_loadu_ps(pk, buf[cur ^ 1][j] + s + 16 * k),
                                                                               _mm512_set1_ps(inv[j])),
                                                                 j ? &ru : &rs, j != 0)
                                             : _mm512_setzero_si512();
            }
            if (pm)
                for (j = 0; j < ns; j++) {
                    const float *in = buf[cur ^ 1][j] + s;
                    uint8_t *out = (uint8_t *)t->state[j] + prev + s;
                    if (fast[j]) {
                        __m512 v[4], x[4];
                        for (k = 0; k < 4; k++) {
                            v[k] = _mm512_maskz_loadu_ps((__mmask16)(pm >> (16 * k)), in + 16 * k);
                            x[k] = _mm512_mul_ps(v[k], _mm512_set1_ps(inv[j]));
                        }
                        ETK_LFN(q8_finish64)(x, v, ce[j], j ? &ru : &rs, out, pm, j != 0);
                    } else { /* a NaN or infinite scale or inverse: the bucket search */
                        const size_t n = plen - s < 64 ? plen - s : 64;
                        size_t i;
                        for (i = 0; i < n; i++) out[i] = etk_q8_code1(in[i] * inv[j], q[j]->lut, q[j]->thr);
                        if (j) etk_q8_nonneg(in, out, n);
                    }
                }
        }
        for (j = 0; j < ns && len; j++) {
            uint32_t mx = _mm512_reduce_max_epu32(top[j]);
            scale[j] = etk_float_of(mx > 0x7f800000u ? 0x7fc00000u : mx);
            inv[j] = scale[j] == 0.0f ? 0.0f : 1.0f / scale[j];
            fast[j] = scale[j] <= FLT_MAX && inv[j] <= FLT_MAX;
            t->absmax[j][lo / ETK_QBLOCK] = scale[j];
        }
        prev = lo, plen = len;
    }
}

ETK_TGT static void ETK_LFN(adam_q8)(const etk_tensor *t, etk_tensor *w, const etk_rule_info *info, unsigned used,
                                     size_t a, size_t b, const void *cf)
{
    const etk_adam_coef *c = (const etk_adam_coef *)cf;
    (void)w, (void)info, (void)used;
    switch (c->wd * 2 + c->amsgrad) {
    case 0: ETK_LFN(adam_q8_body)(t, a, b, c, ETK_WD_NONE, 0); break;
    case 1: ETK_LFN(adam_q8_body)(t, a, b, c, ETK_WD_NONE, 1); break;
    case 2: ETK_LFN(adam_q8_body)(t, a, b, c, ETK_WD_L2, 0); break;
    case 3: ETK_LFN(adam_q8_body)(t, a, b, c, ETK_WD_L2, 1); break;
    case 4: ETK_LFN(adam_q8_body)(t, a, b, c, ETK_WD_DECOUPLED, 0); break;
    default: ETK_LFN(adam_q8_body)(t, a, b, c, ETK_WD_DECOUPLED, 1); break;
    }
}
#endif

#elif ETK_ISA == 1
/* AVX2: 8 lanes (16 for bfloat16 packing), scalar tails. */
ETK_TGT static void ETK_LFN(bf16_dec)(const uint16_t *restrict in, float *restrict out, size_t n)
{
    size_t i;
    for (i = 0; i + 8 <= n; i += 8) {
        const __m128i h = _mm_loadu_si128((const __m128i *)(in + i));
        _mm256_storeu_si256((__m256i *)(out + i), _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    }
    for (; i < n; i++) out[i] = etk_float_of((uint32_t)in[i] << 16);
}

static ETK_TGT ETK_ALWAYS_INLINE __m256i ETK_LFN(bf16_bits8)(__m256i u, __m256i add)
{
    const __m256i hi = _mm256_srli_epi32(u, 16);
    /* |u| and 0x7f800000 are both below 2^31: a signed comparison */
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    const __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, add), 16);
    return _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)), nan);
}

/* two vectors of 8 values below 2^16 -> 16 uint16 in order */
static ETK_TGT ETK_ALWAYS_INLINE void ETK_LFN(store16x16)(uint16_t *out, __m256i a, __m256i b)
{
    _mm256_storeu_si256((__m256i *)out, _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xD8));
}

static ETK_TGT ETK_ALWAYS_INLINE __m256i ETK_LFN(bf16_rne_add)(__m256i u)
{
    return _mm256_add_epi32(_mm256_set1_epi32(0x7fff), _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1)));
}

ETK_TGT static void ETK_LFN(bf16_enc)(const float *restrict in, uint16_t *restrict out, size_t n)
{
    size_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m256i u0 = _mm256_loadu_si256((const __m256i *)(in + i));
        const __m256i u1 = _mm256_loadu_si256((const __m256i *)(in + i + 8));
        ETK_LFN(store16x16)(out + i, ETK_LFN(bf16_bits8)(u0, ETK_LFN(bf16_rne_add)(u0)),
                            ETK_LFN(bf16_bits8)(u1, ETK_LFN(bf16_rne_add)(u1)));
    }
    for (; i < n; i++) out[i] = etk_bf16_rne1(in[i]);
}

static ETK_TGT ETK_ALWAYS_INLINE __m256i ETK_LFN(lowbias32x8)(__m256i x)
{
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7feb352d));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32((int)0x846ca68bu));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
}

static ETK_TGT ETK_ALWAYS_INLINE __m256i ETK_LFN(sr_bits8)(__m256i idx, __m256i ka, __m256i kb)
{
    return _mm256_srli_epi32(ETK_LFN(lowbias32x8)(_mm256_xor_si256(ETK_LFN(lowbias32x8)(_mm256_xor_si256(idx, ka)), kb)),
                             16);
}

ETK_TGT static void ETK_LFN(bf16_enc_sr)(const float *restrict in, uint16_t *restrict out, size_t n, uint32_t ka,
                                         uint32_t kbh, uint32_t lo0)
{
    const __m256i vka = _mm256_set1_epi32((int)ka), vkb = _mm256_set1_epi32((int)kbh);
    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)lo0), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    size_t i;
    for (i = 0; i + 16 <= n; i += 16) {
        const __m256i u0 = _mm256_loadu_si256((const __m256i *)(in + i));
        const __m256i u1 = _mm256_loadu_si256((const __m256i *)(in + i + 8));
        const __m256i h0 = ETK_LFN(sr_bits8)(idx, vka, vkb);
        const __m256i h1 = ETK_LFN(sr_bits8)(_mm256_add_epi32(idx, _mm256_set1_epi32(8)), vka, vkb);
        ETK_LFN(store16x16)(out + i, ETK_LFN(bf16_bits8)(u0, h0), ETK_LFN(bf16_bits8)(u1, h1));
        idx = _mm256_add_epi32(idx, _mm256_set1_epi32(16));
    }
    for (; i < n; i++) out[i] = etk_bf16_sr1(in[i], lo0 + (uint32_t)i, ka, kbh);
}

ETK_TGT static void ETK_LFN(q8_dec)(const uint8_t *restrict in, const etk_q8_codec *q, float scale,
                                    float *restrict out, size_t n)
{
    const float *restrict map = q->map;
    const __m256 s = _mm256_set1_ps(scale);
    size_t i;
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(in + i)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_i32gather_ps(map, c, 4), s));
    }
    for (; i < n; i++) out[i] = map[in[i]] * scale;
}

ETK_TGT static void ETK_LFN(q8_codes)(const float *restrict in, uint8_t *restrict out, size_t n, float scale,
                                      float inv1, const etk_q8_codec *q)
{
    const int32_t *key = q->key;
    const __m256 inv = _mm256_set1_ps(inv1);
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12,
                                          -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1);
    const __m256i ffff = _mm256_set1_epi32(0xffff);
    size_t i;
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(in + i), inv);
        const __m256i u = _mm256_castps_si256(x);
        const __m256i neg = _mm256_srai_epi32(u, 31);
        __m256i k = _mm256_srli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), 16);
        __m256i e, low, c, b;
        k = _mm256_min_epi32(_mm256_max_epi32(k, _mm256_set1_epi32((int)ETK_Q8_KMIN)),
                             _mm256_set1_epi32((int)ETK_Q8_KMAX));
        k = _mm256_sub_epi32(k, _mm256_set1_epi32((int)ETK_Q8_KMIN));
        k = _mm256_add_epi32(k, _mm256_and_si256(neg, _mm256_set1_epi32(ETK_Q8_NKEY)));
        e = _mm256_i32gather_epi32(key, k, 4);
        low = _mm256_and_si256(_mm256_xor_si256(u, neg), ffff);
        /* low >= t is not t > low; the comparison is all ones (-1) where false */
        c = _mm256_sub_epi32(_mm256_add_epi32(_mm256_srli_epi32(e, 17), _mm256_set1_epi32(1)),
                             _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_and_si256(e, _mm256_set1_epi32(0x1ffff)), low),
                                              _mm256_set1_epi32(1)));
        c = _mm256_min_epi32(c, _mm256_set1_epi32(255));
        c = _mm256_or_si256(c, _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)),
                                                _mm256_set1_epi32(255)));
        b = _mm256_shuffle_epi8(c, pick);
        _mm_storel_epi64((__m128i *)(out + i),
                         _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1)));
    }
    for (; i < n; i++) out[i] = etk_q8_code1(in[i] * inv1, q->lut, q->thr);
    if (!q->is_signed) etk_q8_nonneg(in, out, n);
    (void)scale;
}

#else
/* Portable loops (the compiler vectorises what it can). */
ETK_TGT static void ETK_LFN(bf16_dec)(const uint16_t *restrict in, float *restrict out, size_t n)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) out[i] = etk_float_of((uint32_t)in[i] << 16);
}

ETK_TGT static void ETK_LFN(bf16_enc)(const float *restrict in, uint16_t *restrict out, size_t n)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        uint32_t u = etk_bits_of(in[i]);
        uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
        uint32_t q = (u >> 16) | 0x40u;
        out[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

ETK_TGT static void ETK_LFN(bf16_enc_sr)(const float *restrict in, uint16_t *restrict out, size_t n, uint32_t ka,
                                         uint32_t kbh, uint32_t lo0)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        uint32_t u = etk_bits_of(in[i]);
        uint32_t h = etk_lowbias32(etk_lowbias32((lo0 + (uint32_t)i) ^ ka) ^ kbh) >> 16;
        uint32_t r = (u + h) >> 16;
        uint32_t q = (u >> 16) | 0x40u;
        out[i] = (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? q : r);
    }
}

ETK_TGT static void ETK_LFN(q8_dec)(const uint8_t *restrict in, const etk_q8_codec *q, float scale,
                                    float *restrict out, size_t n)
{
    const float *restrict map = q->map;
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) out[i] = map[in[i]] * scale;
}

ETK_TGT static void ETK_LFN(q8_codes)(const float *restrict in, uint8_t *restrict out, size_t n, float scale,
                                      float inv, const etk_q8_codec *q)
{
    const float *restrict thr = q->thr;
    const unsigned char *restrict lut = q->lut;
    size_t i;
    (void)scale;
#pragma omp simd
    for (i = 0; i < n; i++) out[i] = etk_q8_code1(in[i] * inv, lut, thr);
    if (!q->is_signed) etk_q8_nonneg(in, out, n);
}

#endif

ETK_TGT static float ETK_LFN(q8_scale)(const float *restrict in, size_t n, float *absmax)
{
    return etk_q8_absmax(in, n, absmax);
}

/* bfloat16 parameters with Kahan compensation (etakit.reference.bf16_kahan):
 * x holds the new float32 values, p the old bfloat16 bits (replaced by the
 * new ones) and comp the compensation (bfloat16, updated).  The update
 * x - old plus the compensation is added to the old value; what rounding
 * to bfloat16 loses of it is the next compensation. */
ETK_TGT static void ETK_LFN(bf16_kahan)(const float *restrict x, uint16_t *restrict p, uint16_t *restrict comp,
                                        size_t n)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) {
        const float old = etk_float_of((uint32_t)p[i] << 16);
        const float y = (x[i] - old) + etk_float_of((uint32_t)comp[i] << 16);
        const uint16_t q = etk_bf16_rne1(old + y);
        comp[i] = etk_bf16_rne1(y - (etk_float_of((uint32_t)q << 16) - old));
        p[i] = q;
    }
}

#undef ETK_LFN

#elif defined(ETK_LOWP_ROW)
{ETK_CAT2(bf16_dec, ETK_VARIANT), ETK_CAT2(bf16_enc, ETK_VARIANT), ETK_CAT2(bf16_enc_sr, ETK_VARIANT),
 ETK_CAT2(q8_dec, ETK_VARIANT), ETK_CAT2(q8_scale, ETK_VARIANT), ETK_CAT2(q8_codes, ETK_VARIANT),
#if ETK_ISA >= 3
 ETK_CAT(adam_p0, ETK_LOOPS_OF, f32), ETK_CAT2(adam_q8, ETK_VARIANT),
#else
 NULL, NULL,
#endif
 ETK_CAT2(bf16_kahan, ETK_VARIANT)},
#endif
