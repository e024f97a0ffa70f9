// Selective scan (Mamba's S6) on the CPU: one fused recurrence per (batch, channel), vectorised
// over the state, parallel over batch x channels; each thread runs its channels block by block
// in time, so that the B and C rows its channels share are read from cache. The maths and the
// argument conventions are those of espnet_ssm/ops/selective_scan.py (its pure-PyTorch scan is
// the reference):
//
//   Δ_t = softplus(δ_t + bias) (or δ_t + bias),   a_t[n] = exp(Δ_t A[n]),
//   h_t[n] = a_t[n] h_{t-1}[n] + Δ_t u_t B_t[n],  y_t = (Σ_n C_t[n] h_t[n] + D u_t) · SiLU(z_t).
//
// Layouts (all contiguous): u, δ, z, y (batch, d, L); A (d, N); B, C time-major per group,
// (batch, G, L, N), channel c reading group c / (d / G); D, bias (d,); states (batch, d, N).
//
// Backward: the forward keeps the state before every segment of S frames (S chosen by the
// caller). The backward recomputes one segment's states and decays at a time into a per-thread
// buffer and runs the adjoint g_t = C_t ∂y_t + a_{t+1} g_{t+1} backwards through it:
//   ∂Δ_t u_t B_t  (dB_t += g_t Δ_t u_t, du_t += Δ_t Σ g_t B_t, ∂Δ_t += u_t Σ g_t B_t),
//   ∂a_t = g_t h_{t-1}  (∂Δ_t += Σ_n A[n] g_t a_t h_{t-1}, ∂A[n] += Δ_t g_t a_t h_{t-1}),
// and ∂h_{-1} = a_0 g_0. Channels of one group add into the same dB/dC rows, so every thread
// accumulates those into its own buffer and the buffers are summed at the end.
//
// Built with -O3 -ffast-math -fopenmp -march=native -funroll-loops -fvariable-expansion-in-unroller:
// the inner loops over n (and the per-frame softplus and gate, over time) are plain loops that the
// compiler turns into vector code, unrolled with several accumulators for their sums; the decay's
// exponential is written out for float32 (exp2_inline) so that it is inlined there.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

// Δ for frames [0, n): softplus(raw + bias) (or raw + bias). A separate loop over time so that
// the compiler vectorises exp/log1p over frames instead of calling them once per frame.
template <typename T>
inline void step_sizes(const T* __restrict raw, T bias, bool softplus, int64_t n, T* __restrict out) {
  if (softplus) {
    // softplus(x) = log1p(exp(x)), evaluated as x for large x (as torch's threshold of 20)
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) {
      const T x = raw[j] + bias;
      out[j] = x > T(20) ? x : std::log1p(std::exp(x));
    }
  } else {
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) out[j] = raw[j] + bias;
  }
}

// 2^y in float32, written out so that the compiler inlines and vectorises it inside the state
// loops (the scan's cost is mostly these exponentials; libmvec's expf is an out-of-line call
// there). The decay exp(Δ A) is computed as 2^(Δ A log2 e) with A log2 e prepared once per call,
// which saves the base change of every element: y = k + f with k = rint(y), |f| <= 1/2, 2^f by a
// degree-6 polynomial fitted for minimal relative error on [-1/2, 1/2] (1.9e-9 in exact
// arithmetic, ~1e-7 in float32 Horner steps: float32's rounding), times 2^k built in the exponent
// bits. y is clamped to [-126, 127], so 2^y of a very negative argument is a tiny number, not 0.
inline float exp2_inline(float y) {
  y = std::min(std::max(y, -126.0f), 127.0f);
  const float k = std::rint(y);
  const float f = y - k;
  float p = 1.53458118e-04f;
  p = p * f + 1.33999314e-03f;
  p = p * f + 9.61848896e-03f;
  p = p * f + 5.55032878e-02f;
  p = p * f + 2.40226469e-01f;
  p = p * f + 6.93147206e-01f;
  p = p * f + 1.0f;
  const int32_t bits = (static_cast<int32_t>(k) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
// float64 (the reference precision, used by the tests) keeps the library's exp2
inline double exp2_inline(double y) { return std::exp2(y); }

struct Shape {
  int64_t batch, d, L, N, G;
  int64_t group(int64_t c) const { return c / (d / G); }
};

// Frames per block of the forward's time loop: every channel of a thread runs one block before
// the next, so that the block's B and C rows (shared by the channels of a group) stay in cache
// instead of being read from memory once per channel.
constexpr int64_t kBlock = 64;

// h_out <- a ⊙ h_in + x over n, with a_n = exp(dt A_n) = 2^(dt A2_n) (A2 = A log2 e),
// x_n = dtu B_n; returns Σ_n C_n h_out_n. h_out may be h_in (the forward updates in place; the
// backward's recomputation writes each frame's state next to the previous one).
// kN > 0: the state size known at compile time (no remainder loop, fully unrolled).
// kKeepDecay: also write a_n to decay_out (the backward's recomputation needs them).
template <int kN, bool kKeepDecay, typename T>
inline T state_update(const T* h_in, T* h_out, const T* __restrict A2, const T* __restrict B,
                      const T* __restrict C, T dt, T dtu, int64_t N_runtime, T* __restrict decay_out) {
  const int64_t N = kN > 0 ? kN : N_runtime;
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t n = 0; n < N; ++n) {
    const T a = exp2_inline(dt * A2[n]);
    if (kKeepDecay) decay_out[n] = a;
    const T hn = a * h_in[n] + dtu * B[n];
    h_out[n] = hn;
    acc += C[n] * hn;
  }
  return acc;
}

template <int kN, typename T>
void forward_impl(const Shape& s, const T* u, const T* delta, const T* A2, const T* B, const T* C,
                  const T* D, const T* z, const T* bias, bool softplus, const T* h0, T* y,
                  T* last, T* checkpoints, int64_t segment) {
  const int64_t L = s.L, N = kN > 0 ? kN : s.N;
  const int64_t segments = checkpoints ? (L + segment - 1) / segment : 0;
  at::parallel_for(0, s.batch * s.d, 1, [&](int64_t begin, int64_t end) {
    T dts[kBlock], ys[kBlock];
    // the running states live in the output
    for (int64_t i = begin; i < end; ++i) {
      T* h = last + i * N;
      if (h0) {
        std::copy(h0 + i * N, h0 + (i + 1) * N, h);
      } else {
        std::fill(h, h + N, T(0));
      }
    }
    for (int64_t t0 = 0; t0 < L; t0 += kBlock) {
      const int64_t len = std::min(kBlock, L - t0);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / s.d, c = i % s.d;
        const T* u_c = u + i * L + t0;
        const int64_t row = ((b * s.G + s.group(c)) * L + t0) * N;
        const T *B_g = B + row, *C_g = C + row, *A2_c = A2 + c * N;
        T* h = last + i * N;
        step_sizes(delta + i * L + t0, bias ? bias[c] : T(0), softplus, len, dts);
        for (int64_t j = 0; j < len; ++j) {
          const int64_t t = t0 + j;
          if (checkpoints && t % segment == 0) {
            std::copy(h, h + N, checkpoints + (i * segments + t / segment) * N);
          }
          ys[j] = state_update<kN, false>(h, h, A2_c, B_g + j * N, C_g + j * N, dts[j], dts[j] * u_c[j],
                                          N, (T*)nullptr);
        }
        // skip connection and output gate, vectorised over the block
        const T D_c = D ? D[c] : T(0);
        T* y_c = y + i * L + t0;
        if (z) {
          const T* z_c = z + i * L + t0;
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) y_c[j] = (ys[j] + D_c * u_c[j]) * z_c[j] * sigmoid(z_c[j]);
        } else {
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) y_c[j] = ys[j] + D_c * u_c[j];
        }
      }
    }
  });
}

template <int kN, typename T>
void backward_impl(const Shape& s, const T* u, const T* delta, const T* A, const T* A2, const T* B,
                   const T* C, const T* D, const T* z, const T* bias, bool softplus, const T* checkpoints,
                   int64_t segment, const T* dy, const T* dlast, T* du, T* ddelta, T* dA, T* dB_threads,
                   T* dC_threads, T* dD, T* dz, T* dbias, T* dh0) {
  const int64_t L = s.L, N = kN > 0 ? kN : s.N;
  const int64_t segments = (L + segment - 1) / segment;
  const int64_t bc_size = s.batch * s.G * L * N;  // one thread's dB (or dC) buffer
  at::parallel_for(0, s.batch * s.d, 1, [&](int64_t begin, int64_t end) {
    const int64_t thread = at::get_thread_num();
    T* dB_all = dB_threads + thread * bc_size;
    T* dC_all = dC_threads + thread * bc_size;
    // per-thread work space: states h_{t0-1} .. h_{t1-1} and decays a_t of one segment, the
    // output before the gate, Δ, the gate's sigmoid and softplus' slope per frame
    std::vector<T> hs((segment + 1) * N), decays(segment * N), ys(segment), dts(segment),
        gate(segment), slope(segment);
    // the adjoint state of every channel of the thread carries from one segment to the one before:
    // segments run in the outer loop (last first) and channels in the inner one, so that a
    // segment's B, C, dB and dC rows stay in cache while all channels of the thread use them
    for (int64_t i = begin; i < end; ++i) {
      T* g = dh0 + i * N;  // holds ∂L/∂h_{t0-1} of the segment last run; a_0 g_0 at the end
      if (dlast) {
        std::copy(dlast + i * N, dlast + (i + 1) * N, g);
      } else {
        std::fill(g, g + N, T(0));
      }
      dD[i] = 0;
      dbias[i] = 0;
    }
    for (int64_t k = segments - 1; k >= 0; --k) {
      const int64_t t0 = k * segment, len = std::min(L, t0 + segment) - t0;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t b = i / s.d, c = i % s.d;
        const int64_t row = ((b * s.G + s.group(c)) * L + t0) * N;
        const T *u_c = u + i * L + t0, *dl_c = delta + i * L + t0, *dy_c = dy + i * L + t0;
        const T *B_g = B + row, *C_g = C + row, *A_c = A + c * N, *A2_c = A2 + c * N;
        T *dB_g = dB_all + row, *dC_g = dC_all + row, *dA_c = dA + i * N, *g = dh0 + i * N;
        const T D_c = D ? D[c] : T(0), bias_c = bias ? bias[c] : T(0);
        // recompute the segment: hs[j] = h_{t0+j-1}, decays[j] = a_{t0+j}
        const T* start = checkpoints + (i * segments + k) * N;
        std::copy(start, start + N, hs.begin());
        step_sizes(dl_c, bias_c, softplus, len, dts.data());
        for (int64_t j = 0; j < len; ++j) {
          ys[j] = state_update<kN, true>(hs.data() + j * N, hs.data() + (j + 1) * N, A2_c, B_g + j * N,
                                         C_g + j * N, dts[j], dts[j] * u_c[j], N, decays.data() + j * N);
        }
        // per-frame factors of the gate and of softplus, vectorised over the segment
        if (z) {
          const T* z_c = z + i * L + t0;
          T* dz_c = dz + i * L + t0;
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) {
            const T zt = z_c[j], sg = sigmoid(zt);
            dz_c[j] = dy_c[j] * (ys[j] + D_c * u_c[j]) * sg * (T(1) + zt * (T(1) - sg));
            gate[j] = zt * sg;
          }
        } else {
          std::fill(gate.begin(), gate.begin() + len, T(1));
        }
        if (softplus) {
#pragma omp simd
          for (int64_t j = 0; j < len; ++j) {
            const T raw = dl_c[j] + bias_c;
            slope[j] = raw > T(20) ? T(1) : sigmoid(raw);
          }
        }
        // adjoint, last frame first; g holds a_{t+1} g_{t+1} on entry to frame t
        T dD_c = 0, dbias_c = 0;
        for (int64_t j = len - 1; j >= 0; --j) {
          const T dt = dts[j], ut = u_c[j], gy = dy_c[j] * gate[j];
          dD_c += gy * ut;
          const T* Bt = B_g + j * N;
          const T* Ct = C_g + j * N;
          T* dBt = dB_g + j * N;
          T* dCt = dC_g + j * N;
          const T* h_prev = hs.data() + j * N;
          const T* h_cur = hs.data() + (j + 1) * N;
          const T* a = decays.data() + j * N;
          const T dtu = dt * ut;
          T sum_gB = 0, sum_Aq = 0;
#pragma omp simd reduction(+ : sum_gB, sum_Aq)
          for (int64_t n = 0; n < N; ++n) {
            const T gn = g[n] + gy * Ct[n];  // ∂L/∂h_t
            dCt[n] += gy * h_cur[n];
            dBt[n] += gn * dtu;
            sum_gB += gn * Bt[n];
            const T q = gn * a[n] * h_prev[n];  // ∂L/∂(Δ_t A_n)
            sum_Aq += q * A_c[n];
            dA_c[n] += q * dt;
            g[n] = a[n] * gn;
          }
          du[i * L + t0 + j] = gy * D_c + dt * sum_gB;
          const T dd = (ut * sum_gB + sum_Aq) * (softplus ? slope[j] : T(1));  // ∂L/∂(δ_t + bias)
          ddelta[i * L + t0 + j] = dd;
          dbias_c += dd;
        }
        // D, bias and A are per channel, but a channel's batch elements may run on different
        // threads: their gradients are kept per (batch, channel) and summed over the batch
        dD[i] += dD_c;
        dbias[i] += dbias_c;
      }
    }
  });
}

void check(const torch::Tensor& x, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(x.device().is_cpu(), "selective_scan_cpu: ", name, " must be a CPU tensor");
  TORCH_CHECK(x.scalar_type() == dtype, "selective_scan_cpu: ", name, " has dtype ", x.scalar_type(),
              ", expected ", dtype);
  TORCH_CHECK(x.is_contiguous(), "selective_scan_cpu: ", name, " must be contiguous");
}

// Calls f with std::integral_constant<int, N> for Mamba's usual state sizes, so that its loops
// over n are compiled for that size, and with <int, 0> (the size known at run time) otherwise.
template <typename F>
void with_state_size(int64_t N, F&& f) {
  if (N == 16) {
    f(std::integral_constant<int, 16>{});
  } else if (N == 256) {  // Speech-Mamba's
    f(std::integral_constant<int, 256>{});
  } else {
    f(std::integral_constant<int, 0>{});
  }
}

template <typename T>
const T* maybe(const c10::optional<torch::Tensor>& x) {
  return x.has_value() ? x->data_ptr<T>() : nullptr;
}

// A log2 e: the decays exp(Δ A) are computed as 2^(Δ A log2 e)
torch::Tensor log2e_times(const torch::Tensor& A) { return (A * M_LOG2E).contiguous(); }

Shape shape_of(const torch::Tensor& u, const torch::Tensor& A, const torch::Tensor& B) {
  return Shape{u.size(0), u.size(1), u.size(2), A.size(1), B.size(1)};
}

void check_all(const torch::Tensor& u, const torch::Tensor& delta, const torch::Tensor& A,
               const torch::Tensor& B, const torch::Tensor& C, const c10::optional<torch::Tensor>& D,
               const c10::optional<torch::Tensor>& z, const c10::optional<torch::Tensor>& bias) {
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, "selective_scan_cpu: float32 or float64 only");
  check(u, "u", dtype);
  check(delta, "delta", dtype);
  check(A, "A", dtype);
  check(B, "B", dtype);
  check(C, "C", dtype);
  if (D) check(*D, "D", dtype);
  if (z) check(*z, "z", dtype);
  if (bias) check(*bias, "delta_bias", dtype);
  TORCH_CHECK(u.dim() == 3 && delta.sizes() == u.sizes(), "selective_scan_cpu: u, delta (batch, d, L)");
  TORCH_CHECK(A.dim() == 2 && A.size(0) == u.size(1), "selective_scan_cpu: A (d, N)");
  TORCH_CHECK(B.dim() == 4 && B.size(0) == u.size(0) && B.size(2) == u.size(2) && B.size(3) == A.size(1) &&
                  u.size(1) % B.size(1) == 0 && C.sizes() == B.sizes(),
              "selective_scan_cpu: B, C (batch, G, L, N) with G dividing d");
}

}  // namespace

// Returns (y, last state, checkpoints); checkpoints is empty unless segment > 0.
std::vector<torch::Tensor> scan_forward(const torch::Tensor& u, const torch::Tensor& delta,
                                        const torch::Tensor& A, const torch::Tensor& B,
                                        const torch::Tensor& C, const c10::optional<torch::Tensor>& D,
                                        const c10::optional<torch::Tensor>& z,
                                        const c10::optional<torch::Tensor>& bias, bool softplus,
                                        const c10::optional<torch::Tensor>& h0, int64_t segment) {
  check_all(u, delta, A, B, C, D, z, bias);
  const Shape s = shape_of(u, A, B);
  const auto A2 = log2e_times(A);
  if (h0) check(*h0, "initial_state", u.scalar_type());
  auto y = torch::empty_like(u);
  auto last = torch::empty({s.batch, s.d, s.N}, u.options());
  const int64_t segments = segment > 0 ? (s.L + segment - 1) / segment : 0;
  auto checkpoints = torch::empty({s.batch, s.d, segments, s.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_forward", [&] {
    with_state_size(s.N, [&](auto kN) {
    forward_impl<decltype(kN)::value, scalar_t>(s, u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A2.data_ptr<scalar_t>(),
                           B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), maybe<scalar_t>(D),
                           maybe<scalar_t>(z), maybe<scalar_t>(bias), softplus, maybe<scalar_t>(h0),
                           y.data_ptr<scalar_t>(), last.data_ptr<scalar_t>(),
                           segment > 0 ? checkpoints.data_ptr<scalar_t>() : nullptr, segment);
    });
  });
  return {y, last, checkpoints};
}

// Returns (du, ddelta, dA, dB, dC, dD, dz, dbias, dh0).
std::vector<torch::Tensor> scan_backward(const torch::Tensor& u, const torch::Tensor& delta,
                                         const torch::Tensor& A, const torch::Tensor& B,
                                         const torch::Tensor& C, const c10::optional<torch::Tensor>& D,
                                         const c10::optional<torch::Tensor>& z,
                                         const c10::optional<torch::Tensor>& bias, bool softplus,
                                         const torch::Tensor& checkpoints, int64_t segment,
                                         const torch::Tensor& dy, const c10::optional<torch::Tensor>& dlast) {
  check_all(u, delta, A, B, C, D, z, bias);
  const Shape s = shape_of(u, A, B);
  const auto A2 = log2e_times(A);
  check(checkpoints, "checkpoints", u.scalar_type());
  check(dy, "dy", u.scalar_type());
  if (dlast) check(*dlast, "dlast", u.scalar_type());
  TORCH_CHECK(segment > 0 && checkpoints.size(2) == (s.L + segment - 1) / segment,
              "selective_scan_cpu: checkpoints do not match the segment length");
  const int64_t threads = at::get_num_threads();
  auto du = torch::empty_like(u), ddelta = torch::empty_like(u);
  auto dz = torch::zeros_like(u);
  auto dB = torch::zeros({threads, s.batch, s.G, s.L, s.N}, u.options());
  auto dC = torch::zeros({threads, s.batch, s.G, s.L, s.N}, u.options());
  auto dD = torch::empty({s.batch, s.d}, u.options()), dbias = torch::empty({s.batch, s.d}, u.options());
  auto dh0 = torch::empty({s.batch, s.d, s.N}, u.options());
  auto dA_batch = torch::zeros({s.batch, s.d, s.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_backward", [&] {
    with_state_size(s.N, [&](auto kN) {
    backward_impl<decltype(kN)::value, scalar_t>(s, u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(), A2.data_ptr<scalar_t>(),
                            B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), maybe<scalar_t>(D),
                            maybe<scalar_t>(z), maybe<scalar_t>(bias), softplus,
                            checkpoints.data_ptr<scalar_t>(), segment, dy.data_ptr<scalar_t>(),
                            maybe<scalar_t>(dlast), du.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(),
                            dA_batch.data_ptr<scalar_t>(), dB.data_ptr<scalar_t>(), dC.data_ptr<scalar_t>(),
                            dD.data_ptr<scalar_t>(), dz.data_ptr<scalar_t>(), dbias.data_ptr<scalar_t>(),
                            dh0.data_ptr<scalar_t>());
    });
  });
  return {du, ddelta, dA_batch.sum(0), dB.sum(0), dC.sum(0), dD.sum(0), dz, dbias.sum(0), dh0};
}

// One frame: state (batch, d, N) -> (y (batch, d), new state); B_t, C_t (batch, G, N).
std::vector<torch::Tensor> scan_step(const torch::Tensor& state, const torch::Tensor& u,
                                     const torch::Tensor& delta, const torch::Tensor& A,
                                     const torch::Tensor& B, const torch::Tensor& C,
                                     const c10::optional<torch::Tensor>& D,
                                     const c10::optional<torch::Tensor>& z,
                                     const c10::optional<torch::Tensor>& bias, bool softplus) {
  // a frame is a sequence of length 1: (batch, d) -> (batch, d, 1), (batch, G, N) -> (batch, G, 1, N)
  auto out = scan_forward(u.unsqueeze(-1), delta.unsqueeze(-1), A, B.unsqueeze(2), C.unsqueeze(2), D,
                          z ? c10::optional<torch::Tensor>(z->unsqueeze(-1)) : c10::nullopt, bias,
                          softplus, state, 0);
  return {out[0].squeeze(-1), out[1]};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &scan_forward, "selective scan forward (CPU)");
  m.def("backward", &scan_backward, "selective scan backward (CPU)");
  m.def("step", &scan_step, "selective scan, one frame (CPU)");
}
