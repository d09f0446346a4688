/*
 * kernels_variant.h -- one SIMD variant: the element loops of every rule for
 * every supported (param, state) type pair, and the variant's function
 * table.  kernels.c includes it once per variant with ETK_VARIANT,
 * ETK_VARIANT_NAME and ETK_TGT defined (and ETK_LOOPS_OF, to reuse another
 * variant's element loops).
 */
#ifndef ETK_LOOPS_OF
#define ETK_OWN_LOOPS
#define ETK_LOOPS_OF ETK_VARIANT
#endif

#ifdef ETK_OWN_LOOPS
#define ETK_RULE_LOOPS

#define T float
#define S float
#define ETK_TYPES f32
#define ETK_SQRT sqrtf
#include "rules/all.h"
#undef ETK_RULE_LOOPS
#define ETK_PASS_LOOPS
#include "passes.h"
#undef ETK_PASS_LOOPS
#define ETK_RULE_LOOPS
#undef T
#undef S
#undef ETK_TYPES
#undef ETK_SQRT

#define T double
#define S double
#define ETK_TYPES f64
#define ETK_SQRT sqrt
#include "rules/all.h"
#undef ETK_RULE_LOOPS
#define ETK_PASS_LOOPS
#include "passes.h"
#undef ETK_PASS_LOOPS
#define ETK_RULE_LOOPS
#undef T
#undef S
#undef ETK_TYPES
#undef ETK_SQRT

#undef ETK_RULE_LOOPS
#endif

#define ETK_LOWP_LOOPS
#include "lowp.h"
#undef ETK_LOWP_LOOPS

#ifdef ETK_OWN_LOOPS

/* Fused bfloat16 loops (state rounded to nearest): the float32 loop of a rule
 * with its state read and written as bfloat16 in the same pass.  The loop
 * computes in float32 exactly as on decoded state and rounds what it stores
 * (etk_bf16_rne1), so the results are those of decode, float32 loop, encode;
 * only for rules whose loop reads each state element before writing it and
 * never reads it back (checked by reading them, tested bit for bit). */
#undef LD
#undef ST
#define LD(x) etk_float_of((uint32_t)(x) << 16)
#define ST(x) etk_bf16_rne1(x)
#define T float
#define S uint16_t
#define ETK_TYPES bf16
#define ETK_SQRT sqrtf
#define ETK_RULE_LOOPS
#include "rules/sgd.h"
#include "rules/adam.h"
#include "rules/rmsprop.h"
#include "rules/adagrad.h"
#include "rules/lion.h"
#undef ETK_RULE_LOOPS
#undef T
#undef S
#undef ETK_TYPES
#undef ETK_SQRT
#undef LD
#undef ST
#define LD(x) ((T)(x))
#define ST(x) ((S)(x))
#endif

/* A phase's loops by (param, state) pair: param dtype * ETK_NDTYPES + state dtype. */
#define ETK_FNS(name) {ETK_CAT(name, ETK_LOOPS_OF, f32), 0, 0, ETK_CAT(name, ETK_LOOPS_OF, f64)}
#define ETK_RULE_ROW
#define ETK_LOWP_ROW
const etk_kernels ETK_CAT2(etk_kernels, ETK_VARIANT) = {
    ETK_VARIANT_NAME,
    {
#include "rules/all.h"
    },
#include "lowp.h"
    {
        [ETK_RULE_SGD] = ETK_CAT(sgd_p0, ETK_LOOPS_OF, bf16),
        [ETK_RULE_ADAM] = ETK_CAT(adam_p0, ETK_LOOPS_OF, bf16),
        [ETK_RULE_RMSPROP] = ETK_CAT(rmsprop_p0, ETK_LOOPS_OF, bf16),
        [ETK_RULE_ADAGRAD] = ETK_CAT(adagrad_p0, ETK_LOOPS_OF, bf16),
        [ETK_RULE_LION] = ETK_CAT(lion_p0, ETK_LOOPS_OF, bf16),
    },
#define ETK_PASS_ROW
#include "passes.h"
#undef ETK_PASS_ROW
};
#undef ETK_LOWP_ROW
#undef ETK_RULE_ROW
#undef ETK_FNS
#ifdef ETK_OWN_LOOPS
#undef ETK_OWN_LOOPS
#undef ETK_LOOPS_OF
#endif
