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
#endif

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

ETK_TGT static void ETK_LFN(q8_dec)(const uint8_t *restrict in, const float *restrict map, float scale,
                                    float *restrict out, size_t n)
{
    size_t i;
#pragma omp simd
    for (i = 0; i < n; i++) out[i] = map[in[i]] * scale;
}

ETK_TGT static void ETK_LFN(q8_enc)(const float *restrict in, uint8_t *restrict out, float *absmax, size_t n,
                                    const etk_q8_codec *q)
{
    const float *restrict thr = q->thr;
    const unsigned char *restrict lut = q->lut;
    float m = 0.0f, inv;
    int nan = 0;
    size_t i;
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (i = 0; i < n; i++) {
        float a = fabsf(in[i]);
        m = a > m ? a : m;
        nan |= a != a;
    }
    if (nan) m = etk_float_of(0x7fc00000u);
    *absmax = m;
    inv = m == 0.0f ? 0.0f : 1.0f / m;
#pragma omp simd
    for (i = 0; i < n; i++) {
        float x = in[i] * inv;
        uint32_t u = etk_bits_of(x);
        uint32_t k = (u & 0x7fffffffu) >> 16;
        uint32_t base, c;
        k = k < ETK_Q8_KMIN ? ETK_Q8_KMIN : k > ETK_Q8_KMAX ? ETK_Q8_KMAX : k;
        base = lut[(u >> 31) * ETK_Q8_NKEY + (k - ETK_Q8_KMIN)];
        c = base + (x >= thr[base]);
        c = c > 255u ? 255u : c;
        out[i] = (uint8_t)(x != x ? 255u : c);
    }
}

#undef ETK_LFN

#elif defined(ETK_LOWP_ROW)
{ETK_CAT2(bf16_dec, ETK_VARIANT), ETK_CAT2(bf16_enc, ETK_VARIANT), ETK_CAT2(bf16_enc_sr, ETK_VARIANT),
 ETK_CAT2(q8_dec, ETK_VARIANT), ETK_CAT2(q8_enc, ETK_VARIANT)},
#endif
