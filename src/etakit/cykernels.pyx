# cython: language_level=3
"""The kernels as Cython functions that other extensions can ``cimport``.

Each is a direct call of the C function of the same name in etakit.h; see
cykernels.pxd.  This module links the same C sources as ``etakit._core``.
"""
from libc.stdint cimport int64_t

from etakit._etakit_h cimport (etk_sgd_f32, etk_sgd_f64, etk_adam_f32, etk_adam_f64, etk_rmsprop_f32,
                              etk_rmsprop_f64, etk_adagrad_f32, etk_adagrad_f64)


cdef int sgd_f32(float *param, const float *grad, float *momentum_buffer, size_t n,
                 const etk_sgd_hp *hp, int first_step) noexcept nogil:
    return etk_sgd_f32(param, grad, momentum_buffer, n, hp, first_step)

cdef int sgd_f64(double *param, const double *grad, double *momentum_buffer, size_t n,
                 const etk_sgd_hp *hp, int first_step) noexcept nogil:
    return etk_sgd_f64(param, grad, momentum_buffer, n, hp, first_step)

cdef int adam_f32(float *param, const float *grad, float *exp_avg, float *exp_avg_sq, float *max_exp_avg_sq,
                  size_t n, const etk_adam_hp *hp, int64_t step) noexcept nogil:
    return etk_adam_f32(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp, step)

cdef int adam_f64(double *param, const double *grad, double *exp_avg, double *exp_avg_sq,
                  double *max_exp_avg_sq, size_t n, const etk_adam_hp *hp, int64_t step) noexcept nogil:
    return etk_adam_f64(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, n, hp, step)

cdef int rmsprop_f32(float *param, const float *grad, float *square_avg, float *momentum_buffer,
                     float *grad_avg, size_t n, const etk_rmsprop_hp *hp) noexcept nogil:
    return etk_rmsprop_f32(param, grad, square_avg, momentum_buffer, grad_avg, n, hp)

cdef int rmsprop_f64(double *param, const double *grad, double *square_avg, double *momentum_buffer,
                     double *grad_avg, size_t n, const etk_rmsprop_hp *hp) noexcept nogil:
    return etk_rmsprop_f64(param, grad, square_avg, momentum_buffer, grad_avg, n, hp)

cdef int adagrad_f32(float *param, const float *grad, float *sum, size_t n, const etk_adagrad_hp *hp,
                     int64_t step) noexcept nogil:
    return etk_adagrad_f32(param, grad, sum, n, hp, step)

cdef int adagrad_f64(double *param, const double *grad, double *sum, size_t n, const etk_adagrad_hp *hp,
                     int64_t step) noexcept nogil:
    return etk_adagrad_f64(param, grad, sum, n, hp, step)
