//! The compute device: CPU by default; the first CUDA GPU when built with the `cuda` feature
//! (forwarded to candle's) and a GPU is present. The choice is made once, at first use, and
//! reported by [`describe`] (the runtime logs it at startup and lists it in `/v1/models`).

use std::sync::OnceLock;

use candle_core::Device;

/// The device models load on: CUDA GPU 0 with the `cuda` feature when one is usable, else CPU.
pub fn default_device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE.get_or_init(select).clone()
}

fn select() -> Device {
    #[cfg(feature = "cuda")]
    match Device::new_cuda(0) {
        Ok(device) => return device,
        Err(e) => {
            tracing::warn!(error = %e, "built with CUDA but no GPU is usable; using the CPU")
        }
    }
    Device::Cpu
}

/// A short name for logs and APIs: `cpu`, `cuda:N` or `metal`.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".into(),
        },
        Device::Metal(_) => "metal".into(),
    }
}

/// Whether this build can use a GPU at all (the `cuda` feature).
pub const fn gpu_support() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else {
        "none (CPU-only build; rebuild with --features cuda)"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cpu_builds_use_the_cpu() {
        if !cfg!(feature = "cuda") {
            assert_eq!(super::describe(&super::default_device()), "cpu");
        }
    }
}
