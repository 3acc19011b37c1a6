// Probes of the fa3 kernel's building blocks, one at a time, without torch: when the kernel's
// tests fail, this says which piece is wrong. For each head dim and its key tile:
//   tma  -- Q and K tiles copied by TMA (launch.cuh encode_map), read back through TileRows::offset
//           (the layout the cp.async path and the epilogue use): must equal the inputs exactly;
//   qk   -- S = Q[0:64] K^T by one warpgroup with WgmmaSS on the K-major descriptors, written out
//           through the accumulator layout: against a float64 product;
//   pv   -- O = P V with P (64 x kN) in A-fragment registers and V by WgmmaRS on the MN-major
//           descriptor: against a float64 product.
//
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Icsrc/include -Icsrc/kernels \
//        benchmarks/fa3_probe.cu -o /tmp/fa3_probe && /tmp/fa3_probe
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "fa3/launch.cuh"

using namespace torch_flashinfer;
using namespace torch_flashinfer::fa3;

#define CHECK(x)                                                                           \
  do {                                                                                     \
    cudaError_t e = (x);                                                                   \
    if (e != cudaSuccess) {                                                                \
      std::printf("%s:%d %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e));        \
      std::exit(2);                                                                        \
    }                                                                                      \
  } while (0)

template <int kD, int kN>
__global__ void __launch_bounds__(128) probe_kernel(const __grid_constant__ TmaMaps maps, const __half* p,
                                                    __half* q_back, __half* k_back, float* s_out, float* o_out) {
#if TFI_SM90_ENABLED
  using QRows = TileRows<kD, 128>;
  using KvRows = TileRows<kD, kN>;
  extern __shared__ __align__(16) unsigned char raw[];
  unsigned char* smem = raw + ((1024 - (smem_addr(raw) & 1023)) & 1023);
  __half* sQ = reinterpret_cast<__half*>(smem);
  __half* sK = sQ + 128 * kD;
  __half* sV = sK + kN * kD;
  const uint32_t bar = smem_addr(sV + kN * kD);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, g = lane / 4, t4 = lane % 4;
  if (tid == 0) {
    sm90::mbarrier_init(bar, 1);
    sm90::mbarrier_init_fence();
  }
  __syncthreads();
  if (tid == 0) {
    sm90::mbarrier_arrive_expect_tx(bar, (128 + 2 * kN) * kD * 2);
    for (int cb = 0; cb < QRows::kColBlocks; ++cb) {
      sm90::tma_load_4d(smem_addr(sQ) + cb * QRows::kBlockBytes, &maps.q, bar, cb * QRows::kBlockCols, 0, 0, 0);
      sm90::tma_load_4d(smem_addr(sK) + cb * KvRows::kBlockBytes, &maps.k, bar, cb * KvRows::kBlockCols, 0, 0, 0);
      sm90::tma_load_4d(smem_addr(sV) + cb * KvRows::kBlockBytes, &maps.v, bar, cb * KvRows::kBlockCols, 0, 0, 0);
    }
  }
  sm90::mbarrier_wait(bar, 0);

  for (int i = tid; i < 128 * kD; i += 128) q_back[i] = sQ[QRows::offset(i / kD, i % kD / 8) + i % 8];
  for (int i = tid; i < kN * kD; i += 128) k_back[i] = sK[KvRows::offset(i / kD, i % kD / 8) + i % 8];

  float s[kN / 2];
  sm90::wgmma_fence();
  for (int ks = 0; ks < kD / 16; ++ks) {
    WgmmaSS<__half, kN>::run(s, QRows::k_major(smem_addr(sQ), 0, ks), KvRows::k_major(smem_addr(sK), 0, ks), ks > 0);
  }
  sm90::wgmma_commit();
  sm90::wgmma_wait<0>();
  sm90::fence_registers(s);
  for (int i = 0; i < kN / 2; ++i) {
    const int row = warp * 16 + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + 2 * t4 + i % 2;
    s_out[row * kN + col] = s[i];
  }

  uint32_t a[kN / 16][4];
  auto pair = [&](int row, int col) {
    __half2 h = __halves2half2(p[row * kN + col], p[row * kN + col + 1]);
    return *reinterpret_cast<uint32_t*>(&h);
  };
  for (int ks = 0; ks < kN / 16; ++ks) {
    const int r = warp * 16 + g, c = ks * 16 + 2 * t4;
    a[ks][0] = pair(r, c);
    a[ks][1] = pair(r + 8, c);
    a[ks][2] = pair(r, c + 8);
    a[ks][3] = pair(r + 8, c + 8);
  }
  float o[kD / 2];
  for (int i = 0; i < kD / 2; ++i) o[i] = 0.f;
  sm90::fence_registers(o);
  sm90::wgmma_fence();
  for (int ks = 0; ks < kN / 16; ++ks) WgmmaRS<__half, kD>::run(o, a[ks], KvRows::mn_major(smem_addr(sV), ks), 1);
  sm90::wgmma_commit();
  sm90::wgmma_wait<0>();
  sm90::fence_registers(o);
  for (int i = 0; i < kD / 2; ++i) {
    const int row = warp * 16 + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + 2 * t4 + i % 2;
    o_out[row * kD + col] = o[i];
  }
#endif
}

template <int kD>
bool probe() {
  constexpr int kN = block_n_for(kD);
  std::mt19937 rng(kD);
  std::normal_distribution<float> normal;
  auto random_halves = [&](size_t n) {
    std::vector<__half> x(n);
    for (auto& e : x) e = __float2half(normal(rng));
    return x;
  };
  const auto q = random_halves(128 * kD), k = random_halves(kN * kD), v = random_halves(kN * kD),
             p = random_halves(64 * kN);
  auto upload = [](const std::vector<__half>& x) {
    __half* d = nullptr;
    CHECK(cudaMalloc(&d, x.size() * 2));
    CHECK(cudaMemcpy(d, x.data(), x.size() * 2, cudaMemcpyHostToDevice));
    return d;
  };
  __half *dq = upload(q), *dk = upload(k), *dv = upload(v), *dp = upload(p), *q_back, *k_back;
  float *s_out, *o_out;
  CHECK(cudaMalloc(&q_back, q.size() * 2));
  CHECK(cudaMalloc(&k_back, k.size() * 2));
  CHECK(cudaMalloc(&s_out, 64 * kN * 4));
  CHECK(cudaMalloc(&o_out, 64 * kD * 4));

  TmaMaps maps;
  const char* err = encode_map<__half, kD>(&maps.q, dq, 128, 1, 1, kD, kD, kD, 128);
  if (!err) err = encode_map<__half, kD>(&maps.k, dk, kN, 1, 1, kD, kD, kD, kN);
  if (!err) err = encode_map<__half, kD>(&maps.v, dv, kN, 1, 1, kD, kD, kD, kN);
  if (err) {
    std::printf("d=%d: %s\n", kD, err);
    return false;
  }
  const int smem = 1024 + (128 + 2 * kN) * kD * 2 + 8;
  CHECK(cudaFuncSetAttribute(probe_kernel<kD, kN>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  probe_kernel<kD, kN><<<1, 128, smem>>>(maps, dp, q_back, k_back, s_out, o_out);
  CHECK(cudaGetLastError());
  CHECK(cudaDeviceSynchronize());

  std::vector<__half> qb(q.size()), kb(k.size());
  std::vector<float> s(64 * kN), o(64 * kD);
  CHECK(cudaMemcpy(qb.data(), q_back, qb.size() * 2, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(kb.data(), k_back, kb.size() * 2, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(s.data(), s_out, s.size() * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(o.data(), o_out, o.size() * 4, cudaMemcpyDeviceToHost));

  auto f = [](__half x) { return double(__half2float(x)); };
  int tma_bad = 0;
  for (size_t i = 0; i < q.size(); ++i) tma_bad += f(qb[i]) != f(q[i]);
  for (size_t i = 0; i < k.size(); ++i) tma_bad += f(kb[i]) != f(k[i]);
  double s_err = 0, s_ref_max = 0, o_err = 0, o_ref_max = 0;
  int s_first = -1, o_first = -1;
  for (int r = 0; r < 64; ++r) {
    for (int c = 0; c < kN; ++c) {
      double ref = 0;
      for (int d = 0; d < kD; ++d) ref += f(q[r * kD + d]) * f(k[c * kD + d]);
      const double e = std::fabs(ref - s[r * kN + c]);
      if (e > 1e-2 * std::sqrt(double(kD)) && s_first < 0) s_first = r * kN + c;
      s_err = std::fmax(s_err, e);
      s_ref_max = std::fmax(s_ref_max, std::fabs(ref));
    }
    for (int c = 0; c < kD; ++c) {
      double ref = 0;
      for (int j = 0; j < kN; ++j) ref += f(p[r * kN + j]) * f(v[j * kD + c]);
      const double e = std::fabs(ref - o[r * kD + c]);
      if (e > 1e-2 * std::sqrt(double(kN)) && o_first < 0) o_first = r * kD + c;
      o_err = std::fmax(o_err, e);
      o_ref_max = std::fmax(o_ref_max, std::fabs(ref));
    }
  }
  const bool ok = tma_bad == 0 && s_first < 0 && o_first < 0;
  std::printf("d=%3d kN=%3d  tma: %d wrong elements  qk: max err %.3g (|ref| %.3g)%s  pv: max err %.3g (|ref| %.3g)%s"
              "  %s\n",
              kD, kN, tma_bad, s_err, s_ref_max, s_first < 0 ? "" : " FIRST BAD (row, col) below", o_err, o_ref_max,
              o_first < 0 ? "" : " FIRST BAD below", ok ? "PASS" : "FAIL");
  if (s_first >= 0) std::printf("    qk first bad: row %d col %d\n", s_first / kN, s_first % kN);
  if (o_first >= 0) std::printf("    pv first bad: row %d col %d\n", o_first / kD, o_first % kD);
  for (void* ptr : {(void*)dq, (void*)dk, (void*)dv, (void*)dp, (void*)q_back, (void*)k_back, (void*)s_out,
                    (void*)o_out}) {
    CHECK(cudaFree(ptr));
  }
  return ok;
}

int main() {
  bool ok = true;
  ok &= probe<32>();
  ok &= probe<64>();
  ok &= probe<96>();
  ok &= probe<128>();
  ok &= probe<160>();
  ok &= probe<192>();
  ok &= probe<224>();
  ok &= probe<256>();
  std::printf("%s\n", ok ? "all probes PASS" : "some probes FAIL");
  return ok ? 0 : 1;
}
