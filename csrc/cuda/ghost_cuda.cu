// CUDA launchers of the per-sample gradient products. Torch-free: nvcc compiles only device
// code and these thin entry points; the TORCH_LIBRARY_IMPL(CUDA) side is ghost_cuda.cpp.
#include "cuda/launchers.h"
#include "kernels/ghost.cuh"

namespace tlk::cuda {

namespace {
auto stream_launch(cudaStream_t stream) {
  return [stream](const tlk::LaunchPlan& plan, auto kernel, auto... args) {
    kernel<<<plan.grid, plan.block, plan.shared_bytes, stream>>>(args...);
  };
}
}  // namespace

int ghost_dot_splits(int64_t rows, int64_t O, int64_t V) { return kernels::ghost_dot_splits(rows, O, V); }

template <typename T>
cudaError_t ghost_dot(const T* A, const T* D, const T* G, T* part, T* out, int64_t B, int64_t Tn, int64_t I,
                      int64_t O, int64_t V, cudaStream_t stream) {
  kernels::ghost_dot<T>(stream_launch(stream), A, D, G, part, out, B, Tn, I, O, V);
  return cudaGetLastError();
}

template <typename T>
cudaError_t ghost_gram(const T* A1, const T* D1, const T* A2, const T* D2, T* out, int64_t B1, int64_t T1,
                       int64_t B2, int64_t T2, int64_t I, int64_t O, cudaStream_t stream) {
  kernels::ghost_gram<T>(stream_launch(stream), A1, D1, A2, D2, out, B1, T1, B2, T2, I, O);
  return cudaGetLastError();
}

template <typename T>
cudaError_t ghost_norm_tiles(const T* A, const T* D, T* out, int64_t B, int64_t Tn, int64_t I, int64_t O,
                             cudaStream_t stream) {
  kernels::ghost_norm_tiles<T>(stream_launch(stream), A, D, out, B, Tn, I, O);
  return cudaGetLastError();
}

template <typename T>
cudaError_t clip_update(T* alpha, int64_t stride, const int64_t* sorted, const int64_t* order, const T* s,
                        int64_t B, T lr, cudaStream_t stream) {
  kernels::clip_update<T>(stream_launch(stream), alpha, stride, sorted, order, s, B, lr);
  return cudaGetLastError();
}

template <typename T>
cudaError_t ghost_segdot(const T* X, const T* Y, T* out, int64_t P, int64_t L, int64_t V, int64_t out_stride,
                         cudaStream_t stream) {
  kernels::ghost_segdot<T>(stream_launch(stream), X, Y, out, P, L, V, out_stride);
  return cudaGetLastError();
}

template <typename T>
cudaError_t ghost_pair_reduce(const T* DD, const T* AA, T* out, int64_t nr, int64_t nc, int64_t r0, int64_t c0,
                              int64_t T1, int64_t T2, int64_t B2, cudaStream_t stream) {
  kernels::ghost_pair_reduce<T>(stream_launch(stream), DD, AA, out, nr, nc, r0, c0, T1, T2, B2);
  return cudaGetLastError();
}

template <typename T>
cudaError_t ghost_dot_finish(const T* rd, T* out, int64_t B, int64_t Tn, int64_t V, cudaStream_t stream) {
  kernels::ghost_dot_finish<T>(stream_launch(stream), rd, out, B, Tn, V);
  return cudaGetLastError();
}

#define TLK_GHOST_INSTANTIATE(T)                                                                              \
  template cudaError_t ghost_dot<T>(const T*, const T*, const T*, T*, T*, int64_t, int64_t, int64_t, int64_t, \
                                    int64_t, cudaStream_t);                                                   \
  template cudaError_t ghost_gram<T>(const T*, const T*, const T*, const T*, T*, int64_t, int64_t, int64_t,   \
                                     int64_t, int64_t, int64_t, cudaStream_t);                                \
  template cudaError_t ghost_norm_tiles<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t,        \
                                           cudaStream_t);                                                     \
  template cudaError_t clip_update<T>(T*, int64_t, const int64_t*, const int64_t*, const T*, int64_t, T,      \
                                      cudaStream_t);                                                          \
  template cudaError_t ghost_segdot<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, cudaStream_t); \
  template cudaError_t ghost_pair_reduce<T>(const T*, const T*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                            int64_t, int64_t, cudaStream_t);                                   \
  template cudaError_t ghost_dot_finish<T>(const T*, T*, int64_t, int64_t, int64_t, cudaStream_t);
TLK_GHOST_INSTANTIATE(float)
TLK_GHOST_INSTANTIATE(double)
#undef TLK_GHOST_INSTANTIATE

}  // namespace tlk::cuda
