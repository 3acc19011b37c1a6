// The one file that includes torch: the CUDA implementation of the flashinfer ops.
//
// A call's metadata (dtypes, devices, shapes, which optional tensors are present, scalar
// options) decides everything but the data: whether the call is valid, which kernel library runs
// it, its sequence lengths and scale. That decision is made in Python -- torch_flashinfer/
// _kernels.py plan_fwd / plan_append_kv, which run the validation shared with the fake and CPU
// implementations -- once per distinct signature, and cached here. A repeated signature goes
// straight from the dispatcher to the params struct and the kernel on the current stream of the
// tensors' device: no Python on the hot path (an eager decode call is host-bound otherwise).
// ops.fwd, which the typed wrappers call, skips the dispatcher too where it can (fwd_cached).
// With TORCH_FLASHINFER_CHECK_DATA=1 every call goes through Python (its checks read values).
#include <ATen/cuda/EmptyTensor.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/extension.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "torch_flashinfer/api.h"

namespace {

namespace py = pybind11;
using torch_flashinfer::AppendKvParams;
using torch_flashinfer::FwdParams;
using torch_flashinfer::KvLayout;
using OptTensor = std::optional<at::Tensor>;

template <typename T>
const T* opt_ptr(const OptTensor& t) {
  return t.has_value() ? static_cast<const T*>(t->data_ptr()) : nullptr;
}

int num_sms(int device) {
  static int cached[64] = {0};
  if (device < 64 && cached[device]) return cached[device];
  int n = 0;
  cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
  if (device < 64) cached[device] = n;
  return n;
}

// What plan_fwd decided for one signature.
struct FwdPlan {
  tfi_fwd_fn kernel;
  tfi_fwd_workspace_fn workspace;
  tfi_fwd_counters_fn counters;
  int64_t seqlen_q, seqlen_k;
  double softmax_scale;
};

// An uninitialised contiguous CUDA tensor, from the caching allocator without a second trip
// through the dispatcher (at::empty's): the outputs and scratch of every call. In deterministic
// mode with fill_uninitialized_memory, at::empty's NaN fill is kept.
at::Tensor new_cuda_tensor(at::IntArrayRef sizes, at::ScalarType dtype, at::Device device) {
  const auto& ctx = at::globalContext();
  if (ctx.deterministicAlgorithms() && ctx.deterministicFillUninitializedMemory()) {
    return at::empty(sizes, at::TensorOptions().dtype(dtype).device(device));
  }
  return at::detail::empty_cuda(sizes, dtype, device, std::nullopt);
}

// Counters that calls leave zeroed (api.h tfi_fwd_counters), one buffer per (device, stream):
// calls on one stream run in order, so they can share it. A CUDA graph capture gets fresh zeroed
// counters instead (the zeroing is captured too): its replays may run on any stream, beside
// eager calls that use this stream's buffer. The caller holds the returned tensor until its
// launch is queued, so a buffer replaced meanwhile (grown by another thread, or dropped with the
// table) goes back to the allocator only behind that launch on the stream.
at::Tensor zeroed_counters(const at::Tensor& like, int64_t n) {
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  TORCH_CHECK(cudaStreamIsCapturing(stream, &capture) == cudaSuccess, "flashinfer.fwd: cudaStreamIsCapturing failed");
  const auto options = like.options().dtype(at::kInt);
  if (capture != cudaStreamCaptureStatusNone) return at::zeros({n}, options);
  static std::mutex mutex;
  static std::unordered_map<std::string, at::Tensor> buffers;  // key: device index, stream handle
  std::string key(sizeof(int) + sizeof(cudaStream_t), '\0');
  const int device = like.get_device();
  std::memcpy(&key[0], &device, sizeof(int));
  std::memcpy(&key[sizeof(int)], &stream, sizeof(cudaStream_t));
  std::lock_guard<std::mutex> lock(mutex);
  if (buffers.size() >= 256 && !buffers.count(key)) buffers.clear();  // streams come and go
  at::Tensor& buffer = buffers[key];
  if (!buffer.defined() || buffer.numel() < n) buffer = at::zeros({std::max<int64_t>(n, 4096)}, options);
  return buffer;
}

// Strides and storage offsets are checked in Python (_validation.py, also for fake tensors); what
// is left is a storage that does not start 16-byte aligned (from_blob, DLPack).
void check_aligned(const char* op, std::initializer_list<const void*> ptrs) {
  for (const void* ptr : ptrs) {
    TORCH_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, "flashinfer.", op,
                ": q/k/v/out and the caches must start at 16-byte aligned addresses");
  }
}

// Fills the params struct and runs a kernel library's entry point (allocating the fp32 scratch
// it asks for) on the current stream of q's device.
void launch_fwd(const FwdPlan& plan, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& out,
                at::Tensor& lse, const OptTensor& cu_seqlens_q, const OptTensor& cu_seqlens_k,
                const OptTensor& cache_seqlens, const OptTensor& cache_leftpad, const OptTensor& block_table,
                const OptTensor& alibi_slopes, bool causal, int64_t window_left, int64_t window_right, double softcap,
                int64_t num_splits) {
  c10::cuda::CUDAGuard guard(q.device());
  FwdParams p{};
  const bool varlen_q = cu_seqlens_q.has_value();
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.out = out.data_ptr();
  check_aligned("fwd", {p.q, p.k, p.v, p.out});
  // An empty lse (return_lse=False) is not written: the kernels skip a null p.lse.
  const bool has_lse = lse.numel() > 0;
  p.lse = has_lse ? lse.data_ptr<float>() : nullptr;
  // Packed tensors have no batch dim: the row dim is dim 0 and the batch stride is unused.
  const int r = varlen_q ? 0 : 1;
  p.q_batch_stride = varlen_q ? 0 : q.stride(0);
  p.q_row_stride = q.stride(r);
  p.q_head_stride = q.stride(r + 1);
  p.o_batch_stride = varlen_q ? 0 : out.stride(0);
  p.o_row_stride = out.stride(r);
  p.o_head_stride = out.stride(r + 1);
  p.lse_batch_stride = varlen_q || !has_lse ? 0 : lse.stride(0);
  p.lse_head_stride = !has_lse ? 0 : varlen_q ? lse.stride(0) : lse.stride(1);

  p.kv_layout = block_table.has_value() ? KvLayout::kPaged
                : cu_seqlens_k.has_value() ? KvLayout::kVarlen
                                           : KvLayout::kDense;
  const int rk = p.kv_layout == KvLayout::kVarlen ? 0 : 1;
  p.k_batch_stride = rk ? k.stride(0) : 0;
  p.k_row_stride = k.stride(rk);
  p.k_head_stride = k.stride(rk + 1);
  p.v_batch_stride = rk ? v.stride(0) : 0;
  p.v_row_stride = v.stride(rk);
  p.v_head_stride = v.stride(rk + 1);

  p.cu_seqlens_q = opt_ptr<int32_t>(cu_seqlens_q);
  p.cu_seqlens_k = opt_ptr<int32_t>(cu_seqlens_k);
  p.cache_seqlens = opt_ptr<int32_t>(cache_seqlens);
  p.cache_leftpad = opt_ptr<int32_t>(cache_leftpad);
  p.block_table = opt_ptr<int32_t>(block_table);
  p.block_table_batch_stride = block_table.has_value() ? block_table->stride(0) : 0;
  p.page_size = block_table.has_value() ? static_cast<int32_t>(k.size(1)) : 0;
  p.num_blocks = block_table.has_value() ? static_cast<int32_t>(k.size(0)) : 0;
  p.total_q = static_cast<int32_t>(q.size(0));
  p.total_k = static_cast<int32_t>(k.size(0));
  p.alibi_slopes = opt_ptr<float>(alibi_slopes);
  p.alibi_batch_stride = alibi_slopes.has_value() && alibi_slopes->dim() == 2 ? alibi_slopes->stride(0) : 0;

  p.batch = varlen_q ? static_cast<int32_t>(cu_seqlens_q->size(0) - 1) : static_cast<int32_t>(q.size(0));
  p.heads_q = static_cast<int32_t>(q.size(-2));
  p.heads_k = static_cast<int32_t>(k.size(-2));
  p.head_dim = static_cast<int32_t>(q.size(-1));
  p.seqlen_q = static_cast<int32_t>(plan.seqlen_q);
  p.seqlen_k = static_cast<int32_t>(plan.seqlen_k);
  p.softmax_scale = static_cast<float>(plan.softmax_scale);
  p.softcap = static_cast<float>(softcap);
  p.causal = causal;
  p.window_left = static_cast<int32_t>(window_left);
  p.window_right = static_cast<int32_t>(window_right);
  p.is_bf16 = q.scalar_type() == at::kBFloat16;
  p.num_sms = num_sms(q.get_device());
  p.num_splits = static_cast<int32_t>(num_splits);

  at::Tensor workspace, counters_buffer;
  const long long floats = plan.workspace(&p);
  if (floats > 0) {
    workspace = new_cuda_tensor({floats}, at::kFloat, q.device());
    p.workspace = workspace.data_ptr<float>();
    p.workspace_floats = floats;
  }
  const long long counters = plan.counters(&p);
  if (counters > 0) {
    counters_buffer = zeroed_counters(q, counters);
    p.counters = reinterpret_cast<uint32_t*>(counters_buffer.data_ptr<int32_t>());
    p.num_counters = counters;
  }
  const char* err = plan.kernel(&p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "flashinfer.fwd kernel: ", err);
}

void launch_append_kv(tfi_append_kv_fn kernel, at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& k,
                      const at::Tensor& v, const at::Tensor& cache_seqlens, const OptTensor& block_table) {
  c10::cuda::CUDAGuard guard(k.device());
  AppendKvParams p{};
  p.k_cache = k_cache.data_ptr();
  p.v_cache = v_cache.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  check_aligned("append_kv", {p.k_cache, p.v_cache, p.k, p.v});
  p.cache_batch_stride = k_cache.stride(0);
  p.cache_row_stride = k_cache.stride(1);
  p.cache_head_stride = k_cache.stride(2);
  p.vcache_batch_stride = v_cache.stride(0);
  p.vcache_row_stride = v_cache.stride(1);
  p.vcache_head_stride = v_cache.stride(2);
  p.k_batch_stride = k.stride(0);
  p.k_row_stride = k.stride(1);
  p.k_head_stride = k.stride(2);
  p.v_batch_stride = v.stride(0);
  p.v_row_stride = v.stride(1);
  p.v_head_stride = v.stride(2);
  p.cache_seqlens = cache_seqlens.data_ptr<int32_t>();
  p.block_table = opt_ptr<int32_t>(block_table);
  p.block_table_batch_stride = block_table.has_value() ? block_table->stride(0) : 0;
  p.page_size = static_cast<int32_t>(k_cache.size(1));
  p.cache_rows = static_cast<int32_t>(k_cache.size(1));
  p.num_blocks = static_cast<int32_t>(k_cache.size(0));
  p.max_blocks = block_table.has_value() ? static_cast<int32_t>(block_table->size(1)) : 1;
  p.batch = static_cast<int32_t>(k.size(0));
  p.seqlen_new = static_cast<int32_t>(k.size(1));
  p.heads_k = static_cast<int32_t>(k.size(2));
  p.head_dim = static_cast<int32_t>(k.size(3));
  p.elem_bytes = static_cast<int32_t>(k.element_size());
  const char* err = kernel(&p, c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(err == nullptr, "flashinfer.append_kv kernel: ", err);
}

// ---- signatures and the plan cache ----

// What the plan reads of a tensor's strides besides the last one, in one pass: bit 0, every row
// starts on a 16-byte boundary (the storage offset and the strides of the dims longer than one
// are multiples of 16 bytes; the validation refuses the others); bit 1, a TMA map can describe it
// (no zero stride on a dim longer than one, strides under 2^40 bytes: _kernels.tma_strides,
// which "auto" asks before it picks fa3).
int64_t stride_flags(const at::Tensor& t) {
  const int64_t size = static_cast<int64_t>(t.element_size());
  const int64_t elems = std::max<int64_t>(1, 16 / size);
  bool aligned = t.storage_offset() % elems == 0, tma = true;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.size(d) <= 1) continue;
    const int64_t bytes = t.stride(d) * size;
    aligned = aligned && (d + 1 == t.dim() || t.stride(d) % elems == 0);
    tma = tma && bytes > 0 && bytes < (int64_t(1) << 40);
  }
  return int64_t(aligned) + 2 * int64_t(tma);
}

// Everything the plan reads about a tensor.
void add_tensor(std::vector<int64_t>& key, const at::Tensor& t) {
  key.push_back(static_cast<int64_t>(t.scalar_type()));
  key.push_back(static_cast<int64_t>(t.device().type()) * 1024 + t.device().index());
  key.push_back(t.dim());
  for (int64_t s : t.sizes()) key.push_back(s);
  key.push_back(t.dim() > 0 ? t.stride(-1) : 0);
  key.push_back(stride_flags(t));
}

void add_tensor(std::vector<int64_t>& key, const OptTensor& t) {
  key.push_back(t.has_value());
  if (t.has_value()) add_tensor(key, *t);
}

void add_double(std::vector<int64_t>& key, double x) {
  int64_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  key.push_back(bits);
}

template <typename Plan>
class PlanCache {
 public:
  std::optional<Plan> find(const std::string& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = plans_.find(key);
    if (it == plans_.end()) return std::nullopt;
    return it->second;
  }
  void insert(const std::string& key, const Plan& plan) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (plans_.size() >= kMaxEntries) plans_.clear();  // e.g. prefill over ever new lengths
    plans_.emplace(key, plan);
  }

 private:
  static constexpr size_t kMaxEntries = 4096;
  std::mutex mutex_;
  std::unordered_map<std::string, Plan> plans_;
};

std::string key_bytes(const std::vector<int64_t>& key) {
  return std::string(reinterpret_cast<const char*>(key.data()), key.size() * sizeof(int64_t));
}

struct Planners {
  py::object fwd, append_kv;  // torch_flashinfer._kernels.plan_fwd / plan_append_kv
  bool check_data = false;    // TORCH_FLASHINFER_CHECK_DATA=1: plan (and check values) every call
};
Planners* planners = nullptr;  // set once by register_cuda_ops, never freed (outlives the interpreter)
PlanCache<FwdPlan>& fwd_plans() {
  static PlanCache<FwdPlan> cache;
  return cache;
}
PlanCache<tfi_append_kv_fn>& append_kv_plans() {
  static PlanCache<tfi_append_kv_fn> cache;
  return cache;
}

py::object to_py(const OptTensor& t) { return t.has_value() ? py::cast(*t) : py::none(); }

// Runs a Python planner; its ValueError / NotImplementedError / TypeError surface as the same
// Python exception with the same text (the dispatcher translates the c10 errors back).
template <typename Fn>
auto call_python(Fn&& fn) {
  py::gil_scoped_acquire gil;
  try {
    return fn();
  } catch (py::error_already_set& e) {
    const std::string msg = py::str(e.value());
    if (e.matches(PyExc_ValueError)) throw c10::ValueError({__func__, __FILE__, __LINE__}, msg);
    if (e.matches(PyExc_NotImplementedError)) throw c10::NotImplementedError({__func__, __FILE__, __LINE__}, msg);
    if (e.matches(PyExc_TypeError)) throw c10::TypeError({__func__, __FILE__, __LINE__}, msg);
    throw;
  }
}

// The plan cache's key of a fwd call: its signature (add_tensor) and scalar options.
std::string fwd_key(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& cu_seqlens_q,
                    const OptTensor& cu_seqlens_k, int64_t max_q, int64_t max_k, const OptTensor& cache_seqlens,
                    const OptTensor& cache_leftpad, const OptTensor& block_table, const OptTensor& alibi_slopes,
                    std::optional<double> softmax_scale, bool causal, int64_t window_left, int64_t window_right,
                    double softcap, int64_t num_splits, c10::string_view algo) {
  std::vector<int64_t> key;
  key.reserve(96);
  for (const at::Tensor* t : {&q, &k, &v}) add_tensor(key, *t);
  for (const OptTensor* t : {&cu_seqlens_q, &cu_seqlens_k, &cache_seqlens, &cache_leftpad, &block_table, &alibi_slopes}) {
    add_tensor(key, *t);
  }
  key.insert(key.end(), {max_q, max_k, int64_t(softmax_scale.has_value()), int64_t(causal), window_left,
                         window_right, num_splits});
  add_double(key, softmax_scale.value_or(0.0));
  add_double(key, softcap);
  std::string bytes = key_bytes(key);
  bytes.append(algo.data(), algo.size());
  return bytes;
}

// Allocates out and lse and launches a planned call. out: q's shape, contiguous; lse: (batch,
// heads_q, seqlen_q) dense, (heads_q, total_q) packed, (0,) without return_lse (the rule of
// ops._new_outputs, which the fake implementation uses).
std::tuple<at::Tensor, at::Tensor> run_fwd(const FwdPlan& plan, const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v, const OptTensor& cu_seqlens_q,
                                           const OptTensor& cu_seqlens_k, const OptTensor& cache_seqlens,
                                           const OptTensor& cache_leftpad, const OptTensor& block_table,
                                           const OptTensor& alibi_slopes, bool causal, int64_t window_left,
                                           int64_t window_right, double softcap, int64_t num_splits,
                                           bool return_lse) {
  at::Tensor out = new_cuda_tensor(q.sizes(), q.scalar_type(), q.device());
  const int64_t dense[] = {q.size(0), q.size(2), q.size(1)}, packed[] = {q.size(1), q.size(0)}, none[] = {0};
  const at::IntArrayRef lse_shape = !return_lse                ? at::IntArrayRef(none)
                                    : cu_seqlens_q.has_value() ? at::IntArrayRef(packed)
                                                               : at::IntArrayRef(dense);
  at::Tensor lse = new_cuda_tensor(lse_shape, at::kFloat, q.device());
  launch_fwd(plan, q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k, cache_seqlens, cache_leftpad, block_table,
             alibi_slopes, causal, window_left, window_right, softcap, num_splits);
  return {out, lse};
}

std::tuple<at::Tensor, at::Tensor> fwd_op(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                          const OptTensor& cu_seqlens_q, const OptTensor& cu_seqlens_k,
                                          c10::SymInt max_seqlen_q, c10::SymInt max_seqlen_k,
                                          const OptTensor& cache_seqlens, const OptTensor& cache_leftpad,
                                          const OptTensor& block_table, const OptTensor& alibi_slopes,
                                          std::optional<double> softmax_scale, bool causal, int64_t window_left,
                                          int64_t window_right, double softcap, int64_t num_splits,
                                          c10::string_view algo, bool return_lse) {
  const int64_t max_q = max_seqlen_q.expect_int(), max_k = max_seqlen_k.expect_int();
  const std::string key = fwd_key(q, k, v, cu_seqlens_q, cu_seqlens_k, max_q, max_k, cache_seqlens, cache_leftpad,
                                  block_table, alibi_slopes, softmax_scale, causal, window_left, window_right, softcap,
                                  num_splits, algo);
  std::optional<FwdPlan> plan = planners->check_data ? std::nullopt : fwd_plans().find(key);
  if (!plan.has_value()) {
    plan = call_python([&] {
      py::tuple t = planners->fwd(q, k, v, to_py(cu_seqlens_q), to_py(cu_seqlens_k), max_q, max_k,
                                  to_py(cache_seqlens), to_py(cache_leftpad), to_py(block_table),
                                  to_py(alibi_slopes), softmax_scale.has_value() ? py::cast(*softmax_scale) : py::none(),
                                  causal, window_left, window_right, softcap, num_splits,
                                  std::string(algo.data(), algo.size()));
      return FwdPlan{reinterpret_cast<tfi_fwd_fn>(t[0].cast<int64_t>()),
                     reinterpret_cast<tfi_fwd_workspace_fn>(t[1].cast<int64_t>()),
                     reinterpret_cast<tfi_fwd_counters_fn>(t[2].cast<int64_t>()), t[3].cast<int64_t>(),
                     t[4].cast<int64_t>(), t[5].cast<double>()};
    });
    fwd_plans().insert(key, *plan);
  }
  return run_fwd(*plan, q, k, v, cu_seqlens_q, cu_seqlens_k, cache_seqlens, cache_leftpad, block_table, alibi_slopes,
                 causal, window_left, window_right, softcap, num_splits, return_lse);
}

// The eager fast path (ops.fwd): the op's CUDA kernel without the dispatcher's boxed call, for a
// signature whose plan is cached -- i.e. that the op has validated before. Returns None for any
// other (ops.fwd then calls the op, which validates, raises or plans). Skipping the dispatcher's
// argument parsing and boxing saves a decode call 3.0-3.4 us of CPU on the H100 host
// (benchmarks/results/h100/host_overhead.log).
py::object fwd_cached(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const OptTensor& cu_seqlens_q,
                      const OptTensor& cu_seqlens_k, int64_t max_q, int64_t max_k, const OptTensor& cache_seqlens,
                      const OptTensor& cache_leftpad, const OptTensor& block_table, const OptTensor& alibi_slopes,
                      std::optional<double> softmax_scale, bool causal, int64_t window_left, int64_t window_right,
                      double softcap, int64_t num_splits, const std::string& algo, bool return_lse) {
  if (planners == nullptr || planners->check_data) return py::none();
  const std::optional<FwdPlan> plan =
      fwd_plans().find(fwd_key(q, k, v, cu_seqlens_q, cu_seqlens_k, max_q, max_k, cache_seqlens, cache_leftpad,
                               block_table, alibi_slopes, softmax_scale, causal, window_left, window_right, softcap,
                               num_splits, algo));
  if (!plan.has_value()) return py::none();
  std::tuple<at::Tensor, at::Tensor> result;
  {
    py::gil_scoped_release no_gil;  // as the dispatcher's call from Python does
    RECORD_FUNCTION("flashinfer::fwd", std::vector<c10::IValue>({q, k, v}));
    result = run_fwd(*plan, q, k, v, cu_seqlens_q, cu_seqlens_k, cache_seqlens, cache_leftpad, block_table,
                     alibi_slopes, causal, window_left, window_right, softcap, num_splits, return_lse);
  }
  return py::make_tuple(std::get<0>(result), std::get<1>(result));
}

void append_kv_op(at::Tensor& k_cache, at::Tensor& v_cache, const at::Tensor& k, const at::Tensor& v,
                  const at::Tensor& cache_seqlens, const OptTensor& block_table) {
  std::vector<int64_t> key;
  key.reserve(48);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&k_cache, &v_cache, &k, &v, &cache_seqlens}) {
    add_tensor(key, *t);
  }
  add_tensor(key, block_table);
  const std::string bytes = key_bytes(key);
  std::optional<tfi_append_kv_fn> kernel = planners->check_data ? std::nullopt : append_kv_plans().find(bytes);
  if (!kernel.has_value()) {
    kernel = call_python([&] {
      return reinterpret_cast<tfi_append_kv_fn>(
          planners->append_kv(k_cache, v_cache, k, v, cache_seqlens, to_py(block_table)).cast<int64_t>());
    });
    append_kv_plans().insert(bytes, *kernel);
  }
  launch_append_kv(*kernel, k_cache, v_cache, k, v, cache_seqlens, block_table);
}

class IgnoreWarnings : public c10::WarningHandler {
 public:
  void process(const c10::Warning&) override {}
};

// Makes fwd_op / append_kv_op the CUDA kernels of the ops. They replace the Python ones that
// ops.py registered (which load this module on first use); the dispatcher keeps those in its
// list, so the call that got here finishes normally. Its "overriding a kernel" warning is the
// point of the exercise and is silenced.
void register_cuda_ops(py::object plan_fwd, py::object plan_append_kv, bool check_data) {
  static std::once_flag once;
  std::call_once(once, [&] {
    planners = new Planners{std::move(plan_fwd), std::move(plan_append_kv), check_data};
    static torch::Library* lib =
        new torch::Library(torch::Library::IMPL, "flashinfer", c10::DispatchKey::CUDA, __FILE__, __LINE__);
    IgnoreWarnings ignore;
    c10::WarningUtils::WarningHandlerGuard guard(&ignore);
    lib->impl("fwd", TORCH_FN(fwd_op));
    lib->impl("append_kv", TORCH_FN(append_kv_op));
  });
}

// For tuning scripts: run one kernel library's entry points (_kernels.FWD_ENTRY_POINTS) on given outputs,
// on a dense cache or (cache_seqlens, block_table) a paged one.
void fwd_with_library(int64_t kernel, int64_t workspace, int64_t counters, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor& v, at::Tensor& out, at::Tensor& lse, int64_t seqlen_q, int64_t seqlen_k,
                      double softmax_scale, bool causal, int64_t num_splits, const OptTensor& cache_seqlens,
                      const OptTensor& block_table) {
  const FwdPlan plan{reinterpret_cast<tfi_fwd_fn>(kernel), reinterpret_cast<tfi_fwd_workspace_fn>(workspace),
                     reinterpret_cast<tfi_fwd_counters_fn>(counters), seqlen_q, seqlen_k, softmax_scale};
  launch_fwd(plan, q, k, v, out, lse, std::nullopt, std::nullopt, cache_seqlens, std::nullopt, block_table,
             std::nullopt, causal, -1, -1, 0.0, num_splits);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("register_cuda_ops", &register_cuda_ops);
  m.def("fwd_with_library", &fwd_with_library);
  m.def("fwd_cached", &fwd_cached);
}
