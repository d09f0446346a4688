/*
 * rules.c -- the table of rules (rules/<name>.h in ETK_RULE_HOST mode): what each
 * rule's hyperparameters are, their ranges, its state slots, and the checks.
 * Everything that binds etakit to another language reads this table through
 * etk_rule_info_get instead of repeating it.
 */
#include <stddef.h>
#include <string.h>

#include "etk_internal.h"

/* A rule's descriptor may leave its optional trailing hooks out (they are
 * zero, as C specifies); -Wextra would otherwise ask for every one of them. */
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#define ETK_RULE_HOST
#include "rules/all.h"
#undef ETK_RULE_HOST
#if defined(__GNUC__) || defined(__clang__)
#pragma GCC diagnostic pop
#endif

#define ETK_DESC_ENTRY_(name, NAME) [ETK_RULE_##NAME] = &etk_rule_desc_##name,
static const etk_rule_desc *const etk_rules[ETK_NROWS] = {
    ETK_RULE_LIST(ETK_DESC_ENTRY_)[ETK_RULE_PROBE] = &etk_rule_desc_probe,
};
#undef ETK_DESC_ENTRY_

/* Rules whose loops read the gradient only as grad[i] * gsign, gsign a double
 * of their per-step scalars (+-1, for maximize): a step that reads the
 * gradients times m (clipping, a loss scale) runs them with gsign * m, which
 * gives the same bits as scaling each gradient first (+-m rounds to +-(T)m),
 * instead of scaling each block into a buffer. */
#define ETK_GSIGN_AT_(name, NAME) [ETK_RULE_##NAME] = offsetof(etk_##name##_coef, gsign) + 1,
size_t etk_rule_gsign_at(int rule)
{
    static const size_t at[ETK_NROWS] = {
        ETK_GSIGN_AT_(sgd, SGD) ETK_GSIGN_AT_(adam, ADAM) ETK_GSIGN_AT_(rmsprop, RMSPROP)
        ETK_GSIGN_AT_(adagrad, ADAGRAD) ETK_GSIGN_AT_(lion, LION) ETK_GSIGN_AT_(nadam, NADAM)
        ETK_GSIGN_AT_(radam, RADAM) ETK_GSIGN_AT_(adamax, ADAMAX) ETK_GSIGN_AT_(adopt, ADOPT)
        ETK_GSIGN_AT_(ademamix, ADEMAMIX) ETK_GSIGN_AT_(asgd, ASGD) ETK_GSIGN_AT_(adadelta, ADADELTA)
        ETK_GSIGN_AT_(rprop, RPROP)};
    return rule >= 0 && rule < ETK_NROWS ? at[rule] : 0;
}
#undef ETK_GSIGN_AT_

const etk_rule_desc *etk_rule_desc_get(int rule)
{
    return rule >= 0 && rule < ETK_NROWS ? etk_rules[rule] : NULL;
}

const etk_rule_info *etk_rule_info_get(int rule)
{
    return rule >= 0 && rule < ETK_NRULES ? &etk_rules[rule]->info : NULL;
}

int etk_rule_find(const char *name)
{
    int i;
    for (i = 0; name && i < ETK_NRULES; i++)
        if (strcmp(etk_rules[i]->info.name, name) == 0) return i;
    return ETK_ERULE;
}

int etk_field_ok(const etk_field_info *f, const void *hp)
{
    const char *at = (const char *)hp + f->offset;
    if (f->kind == ETK_FIELD_REAL || f->kind == ETK_FIELD_REAL_OR_NONE) {
        double v;
        memcpy(&v, at, sizeof v);
        if (f->kind == ETK_FIELD_REAL_OR_NONE && v != v) return 1; /* None */
        if (v == HUGE_VAL && f->hi == HUGE_VAL && !f->hi_open) return 1; /* a range closed at +inf */
        if (!etk_finite(v)) return 0;
        if (f->lo_open ? !(v > f->lo) : !(v >= f->lo)) return 0;
        if (f->hi_open ? !(v < f->hi) : !(v <= f->hi)) return 0;
        return 1;
    } else {
        int v;
        memcpy(&v, at, sizeof v);
        return (double)v >= f->lo && (double)v <= f->hi;
    }
}

int etk_rule_check(int rule, const void *hp, etk_error *err)
{
    const etk_rule_desc *r = etk_rule_desc_get(rule);
    etk_error local;
    size_t i;
    if (!err) err = &local;
    memset(err, 0, sizeof *err);
    err->tensor = -1, err->group = -1, err->slot = -1;
    if (!r || rule == ETK_RULE_PROBE) return err->status = ETK_ERULE;
    if (!hp) return err->status = ETK_EARG;
    for (i = 0; i < r->info.nfields; i++) {
        if (!etk_field_ok(&r->info.fields[i], hp)) {
            err->field = r->info.fields[i].name;
            err->message = r->info.fields[i].kind == ETK_FIELD_FLAG || r->info.fields[i].kind == ETK_FIELD_INT
                               ? "out of range"
                               : "not finite or out of range";
            return err->status = ETK_EHPARAM;
        }
    }
    if (r->check && r->check(hp, err) != ETK_OK) return err->status = ETK_EHPARAM;
    return ETK_OK;
}

int etk_rule_check_groups(int rule, const void *hps, size_t nhps, etk_error *err)
{
    const etk_rule_desc *r = etk_rule_desc_get(rule);
    etk_error local;
    if (!err) err = &local;
    memset(err, 0, sizeof *err);
    err->tensor = -1, err->group = -1, err->slot = -1;
    if (!r || rule == ETK_RULE_PROBE) return err->status = ETK_ERULE;
    if (nhps && !hps) return err->status = ETK_EARG;
    if (r->check_groups && nhps && r->check_groups((const unsigned char *)hps, nhps, err) != ETK_OK)
        return err->status = ETK_EHPARAM;
    return ETK_OK;
}

unsigned etk_rule_needs(int rule, const void *hp)
{
    const etk_rule_desc *r = etk_rule_desc_get(rule);
    return r && r->needs && hp ? r->needs(hp) : 0u;
}
