// DL_HD marks the small helpers in csrc/common/ that the CPU kernels and the CUDA
// kernels both call: host and device functions under nvcc, plain inline functions
// under the host compiler.  Because the CPU kernels run them, the CPU tests check the
// index arithmetic the CUDA kernels rely on.
#pragma once

#if !defined(DL_HD)
#if defined(__CUDACC__)
#define DL_HD __host__ __device__ __forceinline__
#else
#define DL_HD inline
#endif
#endif
