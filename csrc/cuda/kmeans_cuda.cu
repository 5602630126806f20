// CUDA launchers of batched k-means. Torch-free: nvcc compiles only device code and these thin
// entry points; the TORCH_LIBRARY_IMPL(CUDA) side is kmeans_cuda.cpp.
#include "cuda/launchers.h"
#include "kernels/kmeans.cuh"

namespace tlk::cuda {

namespace {
auto stream_launch(cudaStream_t stream) {
  return [stream](const tlk::LaunchPlan& plan, auto kernel, auto... args) {
    kernel<<<plan.grid, plan.block, plan.shared_bytes, stream>>>(args...);
  };
}
}  // namespace

int64_t kmeans_update_ranges(int64_t N, int64_t P, int64_t K, int64_t D) {
  return kernels::kmeans_update_ranges(N, P, K, D);
}

template <typename T>
cudaError_t kmeans_assign(const T* X, const T* Cs, const T* b, const T* C, const T* band_base, const T* band_slope,
                          int64_t* labels, T* dist2, int64_t P, int64_t N, int64_t K, int64_t D, int64_t M,
                          bool c_shared, cudaStream_t stream) {
  kernels::kmeans_assign<T>(stream_launch(stream), X, Cs, b, C, band_base, band_slope, labels, dist2, P, N, K, D, M,
                            c_shared);
  return cudaGetLastError();
}

template <typename T>
cudaError_t kmeans_scores(const T* G, int64_t ldg, const T* X, const T* V, const T* b, const T* C,
                          const T* band_base, const T* band_slope, int64_t* labels, T* dist2, int64_t p0, int64_t np,
                          int64_t n0, int64_t rows, int64_t N, int64_t K, int64_t D, int64_t M, bool c_shared,
                          cudaStream_t stream) {
  kernels::kmeans_scores<T>(stream_launch(stream), G, ldg, X, V, b, C, band_base, band_slope, labels, dist2, p0, np,
                            n0, rows, N, K, D, M, c_shared);
  return cudaGetLastError();
}

template <typename T>
cudaError_t kmeans_update(const T* X, const int64_t* L, const T* W, double* part, T* sums, T* counts, int64_t P,
                          int64_t N, int64_t K, int64_t D, int64_t R, int64_t M, int64_t MW, cudaStream_t stream) {
  kernels::kmeans_update<T>(stream_launch(stream), X, L, W, part, sums, counts, P, N, K, D, R, M, MW);
  return cudaGetLastError();
}

#define TLK_KMEANS_INSTANTIATE(T)                                                                                \
  template cudaError_t kmeans_assign<T>(const T*, const T*, const T*, const T*, const T*, const T*, int64_t*, T*, \
                                        int64_t, int64_t, int64_t, int64_t, int64_t, bool, cudaStream_t);        \
  template cudaError_t kmeans_scores<T>(const T*, int64_t, const T*, const T*, const T*, const T*, const T*,         \
                                        const T*, int64_t*, T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, \
                                        int64_t, int64_t, bool, cudaStream_t);                                   \
  template cudaError_t kmeans_update<T>(const T*, const int64_t*, const T*, double*, T*, T*, int64_t, int64_t,  \
                                        int64_t, int64_t, int64_t, int64_t, int64_t, cudaStream_t);
TLK_KMEANS_INSTANTIATE(float)
TLK_KMEANS_INSTANTIATE(double)
#undef TLK_KMEANS_INSTANTIATE

}  // namespace tlk::cuda
