/*
 * config.c -- run-time configuration of the kernels, apart from the rules and
 * the engine: which SIMD variant runs (chosen from the CPU at first use, or
 * from ETAKIT_SIMD), how many threads a call uses, and flush-to-zero.
 * Everything else calls in here; this file calls nothing else.
 */
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "etk_internal.h"

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define ETK_HAS_FTZ 1
#define ETK_FTZ_DAZ 0x8040u /* MXCSR flush-to-zero (bit 15) and denormals-are-zero (bit 6) */
#else
#define ETK_HAS_FTZ 0
#endif

/* ------------------------------------------------------- SIMD dispatch */

static const etk_kernels *etk_active;

static int etk_supported(const etk_kernels *k)
{
#if ETK_X86_DISPATCH
    __builtin_cpu_init();
    if (k == &etk_kernels_avx512vbmi) return etk_supported(&etk_kernels_avx512) && __builtin_cpu_supports("avx512vbmi");
    if (k == &etk_kernels_avx512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
    if (k == &etk_kernels_avx2) return __builtin_cpu_supports("avx2");
#endif
    return k == &etk_kernels_baseline;
}

/* Best first. */
static const etk_kernels *const etk_all[] = {
#if ETK_X86_DISPATCH
    &etk_kernels_avx512vbmi,
    &etk_kernels_avx512,
    &etk_kernels_avx2,
#endif
    &etk_kernels_baseline,
};
#define ETK_NVARIANTS (sizeof(etk_all) / sizeof(etk_all[0]))

static const etk_kernels *etk_find(const char *name)
{
    size_t i;
    for (i = 0; i < ETK_NVARIANTS; i++)
        if (name && strcmp(etk_all[i]->name, name) == 0 && etk_supported(etk_all[i])) return etk_all[i];
    return NULL;
}

const etk_kernels *etk_kernels_now(void)
{
    if (!etk_active) {
        const etk_kernels *k = etk_find(getenv("ETAKIT_SIMD"));
        size_t i;
        for (i = 0; !k && i < ETK_NVARIANTS; i++)
            if (etk_supported(etk_all[i])) k = etk_all[i];
        etk_active = k;
    }
    return etk_active;
}

const char *etk_simd_variant(void) { return etk_kernels_now()->name; }

int etk_set_simd_variant(const char *name)
{
    const etk_kernels *k = etk_find(name);
    if (!k) return ETK_EARG;
    etk_active = k;
    return ETK_OK;
}

const char *etk_simd_available(void)
{
    static char buf[64];
    size_t i;
    if (!buf[0]) {
        char tmp[64] = "";
        for (i = 0; i < ETK_NVARIANTS; i++) {
            if (!etk_supported(etk_all[i])) continue;
            if (tmp[0]) strcat(tmp, " ");
            strcat(tmp, etk_all[i]->name);
        }
        memcpy(buf, tmp, sizeof buf);
    }
    return buf;
}

/* ------------------------------------------------------------- threads */

/* Below this many elements in one call, a fork/join costs more than a
 * second core gives back.  benchmarks/threshold.py on a 2-core AVX-512
 * machine: 2 threads break even near 8192 elements and win by 1.1-1.5x at
 * 16384 for every rule. */
#define ETK_PARALLEL_MIN_DEFAULT ((size_t)1 << 14)
static size_t etk_par_min = ETK_PARALLEL_MIN_DEFAULT;

int etk_has_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int etk_get_num_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void etk_set_num_threads(int n)
{
#ifdef _OPENMP
    if (n >= 1) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

size_t etk_parallel_min(void) { return etk_par_min; }
void etk_set_parallel_min(size_t n) { etk_par_min = n ? n : ETK_PARALLEL_MIN_DEFAULT; }

int etk_threads_for(size_t total)
{
#ifdef _OPENMP
    int nth = 1;
    if (total >= etk_par_min) {
        size_t min_share = etk_par_min / 2 ? etk_par_min / 2 : 1; /* per thread */
        nth = omp_get_max_threads();
        if ((size_t)nth > total / min_share) nth = (int)(total / min_share);
    }
    return nth < 1 ? 1 : nth;
#else
    (void)total;
    return 1;
#endif
}

/* ------------------------------------------------------ flush-to-zero */

static int etk_flush;

int etk_set_flush_denormal(int on)
{
    etk_flush = ETK_HAS_FTZ && on;
    return ETK_HAS_FTZ;
}

int etk_get_flush_denormal(void) { return etk_flush; }

/* ETK_FTZ_UNTOUCHED: nothing to restore (MXCSR's reserved high bits are never set) */
#define ETK_FTZ_UNTOUCHED 0xFFFFFFFFu

unsigned etk_ftz_begin(void)
{
#if ETK_HAS_FTZ
    unsigned csr;
    if (!etk_flush) return ETK_FTZ_UNTOUCHED;
    csr = _mm_getcsr();
    _mm_setcsr(csr | ETK_FTZ_DAZ);
    return csr;
#else
    return ETK_FTZ_UNTOUCHED;
#endif
}

void etk_ftz_end(unsigned saved)
{
#if ETK_HAS_FTZ
    if (saved != ETK_FTZ_UNTOUCHED) _mm_setcsr(saved);
#else
    (void)saved;
#endif
}
