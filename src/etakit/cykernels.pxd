# Cython declarations of etakit's kernels, for other Cython extensions.
#
#     from etakit.cykernels cimport etk_adam_hp, adam_f32
#
# Compile with include_dirs=[etakit.get_include()]; nothing to link: the
# functions are reached through this module's C-API table at import, in the
# spirit of scipy.linalg.cython_blas.  All are nogil and never raise; they
# return etakit's status codes (0 on success, see etakit.h).
from libc.stdint cimport int64_t

from etakit._etakit_h cimport etk_sgd_hp, etk_adam_hp, etk_rmsprop_hp, etk_adagrad_hp

cdef int sgd_f32(float *param, const float *grad, float *momentum_buffer, size_t n,
                 const etk_sgd_hp *hp, int first_step) noexcept nogil
cdef int sgd_f64(double *param, const double *grad, double *momentum_buffer, size_t n,
                 const etk_sgd_hp *hp, int first_step) noexcept nogil
cdef int adam_f32(float *param, const float *grad, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
                  size_t n, const etk_adam_hp *hp, int64_t step) noexcept nogil
cdef int adam_f64(double *param, const double *grad, double *exp_avg, double *exp_avg_sq,
                  double *max_exp_avg_sq, size_t n, const etk_adam_hp *hp, int64_t step) noexcept nogil
cdef int rmsprop_f32(float *param, const float *grad, float *square_avg, float *momentum_buffer,
                     float *grad_avg, size_t n, const etk_rmsprop_hp *hp) noexcept nogil
cdef int rmsprop_f64(double *param, const double *grad, double *square_avg, double *momentum_buffer,
                     double *grad_avg, size_t n, const etk_rmsprop_hp *hp) noexcept nogil
cdef int adagrad_f32(float *param, const float *grad, float *sum, size_t n, const etk_adagrad_hp *hp,
                     int64_t step) noexcept nogil
cdef int adagrad_f64(double *param, const double *grad, double *sum, size_t n, const etk_adagrad_hp *hp,
                     int64_t step) noexcept nogil
