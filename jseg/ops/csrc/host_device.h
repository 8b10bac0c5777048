// JSEG_HD: a function compiled for both the host and the GPU.
//
// Under nvcc it is __host__ __device__ __forceinline__; under a host compiler (g++, which
// compiles the cpu_src of Jittor's jt.code operators) it is plain `inline`, so the same
// per-element arithmetic runs in the CUDA kernels and in their CPU twins.
#ifndef JSEG_HOST_DEVICE_H
#define JSEG_HOST_DEVICE_H

#ifdef __CUDACC__
#define JSEG_HD __host__ __device__ __forceinline__
#else
#define JSEG_HD inline
#endif

#endif  // JSEG_HOST_DEVICE_H
