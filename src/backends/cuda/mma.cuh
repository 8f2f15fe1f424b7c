// PTX wrappers for the tensor-core kernels of backends/cuda (internal): cp.async,
// ldmatrix and mma.sync.m16n8k16 with f32 accumulation (sm_80 and later).
//
// Fragment layout of m16n8k16 (lane = 4 * g + c, g = lane / 4, c = lane % 4):
//   A (16 x 16, row): a0 = (g, 2c..2c+1), a1 = (g+8, 2c..), a2 = (g, 2c+8..), a3 = (g+8, 2c+8..)
//   B (16 x 8, col):  b0 = (k 2c..2c+1, n g), b1 = (k 2c+8.., n g)
//   C (16 x 8):       c0,c1 = (g, 2c..2c+1), c2,c3 = (g+8, 2c..2c+1)
#pragma once

#include <type_traits>

#include "backends/cuda/common.cuh"

namespace mlxcel::cuda {

__device__ __forceinline__ unsigned smem_u32(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// bf16 pair (128 + lo nibble, 128 + hi nibble) of word w at shift 4 j: values j and j + 4.
// One LOP3 ((a & b) | c) after the shift: ptxas splits the C form into two.
__device__ __forceinline__ unsigned nib_pair(uint32_t w, int j) {
  unsigned r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;\n" : "=r"(r) : "r"(w >> (4 * j)), "n"(0x000F000F), "n"(0x43004300));
  return r;
}

// 4 bytes global -> shared (L1-cached); zero-filled when !valid (src must still be valid).
__device__ __forceinline__ void cp_async4(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(valid ? 4 : 0));
}
// 16 bytes global -> shared; zero-filled when !valid (src must still be a valid address).
__device__ __forceinline__ void cp_async16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
__device__ __forceinline__ void ldsm_x4_t(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_u32(p)));
}
template <typename T>
__device__ __forceinline__ void mma(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  if constexpr (std::is_same_v<T, bf16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}
// 16 registers from 64 bytes (16-byte aligned; shared or global memory), or zeros when
// !valid: an MMA's B fragments of a lane.
__device__ __forceinline__ void load_regs16(unsigned (&r)[16], const void* p, bool valid) {
  if (valid) {
    const uint4* q = static_cast<const uint4*>(p);
#pragma unroll
    for (int v = 0; v < 4; ++v) {
      const uint4 u = q[v];
      r[4 * v] = u.x, r[4 * v + 1] = u.y, r[4 * v + 2] = u.z, r[4 * v + 3] = u.w;
    }
  } else {
#pragma unroll
    for (int v = 0; v < 16; ++v) r[v] = 0u;
  }
}

// Two floats as one 32-bit register of two T (lo = the lower column).
template <typename T>
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
  if constexpr (std::is_same_v<T, bf16>) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&v);
  } else {
    const __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<const unsigned*>(&v);
  }
}

}  // namespace mlxcel::cuda
