# C-level entry points of etakit's one compiled engine, exported to other
# extensions through this module's C-API table (as scipy.linalg.cython_blas
# hands out pointers into one BLAS).  etakit/cykernels.pxd builds its typed
# kernels on these, so every extension in the process shares one engine: one
# SIMD choice, one thread setting, one flush-to-zero setting.
from libc.stdint cimport int64_t

from etakit._etakit_h cimport etk_tensor, etk_step_opts, etk_error, etk_rule_info

cdef int c_step(int rule, const etk_tensor *tensors, size_t count, const void *hps, size_t nhps,
                const etk_step_opts *opts, etk_error *err) noexcept nogil
cdef int c_step_single(int rule, int dtype, void *param, const void *grad, void *const *state, size_t n,
                       const void *hp, int64_t step) noexcept nogil
cdef int c_probe(const etk_tensor *tensors, size_t count) noexcept nogil
cdef const etk_rule_info *c_rule_info(int rule) noexcept nogil
cdef int c_rule_find(const char *name) noexcept nogil
cdef const char *c_strerror(int status) noexcept nogil
