//! Element-wise hot loops (optimizer updates, activations, bias, dropout) compiled twice: once for the
//! baseline target and once for AVX2+FMA, picked at run time; plus flush-to-zero control.
//!
//! The loops only use `+ - * / sqrt`, never `mul_add`, so both builds give bit-identical results and a
//! training run does not depend on the CPU it resumes on.

/// Defines `pub fn $name` that runs an AVX2 build of `$body` when the CPU has it.
macro_rules! simd_fn {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2($($arg: $ty),*) { generic($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has the features `avx2` was compiled for.
                return unsafe { avx2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}

simd_fn! {
    /// Keras 3 Adam step: `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`, `w -= alpha m / (sqrt v + eps)`.
    pub fn adam(w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], alpha: f32, b1: f32, b2: f32, eps: f32) {
        let (c1, c2) = (1.0 - b1, 1.0 - b2);
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *m += (g - *m) * c1;
            *v += (g * g - *v) * c2;
            *w -= alpha * *m / (v.sqrt() + eps);
        }
    }
}

simd_fn! {
    /// Plain SGD: `w -= lr g`.
    pub fn sgd(w: &mut [f32], g: &[f32], lr: f32) {
        for (w, &g) in w.iter_mut().zip(g) {
            *w -= lr * g;
        }
    }
}

simd_fn! {
    /// Keras 3 SGD with momentum: `m = mu m - lr g`, then `w += m` or, with Nesterov, `w += mu m - lr g`.
    pub fn sgd_momentum(w: &mut [f32], g: &[f32], m: &mut [f32], lr: f32, mu: f32, nesterov: bool) {
        if nesterov {
            for ((w, &g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                *m = mu * *m - lr * g;
                *w += mu * *m - lr * g;
            }
        } else {
            for ((w, &g), m) in w.iter_mut().zip(g).zip(m.iter_mut()) {
                *m = mu * *m - lr * g;
                *w += *m;
            }
        }
    }
}

simd_fn! {
    /// Keras 3 Adagrad: `acc += g^2`, `w -= lr g / sqrt(acc + eps)`.
    pub fn adagrad(w: &mut [f32], g: &[f32], acc: &mut [f32], lr: f32, eps: f32) {
        for ((w, &g), a) in w.iter_mut().zip(g).zip(acc.iter_mut()) {
            *a += g * g;
            *w -= lr * g / (*a + eps).sqrt();
        }
    }
}

simd_fn! {
    /// Keras 3 RMSprop without momentum: `v = rho v + (1 - rho) g^2`, `w -= lr g / sqrt(v + eps)`.
    pub fn rmsprop(w: &mut [f32], g: &[f32], vel: &mut [f32], lr: f32, rho: f32, eps: f32) {
        for ((w, &g), v) in w.iter_mut().zip(g).zip(vel.iter_mut()) {
            *v = rho * *v + (1.0 - rho) * g * g;
            *w -= lr * g / (*v + eps).sqrt();
        }
    }
}

simd_fn! {
    /// Keras 3 RMSprop with momentum: as [`rmsprop`] but `m = mu m + increment`, `w -= m`.
    pub fn rmsprop_momentum(w: &mut [f32], g: &[f32], vel: &mut [f32], mom: &mut [f32], lr: f32, rho: f32, mu: f32, eps: f32) {
        for (((w, &g), v), m) in w.iter_mut().zip(g).zip(vel.iter_mut()).zip(mom.iter_mut()) {
            *v = rho * *v + (1.0 - rho) * g * g;
            *m = mu * *m + lr * g / (*v + eps).sqrt();
            *w -= *m;
        }
    }
}

simd_fn! {
    /// `y = max(y, 0)` in place.
    pub fn relu(y: &mut [f32]) {
        for y in y.iter_mut() {
            *y = if *y > 0.0 { *y } else { 0.0 };
        }
    }
}

simd_fn! {
    /// `dy *= (y > 0)`: the relu derivative, from the activated output.
    pub fn relu_backward(dy: &mut [f32], y: &[f32]) {
        for (d, &y) in dy.iter_mut().zip(y) {
            *d = if y > 0.0 { *d } else { 0.0 };
        }
    }
}

simd_fn! {
    /// `out += a * row`: one input feature's contribution in the single-row predict path.
    pub fn axpy(out: &mut [f32], a: f32, row: &[f32]) {
        for (o, &r) in out.iter_mut().zip(row) {
            *o += a * r;
        }
    }
}

simd_fn! {
    /// `y += b` for one row.
    pub fn add(y: &mut [f32], b: &[f32]) {
        for (y, &b) in y.iter_mut().zip(b) {
            *y += b;
        }
    }
}

simd_fn! {
    /// `y = x * m` (dropout with a precomputed mask of 0 or 1/(1 - rate)).
    pub fn mul_into(y: &mut [f32], x: &[f32], m: &[f32]) {
        for ((y, &x), &m) in y.iter_mut().zip(x).zip(m) {
            *y = x * m;
        }
    }
}

/// MXCSR bits: flush-to-zero (15) and denormals-are-zero (6).
#[cfg(target_arch = "x86_64")]
const FTZ_DAZ: u32 = 0x8040;

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr only stores the SSE control register into the given 4 bytes.
    unsafe { std::arch::asm!("stmxcsr [{p}]", p = in(reg) &mut csr, options(nostack, preserves_flags)) };
    csr
}

#[cfg(target_arch = "x86_64")]
fn write_mxcsr(csr: u32) {
    // SAFETY: ldmxcsr with a value derived from the current register only toggles FTZ/DAZ.
    unsafe {
        std::arch::asm!("ldmxcsr [{p}]", p = in(reg) &csr, options(nostack, readonly, preserves_flags))
    };
}

/// Turns on flush-to-zero and denormals-are-zero for the calling thread, for good.
///
/// Adam's moments for weights whose gradient is zero (dead relu units) decay into denormal floats,
/// which are about 100x slower; training threads should run with this on. [`crate::nn::Trainer`]
/// turns it on for the duration of each epoch by itself.
pub fn enable_flush_to_zero() {
    #[cfg(target_arch = "x86_64")]
    write_mxcsr(read_mxcsr() | FTZ_DAZ);
}

/// Flush-to-zero for a scope: restores the thread's previous mode when dropped.
pub(crate) struct FlushToZero {
    #[cfg(target_arch = "x86_64")]
    previous: u32,
}

impl FlushToZero {
    pub(crate) fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let previous = read_mxcsr();
            write_mxcsr(previous | FTZ_DAZ);
            FlushToZero { previous }
        }
        #[cfg(not(target_arch = "x86_64"))]
        FlushToZero {}
    }
}

impl Drop for FlushToZero {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        write_mxcsr(self.previous);
    }
}
