// Selective scan (Mamba's S6) on the CPU: one fused loop per (batch, channel), vectorised over
// the state, parallel over batch x channels. The maths and the argument conventions are those of
// espnet_ssm/ops/selective_scan.py (its pure-PyTorch scan is the reference):
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
// Built with -O3 -ffast-math -fopenmp -march=native: the inner loops over n are plain loops
// that the compiler turns into vector code, exp included (glibc's vector maths).
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

template <typename T>
inline T step_size(T raw, bool softplus) {
  // softplus(x) = log1p(exp(x)), evaluated as x for large x (as torch's threshold of 20)
  return softplus ? (raw > T(20) ? raw : std::log1p(std::exp(raw))) : raw;
}

template <typename T>
inline T sigmoid(T x) {
  return T(1) / (T(1) + std::exp(-x));
}

struct Shape {
  int64_t batch, d, L, N, G;
  int64_t group(int64_t c) const { return c / (d / G); }
};

// h <- a ⊙ h + x over n, with a_n = exp(dt A_n), x_n = dtu B_n; returns Σ_n C_n h_n.
// kKeepDecay: also write a_n to decay_out (the backward's recomputation needs them).
template <bool kKeepDecay, typename T>
inline T state_update(T* __restrict h, const T* __restrict A, const T* __restrict B,
                      const T* __restrict C, T dt, T dtu, int64_t N, T* __restrict decay_out) {
  T acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t n = 0; n < N; ++n) {
    const T a = std::exp(dt * A[n]);
    if (kKeepDecay) decay_out[n] = a;
    const T hn = a * h[n] + dtu * B[n];
    h[n] = hn;
    acc += C[n] * hn;
  }
  return acc;
}

template <typename T>
void forward_impl(const Shape& s, const T* u, const T* delta, const T* A, const T* B, const T* C,
                  const T* D, const T* z, const T* bias, bool softplus, const T* h0, T* y,
                  T* last, T* checkpoints, int64_t segment) {
  const int64_t L = s.L, N = s.N;
  const int64_t segments = checkpoints ? (L + segment - 1) / segment : 0;
  at::parallel_for(0, s.batch * s.d, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / s.d, c = i % s.d;
      const T* u_c = u + i * L;
      const T* dl_c = delta + i * L;
      const T* z_c = z ? z + i * L : nullptr;
      const T* B_g = B + (b * s.G + s.group(c)) * L * N;
      const T* C_g = C + (b * s.G + s.group(c)) * L * N;
      const T* A_c = A + c * N;
      const T D_c = D ? D[c] : T(0), bias_c = bias ? bias[c] : T(0);
      T* h = last + i * N;  // the running state lives in the output
      if (h0) {
        std::copy(h0 + i * N, h0 + (i + 1) * N, h);
      } else {
        std::fill(h, h + N, T(0));
      }
      T* y_c = y + i * L;
      for (int64_t t = 0; t < L; ++t) {
        if (checkpoints && t % segment == 0) {
          std::copy(h, h + N, checkpoints + (i * segments + t / segment) * N);
        }
        const T dt = step_size(dl_c[t] + bias_c, softplus);
        const T ut = u_c[t];
        T out = state_update<false>(h, A_c, B_g + t * N, C_g + t * N, dt, dt * ut, N, (T*)nullptr) + D_c * ut;
        if (z_c) out *= z_c[t] * sigmoid(z_c[t]);
        y_c[t] = out;
      }
    }
  });
}

template <typename T>
void backward_impl(const Shape& s, const T* u, const T* delta, const T* A, const T* B, const T* C,
                   const T* D, const T* z, const T* bias, bool softplus, const T* checkpoints,
                   int64_t segment, const T* dy, const T* dlast, T* du, T* ddelta, T* dA, T* dB_threads,
                   T* dC_threads, T* dD, T* dz, T* dbias, T* dh0) {
  const int64_t L = s.L, N = s.N;
  const int64_t segments = (L + segment - 1) / segment;
  const int64_t bc_size = s.batch * s.G * L * N;  // one thread's dB (or dC) buffer
  at::parallel_for(0, s.batch * s.d, 1, [&](int64_t begin, int64_t end) {
    const int64_t thread = at::get_thread_num();
    T* dB_all = dB_threads + thread * bc_size;
    T* dC_all = dC_threads + thread * bc_size;
    // per-thread work space: states h_{t0-1} .. h_{t1-1} and decays a_t of one segment
    std::vector<T> hs((segment + 1) * N), decays(segment * N), g_buf(N), ys(segment), dts(segment);
    T* g = g_buf.data();
    for (int64_t i = begin; i < end; ++i) {
      const int64_t b = i / s.d, c = i % s.d;
      const int64_t row = (b * s.G + s.group(c)) * L * N;
      const T *u_c = u + i * L, *dl_c = delta + i * L, *z_c = z ? z + i * L : nullptr;
      const T *B_g = B + row, *C_g = C + row, *A_c = A + c * N, *dy_c = dy + i * L;
      T *dB_g = dB_all + row, *dC_g = dC_all + row, *dA_c = dA + i * N;
      const T D_c = D ? D[c] : T(0), bias_c = bias ? bias[c] : T(0);
      T dD_c = 0, dbias_c = 0;
      if (dlast) {
        std::copy(dlast + i * N, dlast + (i + 1) * N, g);
      } else {
        std::fill(g, g + N, T(0));
      }
      for (int64_t k = segments - 1; k >= 0; --k) {
        const int64_t t0 = k * segment, t1 = std::min(L, t0 + segment);
        // recompute the segment: hs[j] = h_{t0+j-1}, decays[j] = a_{t0+j}
        const T* start = checkpoints + (i * segments + k) * N;
        std::copy(start, start + N, hs.begin());
        for (int64_t t = t0; t < t1; ++t) {
          const int64_t j = t - t0;
          const T dt = step_size(dl_c[t] + bias_c, softplus);
          dts[j] = dt;
          T* h = hs.data() + (j + 1) * N;
          std::copy(hs.data() + j * N, hs.data() + (j + 1) * N, h);
          ys[j] = state_update<true>(h, A_c, B_g + t * N, C_g + t * N, dt, dt * u_c[t], N,
                               decays.data() + j * N);
        }
        // adjoint, last frame first; g holds a_{t+1} g_{t+1} on entry to frame t
        for (int64_t t = t1 - 1; t >= t0; --t) {
          const int64_t j = t - t0;
          const T dt = dts[j], ut = u_c[t];
          T gy = dy_c[t];
          if (z_c) {
            const T zt = z_c[t], sg = sigmoid(zt);
            dz[i * L + t] = gy * (ys[j] + D_c * ut) * sg * (T(1) + zt * (T(1) - sg));
            gy *= zt * sg;
          }
          dD_c += gy * ut;
          const T* Bt = B_g + t * N;
          const T* Ct = C_g + t * N;
          T* dBt = dB_g + t * N;
          T* dCt = dC_g + t * N;
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
          du[i * L + t] = gy * D_c + dt * sum_gB;
          T dd = ut * sum_gB + sum_Aq;  // ∂L/∂Δ_t
          if (softplus) {
            const T raw = dl_c[t] + bias_c;
            dd *= raw > T(20) ? T(1) : sigmoid(raw);
          }
          ddelta[i * L + t] = dd;
          dbias_c += dd;
        }
      }
      std::copy(g, g + N, dh0 + i * N);  // a_0 g_0
      // D, bias and A are per channel, but a channel's batch elements may run on different
      // threads: their gradients are kept per (batch, channel) and summed over the batch
      dD[i] = dD_c;
      dbias[i] = dbias_c;
    }
  });
}

void check(const torch::Tensor& x, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(x.device().is_cpu(), "selective_scan_cpu: ", name, " must be a CPU tensor");
  TORCH_CHECK(x.scalar_type() == dtype, "selective_scan_cpu: ", name, " has dtype ", x.scalar_type(),
              ", expected ", dtype);
  TORCH_CHECK(x.is_contiguous(), "selective_scan_cpu: ", name, " must be contiguous");
}

template <typename T>
const T* maybe(const c10::optional<torch::Tensor>& x) {
  return x.has_value() ? x->data_ptr<T>() : nullptr;
}

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
  if (h0) check(*h0, "initial_state", u.scalar_type());
  auto y = torch::empty_like(u);
  auto last = torch::empty({s.batch, s.d, s.N}, u.options());
  const int64_t segments = segment > 0 ? (s.L + segment - 1) / segment : 0;
  auto checkpoints = torch::empty({s.batch, s.d, segments, s.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "selective_scan_cpu_forward", [&] {
    forward_impl<scalar_t>(s, u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                           B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), maybe<scalar_t>(D),
                           maybe<scalar_t>(z), maybe<scalar_t>(bias), softplus, maybe<scalar_t>(h0),
                           y.data_ptr<scalar_t>(), last.data_ptr<scalar_t>(),
                           segment > 0 ? checkpoints.data_ptr<scalar_t>() : nullptr, segment);
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
    backward_impl<scalar_t>(s, u.data_ptr<scalar_t>(), delta.data_ptr<scalar_t>(), A.data_ptr<scalar_t>(),
                            B.data_ptr<scalar_t>(), C.data_ptr<scalar_t>(), maybe<scalar_t>(D),
                            maybe<scalar_t>(z), maybe<scalar_t>(bias), softplus,
                            checkpoints.data_ptr<scalar_t>(), segment, dy.data_ptr<scalar_t>(),
                            maybe<scalar_t>(dlast), du.data_ptr<scalar_t>(), ddelta.data_ptr<scalar_t>(),
                            dA_batch.data_ptr<scalar_t>(), dB.data_ptr<scalar_t>(), dC.data_ptr<scalar_t>(),
                            dD.data_ptr<scalar_t>(), dz.data_ptr<scalar_t>(), dbias.data_ptr<scalar_t>(),
                            dh0.data_ptr<scalar_t>());
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
