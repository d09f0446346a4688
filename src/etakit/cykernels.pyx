# cython: language_level=3
"""etakit's kernels as Cython functions that other extensions ``cimport``.

The declarations live in ``cykernels.pxd`` (generated from ``etakit.h``):
one struct per rule (``etk_adam_hp``) and typed kernels (``adam_f32``,
``adam_f64``, ...).  They are inline calls through ``etakit._core``'s C-API
table, so this module compiles no C of its own: every extension in the
process runs the one engine of ``etakit._core``.  From Python this module
only reports that engine's state, for checking.
"""


def rule_ids():
    """{rule name: id} as the cimported ``ETK_RULE_*`` constants see them.

    Returns
    -------
    dict of str to int
        The ids of the rule table of the engine this module reaches (etakit._core's).

    Examples
    --------
    >>> from etakit import cykernels
    >>> cykernels.rule_ids()["adam"]
    1
    """
    cdef int r
    out = {}
    r = 0
    while c_rule_info(r) is not NULL:
        out[c_rule_info(r).name.decode()] = r
        r += 1
    return out
