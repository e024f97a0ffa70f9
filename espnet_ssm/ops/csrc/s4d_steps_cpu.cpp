// S4D on a short streaming chunk on the CPU: the diagonal recurrence frame by frame, one fused
// loop per (batch, channel), vectorised over the modes, parallel over batch x channels. The maths
// and layouts are those of espnet_ssm.ops.s4d_kernel.s4d_planar_steps (its reference):
//
//   x_t[n] = Ā[n] x_{t-1}[n] + B̄[n] u_t,   y_t = Re(Σ_n C[n] x_t[n]) + D u_t,
//
// complex modes on planar (real, imaginary) arrays: Ā, B̄, C (2, H, N), state (B, 2, H, N);
// real modes: Ā, B̄, C (H, N), state (B, H, N); u, y (B, l, H); D (H,) or none.
//
// Registered as the torch operator espnet_ssm::s4d_planar_steps (CPU), so that a traced chunk
// step (espnet_ssm.encoders.chunk_capture) records it like any other operation. At 160 ms a
// chunk holds 4 frames, and the same steps as PyTorch operations cost ten calls per frame.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cstdint>
#include <tuple>

namespace {

template <typename T>
void complex_steps(const T* u, const T* state, const T* dA, const T* dB, const T* C, const T* D,
                   int64_t batch, int64_t l, int64_t H, int64_t N, T* y, T* out) {
  const int64_t plane = H * N;  // one (H, N) plane of the (2, H, N) weights
  at::parallel_for(0, batch * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* ar = dA + h * N;
      const T* ai = ar + plane;
      const T* br = dB + h * N;
      const T* bi = br + plane;
      const T* cr = C + h * N;
      const T* ci = cr + plane;
      const T* s_in = state + b * 2 * plane + h * N;
      T* sr = out + b * 2 * plane + h * N;
      T* si = sr + plane;
      for (int64_t n = 0; n < N; ++n) {
        sr[n] = s_in[n];
        si[n] = s_in[n + plane];
      }
      for (int64_t t = 0; t < l; ++t) {
        const T ut = u[(b * l + t) * H + h];
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          const T r = ar[n] * sr[n] - ai[n] * si[n] + br[n] * ut;
          const T i = ar[n] * si[n] + ai[n] * sr[n] + bi[n] * ut;
          sr[n] = r;
          si[n] = i;
          acc += cr[n] * r - ci[n] * i;  // Re(C x)
        }
        y[(b * l + t) * H + h] = D ? acc + D[h] * ut : acc;
      }
    }
  });
}

template <typename T>
void real_steps(const T* u, const T* state, const T* dA, const T* dB, const T* C, const T* D,
                int64_t batch, int64_t l, int64_t H, int64_t N, T* y, T* out) {
  at::parallel_for(0, batch * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / H, h = bh % H;
      const T* a = dA + h * N;
      const T* bb = dB + h * N;
      const T* c = C + h * N;
      T* s = out + (b * H + h) * N;
      const T* s_in = state + (b * H + h) * N;
      for (int64_t n = 0; n < N; ++n) s[n] = s_in[n];
      for (int64_t t = 0; t < l; ++t) {
        const T ut = u[(b * l + t) * H + h];
        T acc = 0;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; ++n) {
          s[n] = a[n] * s[n] + bb[n] * ut;
          acc += c[n] * s[n];
        }
        y[(b * l + t) * H + h] = D ? acc + D[h] * ut : acc;
      }
    }
  });
}

std::tuple<at::Tensor, at::Tensor> s4d_planar_steps(
    const at::Tensor& u, const at::Tensor& state, const at::Tensor& dA, const at::Tensor& dB,
    const at::Tensor& C, const c10::optional<at::Tensor>& D) {
  const bool planar = dA.dim() == 3;
  TORCH_CHECK(u.dim() == 3, "s4d_planar_steps: u must be (B, l, H)");
  TORCH_CHECK(planar ? dA.size(0) == 2 : dA.dim() == 2,
              "s4d_planar_steps: dA must be (2, H, N) planes or (H, N)");
  const int64_t batch = u.size(0), l = u.size(1), H = u.size(2), N = dA.size(-1);
  TORCH_CHECK(dA.size(-2) == H, "s4d_planar_steps: dA has ", dA.size(-2), " channels, u ", H);
  TORCH_CHECK(dB.sizes() == dA.sizes() && C.sizes() == dA.sizes(),
              "s4d_planar_steps: dA, dB and C must have the same shape");
  if (planar) {
    TORCH_CHECK(state.dim() == 4 && state.size(0) == batch && state.size(1) == 2 &&
                    state.size(2) == H && state.size(3) == N,
                "s4d_planar_steps: state must be (B, 2, H, N)");
  } else {
    TORCH_CHECK(state.dim() == 3 && state.size(0) == batch && state.size(1) == H &&
                    state.size(2) == N,
                "s4d_planar_steps: state must be (B, H, N)");
  }
  const bool has_d = D.has_value() && D->defined();
  if (has_d) TORCH_CHECK(D->dim() == 1 && D->size(0) == H, "s4d_planar_steps: D must be (H,)");
  const auto dtype = u.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble,
              "s4d_planar_steps: float32 or float64 tensors");
  for (const at::Tensor* t : {&state, &dA, &dB, &C}) {
    TORCH_CHECK(t->scalar_type() == dtype, "s4d_planar_steps: all tensors must share u's dtype");
  }
  auto uc = u.contiguous(), sc = state.contiguous(), ac = dA.contiguous(), bc = dB.contiguous(),
       cc = C.contiguous();
  at::Tensor dc = has_d ? D->to(dtype).contiguous() : at::Tensor();
  auto y = at::empty({batch, l, H}, u.options());
  auto out = at::empty_like(sc);
  AT_DISPATCH_FLOATING_TYPES(dtype, "s4d_planar_steps", [&] {
    const scalar_t* d_ptr = has_d ? dc.data_ptr<scalar_t>() : nullptr;
    auto run = planar ? complex_steps<scalar_t> : real_steps<scalar_t>;
    run(uc.data_ptr<scalar_t>(), sc.data_ptr<scalar_t>(), ac.data_ptr<scalar_t>(),
        bc.data_ptr<scalar_t>(), cc.data_ptr<scalar_t>(), d_ptr, batch, l, H, N,
        y.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return {y, out};
}

}  // namespace

TORCH_LIBRARY(espnet_ssm, m) {
  m.def("s4d_planar_steps(Tensor u, Tensor state, Tensor dA, Tensor dB, Tensor C, Tensor? D)"
        " -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(espnet_ssm, CPU, m) { m.impl("s4d_planar_steps", &s4d_planar_steps); }
