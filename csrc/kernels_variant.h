/*
 * kernels_variant.h -- one SIMD variant: the element loops of every rule for
 * every supported (param, state) type pair, and the variant's function
 * table.  kernels.c includes it once per variant with ETK_VARIANT,
 * ETK_VARIANT_NAME and ETK_TGT defined.
 */
#define ETK_RULE_LOOPS

#define T float
#define S float
#define ETK_TYPES f32
#define ETK_SQRT sqrtf
#include "rules/all.h"
#undef T
#undef S
#undef ETK_TYPES
#undef ETK_SQRT

#define T double
#define S double
#define ETK_TYPES f64
#define ETK_SQRT sqrt
#include "rules/all.h"
#undef T
#undef S
#undef ETK_TYPES
#undef ETK_SQRT

#undef ETK_RULE_LOOPS

#define ETK_LOWP_LOOPS
#include "lowp.h"
#undef ETK_LOWP_LOOPS

/* A phase's loops by (param, state) pair: param dtype * ETK_NDTYPES + state dtype. */
#define ETK_FNS(name) {ETK_CAT(name, ETK_VARIANT, f32), 0, 0, ETK_CAT(name, ETK_VARIANT, f64)}
#define ETK_RULE_ROW
#define ETK_LOWP_ROW
const etk_kernels ETK_CAT2(etk_kernels, ETK_VARIANT) = {
    ETK_VARIANT_NAME,
    {
#include "rules/all.h"
    },
#include "lowp.h"
};
#undef ETK_LOWP_ROW
#undef ETK_RULE_ROW
#undef ETK_FNS
