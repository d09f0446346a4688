/*
 * kernels_variant.h -- one SIMD variant: the element loops of
 * kernels_body.h for every supported (param, state) type pair, and the
 * variant's function table.  kernels.c includes it once per variant with
 * ETK_VARIANT, ETK_VARIANT_NAME and ETK_TGT defined.
 */
#define T float
#define S float
#define ETK_TYPES f32
#define ETK_SQRT sqrtf
#include "kernels_body.h"
#undef T
#undef S
#undef ETK_TYPES
#undef ETK_SQRT

#define T double
#define S double
#define ETK_TYPES f64
#define ETK_SQRT sqrt
#include "kernels_body.h"
#undef T
#undef S
#undef ETK_TYPES
#undef ETK_SQRT

/* Rows: rules; columns: param dtype * ETK_NDTYPES + state dtype. */
#define ETK_ROW(rule) {ETK_CAT(rule, ETK_VARIANT, f32), 0, 0, ETK_CAT(rule, ETK_VARIANT, f64)}
const etk_kernels ETK_CAT2(etk_kernels, ETK_VARIANT) = {
    ETK_VARIANT_NAME,
    {ETK_ROW(sgd), ETK_ROW(adam), ETK_ROW(rmsprop), ETK_ROW(adagrad), ETK_ROW(probe)},
};
#undef ETK_ROW
