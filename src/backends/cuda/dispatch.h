// For src/ops/*.cpp: the CUDA case of an op's dispatch switch, one line per op.
//
//   case DeviceType::cuda: MLXCEL_CUDA_CALL(kOp, cuda::rms_norm(xc, w, eps, w_offset, out)); break;
//
// With MLXCEL_WITH_CUDA the call is compiled; without it the case throws the op's
// "has no CUDA implementation" error (ops/ops_internal.h) and the call is not compiled.
#pragma once

#include "ops/ops_internal.h"

#ifdef MLXCEL_WITH_CUDA
#include "backends/cuda/kernels.h"
#define MLXCEL_CUDA_CALL(op, ...)          \
  do {                                     \
    ::mlxcel::cuda::OpTimer op_timer_(op); \
    __VA_ARGS__;                           \
  } while (0)
#else
#define MLXCEL_CUDA_CALL(op, ...) ::mlxcel::ops::detail::no_cuda(op)
#endif
