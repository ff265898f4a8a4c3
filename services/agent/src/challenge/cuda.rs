//! The CUDA engine: the driver API loaded at run time (cudarc, dynamic loading), the PTX
//! kernels of `kernel.ptx` (embedded as text, JIT-compiled by the driver), C copied back to
//! the host. Where `libcuda.so` is absent every call fails with [`CudaError::NoDriver`]; the
//! agent builds and runs everywhere.
//!
//! This is the agent's only `unsafe` code: loading a shared library and launching kernels
//! are foreign calls. Each block says what it relies on.
#![allow(unsafe_code)]

use std::sync::Arc;
use std::time::Instant;

use capex_core::challenge::{ChallengeSpec, Matrix};
use cudarc::driver::{CudaContext, LaunchConfig, PushKernelArg};
use cudarc::nvrtc::Ptx;

use super::Timings;

/// The kernels, as PTX text (ISA 7.0, sm_61 and newer: `dp4a` needs sm_61).
pub const KERNEL_PTX: &str = include_str!("kernel.ptx");
/// Threads per block of the expand kernel.
const EXPAND_THREADS: u32 = 256;
/// C tile edge of one gemm block (16×16 threads, 4×4 elements each).
const GEMM_TILE: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("the CUDA driver (libcuda.so.1) is not installed or cannot be loaded")]
    NoDriver,
    #[error("no CUDA device has UUID {0}")]
    NoSuchGpu(String),
    #[error("CUDA call failed: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    #[error("the CUDA bindings panicked (a driver older than the bindings expect?): {0}")]
    Panicked(String),
}

/// Whether the CUDA driver library loads on this machine.
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names; nothing is called.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// A device's UUID in NVML's text form (`GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
pub fn format_uuid(bytes: &[u8; 16]) -> String {
    let hex = hex::encode(bytes);
    format!("GPU-{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// One CUDA device as the driver sees it.
#[derive(Debug, Clone)]
pub struct CudaDevice {
    pub ordinal: usize,
    pub uuid: String,
    pub name: String,
    pub compute_capability: (i32, i32),
}

/// Every CUDA device, or why there are none.
pub fn devices() -> Result<Vec<CudaDevice>, CudaError> {
    guarded(|| {
        let count = CudaContext::device_count()? as usize;
        let mut out = Vec::with_capacity(count);
        for ordinal in 0..count {
            let ctx = CudaContext::new(ordinal)?;
            let uuid = ctx.uuid()?;
            let bytes: [u8; 16] = uuid.bytes.map(|b| b as u8);
            out.push(CudaDevice {
                ordinal,
                uuid: format_uuid(&bytes),
                name: ctx.name()?,
                compute_capability: ctx.compute_capability()?,
            });
        }
        Ok(out)
    })
}

/// Runs `f` only if the driver loads, turning a panic inside the bindings (a missing
/// symbol in an old driver) into an error instead of a crash of the agent.
fn guarded<T>(f: impl FnOnce() -> Result<T, CudaError> + std::panic::UnwindSafe) -> Result<T, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    std::panic::catch_unwind(f).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(CudaError::Panicked(message))
    })
}

/// Computes C on the GPU with UUID `gpu_uuid` and copies it to the host (row-major), with
/// the time of each phase (`hash_ms` left at zero).
pub fn compute_c(spec: &ChallengeSpec, gpu_uuid: &str) -> Result<(Vec<i32>, Timings), CudaError> {
    let spec = *spec;
    let gpu_uuid = gpu_uuid.to_string();
    guarded(move || {
        let mut t = Timings::default();
        let device = devices()?.into_iter().find(|d| d.uuid == gpu_uuid).ok_or(CudaError::NoSuchGpu(gpu_uuid))?;
        let c = run_kernels(&spec, device.ordinal, &mut t)?;
        Ok((c, t))
    })
}

fn run_kernels(spec: &ChallengeSpec, ordinal: usize, t: &mut Timings) -> Result<Vec<i32>, CudaError> {
    let n = spec.n;
    let start = Instant::now();
    let ctx: Arc<CudaContext> = CudaContext::new(ordinal)?;
    let stream = ctx.default_stream();
    let module = ctx.load_module(Ptx::from_src(KERNEL_PTX))?;
    let expand = module.load_function("capex_expand")?;
    let gemm = module.load_function("capex_gemm")?;
    let words = n as usize * n as usize / 4;
    let mut a = stream.alloc_zeros::<u32>(words)?;
    let mut bt = stream.alloc_zeros::<u32>(words)?;
    let mut c = stream.alloc_zeros::<i32>(n as usize * n as usize)?;
    stream.synchronize()?;
    t.setup_ms = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let expand_cfg = LaunchConfig {
        grid_dim: ((words as u32).div_ceil(EXPAND_THREADS), 1, 1),
        block_dim: (EXPAND_THREADS, 1, 1),
        shared_mem_bytes: 0,
    };
    let (key_a, key_b) = (spec.matrix_key(Matrix::A), spec.matrix_key(Matrix::B));
    let (row_major, column_packed) = (0u32, 1u32);
    // SAFETY: the argument list matches `capex_expand(u64 out, u64 key, u32 n, u32
    // transposed)`; `out` holds n·n/4 words and the kernel writes only words below that.
    unsafe {
        stream.launch_builder(&expand).arg(&mut a).arg(&key_a).arg(&n).arg(&row_major).launch(expand_cfg)?;
        stream.launch_builder(&expand).arg(&mut bt).arg(&key_b).arg(&n).arg(&column_packed).launch(expand_cfg)?;
    }
    stream.synchronize()?;
    t.expand_ms = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let tiles = n / GEMM_TILE;
    let gemm_cfg = LaunchConfig { grid_dim: (tiles, tiles, 1), block_dim: (16, 16, 1), shared_mem_bytes: 0 };
    // SAFETY: matches `capex_gemm(u64 a, u64 bt, u64 c, u32 n)`; a and bt hold n·n/4 words,
    // c holds n·n i32, and the grid covers exactly n/64 × n/64 tiles (n is a multiple of 64).
    unsafe {
        stream.launch_builder(&gemm).arg(&a).arg(&bt).arg(&mut c).arg(&n).launch(gemm_cfg)?;
    }
    stream.synchronize()?;
    t.kernel_ms = start.elapsed().as_secs_f64() * 1e3;

    let start = Instant::now();
    let host = stream.clone_dtoh(&c)?;
    t.copy_ms = start.elapsed().as_secs_f64() * 1e3;
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_is_nvml_form() {
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8 * 17);
        assert_eq!(format_uuid(&bytes), "GPU-00112233-4455-6677-8899-aabbccddeeff");
    }

    #[test]
    fn ptx_declares_both_kernels_and_uses_dp4a() {
        assert!(KERNEL_PTX.contains(".visible .entry capex_expand("));
        assert!(KERNEL_PTX.contains(".visible .entry capex_gemm("));
        assert_eq!(KERNEL_PTX.lines().filter(|l| l.trim_start().starts_with("dp4a.s32.s32")).count(), 16);
        // The PRNG constants are the core's.
        assert!(KERNEL_PTX.contains(&format!("{:#X}U", capex_core::challenge::PRNG_GAMMA).replace("0X", "0x")));
    }

    /// Assembles the PTX with `ptxas` when one is on the PATH (or at `$CAPEX_PTXAS`), for
    /// the oldest and two current targets. Without one it checks nothing (and says so).
    #[test]
    fn ptx_assembles_where_ptxas_is_available() {
        let ptxas = std::env::var("CAPEX_PTXAS").unwrap_or_else(|_| "ptxas".into());
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("kernel.ptx");
        std::fs::write(&src, KERNEL_PTX).unwrap();
        for arch in ["sm_61", "sm_80", "sm_90"] {
            let out = dir.path().join(format!("{arch}.cubin"));
            let status =
                std::process::Command::new(&ptxas).arg(format!("-arch={arch}")).arg(&src).arg("-o").arg(&out).status();
            match status {
                Ok(status) => assert!(status.success(), "ptxas {arch} failed"),
                Err(_) => {
                    eprintln!("no ptxas found; set CAPEX_PTXAS to assemble the kernel");
                    return;
                }
            }
        }
    }

    #[test]
    fn without_a_driver_every_call_fails_cleanly() {
        if driver_present() {
            return;
        }
        let spec = ChallengeSpec::new([1; 32], 64).unwrap();
        assert!(matches!(devices(), Err(CudaError::NoDriver)));
        assert!(matches!(compute_c(&spec, "GPU-0"), Err(CudaError::NoDriver)));
    }
}
