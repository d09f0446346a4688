/*
 * kernels.c -- instantiates every rule's element loops (rules/<name>.h, in
 * ETK_RULE_LOOPS mode) once per SIMD variant and (param, state) type pair,
 * and publishes one function table per variant.  The variants differ only in
 * the target attribute the compiler vectorises for; the build itself stays
 * portable (no -march), and config.c picks the table at run time from the CPU.
 */
#include <math.h>

#include "etk_internal.h"

/* ETK_ISA, per variant: 0 baseline (portable C only), 1 AVX2, 2 AVX-512
 * (F, VL, BW, DQ), 3 AVX-512 with VBMI: the codec loops of low-precision
 * state (lowp.h) use intrinsics of that level, inside functions with the
 * variant's target attribute.  A variant that defines ETK_LOOPS_OF takes the
 * element loops of that variant instead of compiling its own. */
#include <float.h>
#if ETK_X86_DISPATCH
#include <immintrin.h>
#endif

#define ETK_CAT_(a, b, c) a##_##b##_##c
#define ETK_CAT(a, b, c) ETK_CAT_(a, b, c)
#define FN(name) ETK_CAT(name, ETK_VARIANT, ETK_TYPES)
#define LD(x) ((T)(x))
#define ST(x) ((S)(x))

#define ETK_CAT2_(a, b) a##_##b
#define ETK_CAT2(a, b) ETK_CAT2_(a, b)

/* Baseline: whatever the compiler targets by default (SSE2 on x86-64). */
#define ETK_VARIANT baseline
#define ETK_VARIANT_NAME "baseline"
#define ETK_TGT
#define ETK_ISA 0
#include "kernels_variant.h"
#undef ETK_VARIANT
#undef ETK_VARIANT_NAME
#undef ETK_TGT
#undef ETK_ISA

#if ETK_X86_DISPATCH
/* AVX2 (Haswell, Zen). */
#define ETK_VARIANT avx2
#define ETK_VARIANT_NAME "avx2"
#define ETK_TGT __attribute__((target("avx2")))
#define ETK_ISA 1
#include "kernels_variant.h"
#undef ETK_VARIANT
#undef ETK_VARIANT_NAME
#undef ETK_TGT
#undef ETK_ISA

/* AVX-512 (Skylake-X, Ice Lake, Zen 4) with full-width vectors. */
#define ETK_VARIANT avx512
#define ETK_VARIANT_NAME "avx512"
#if defined(__clang__)
#define ETK_TGT __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq")))
#else
#define ETK_TGT __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,prefer-vector-width=512")))
#endif
#define ETK_ISA 2
#include "kernels_variant.h"
#undef ETK_VARIANT
#undef ETK_VARIANT_NAME
#undef ETK_TGT
#undef ETK_ISA

/* AVX-512 with VBMI (Ice Lake, Sapphire Rapids, Zen 4): the avx512 element
 * loops; the 8-bit codecs look their tables up with byte permutes in
 * registers instead of gathers. */
#define ETK_VARIANT avx512vbmi
#define ETK_VARIANT_NAME "avx512vbmi"
#if defined(__clang__)
#define ETK_TGT __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512vbmi")))
#else
#define ETK_TGT __attribute__((target("avx512f,avx512vl,avx512bw,avx512dq,avx512vbmi,prefer-vector-width=512")))
#endif
#define ETK_ISA 3
#define ETK_LOOPS_OF avx512
#include "kernels_variant.h"
#undef ETK_LOOPS_OF
#undef ETK_VARIANT
#undef ETK_VARIANT_NAME
#undef ETK_TGT
#undef ETK_ISA
#endif
