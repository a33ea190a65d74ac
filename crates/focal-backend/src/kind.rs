//! The backend chosen at run time.

use burn::tensor::backend::AutodiffBackend;
use std::fmt;
use std::str::FromStr;

/// A backend that Focal can run on, chosen at run time (e.g. by `focal --backend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// burn-ndarray on the CPU; always the default.
    NdArray,
    /// burn-wgpu: Vulkan, Metal, DirectX, or lavapipe on the CPU.
    Wgpu,
}

/// Why a backend cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// The name is not a backend Focal knows.
    #[error("unknown backend '{0}': expected one of ndarray, wgpu")]
    Unknown(String),
    /// The backend exists but this build was compiled without it.
    #[error("backend '{0}' is not enabled in this build (rebuild with the cargo feature '{0}')")]
    NotEnabled(BackendKind),
    /// wgpu found no adapter (no GPU driver, and no lavapipe / software Vulkan installed).
    #[error("wgpu could not start: {0}")]
    NoAdapter(String),
}

/// Generic code to run on the backend chosen at run time: what it returns.
///
/// Closures cannot be generic over a backend, so the CLI expresses each command as a type
/// implementing this trait and [`RunOn`] for every backend (one generic impl, with whatever
/// bounds the job needs, e.g. `impl<B: FusedAutodiffBackend> RunOn<B> for TrainJob`), and
/// hands it to [`BackendKind::run`]. The compiler then checks that each enabled backend meets
/// the job's bounds.
pub trait BackendJob {
    /// What the job returns.
    type Output;
}

/// A [`BackendJob`] for backend `B` (an autodiff backend, for training; its inner backend
/// serves inference).
pub trait RunOn<B: AutodiffBackend>: BackendJob {
    /// Runs the job on backend `B` and its device.
    fn run(self, device: B::Device) -> Self::Output;
}

/// A job that runs on every backend enabled in this build; implemented for every such job.
#[cfg(all(feature = "ndarray", feature = "wgpu"))]
pub trait RunsOnEnabled: RunOn<crate::NdArrayAutodiff> + RunOn<crate::WgpuAutodiff> {}
#[cfg(all(feature = "ndarray", feature = "wgpu"))]
impl<J: RunOn<crate::NdArrayAutodiff> + RunOn<crate::WgpuAutodiff>> RunsOnEnabled for J {}

/// A job that runs on every backend enabled in this build; implemented for every such job.
#[cfg(all(feature = "ndarray", not(feature = "wgpu")))]
pub trait RunsOnEnabled: RunOn<crate::NdArrayAutodiff> {}
#[cfg(all(feature = "ndarray", not(feature = "wgpu")))]
impl<J: RunOn<crate::NdArrayAutodiff>> RunsOnEnabled for J {}

/// A job that runs on every backend enabled in this build; implemented for every such job.
#[cfg(all(not(feature = "ndarray"), feature = "wgpu"))]
pub trait RunsOnEnabled: RunOn<crate::WgpuAutodiff> {}
#[cfg(all(not(feature = "ndarray"), feature = "wgpu"))]
impl<J: RunOn<crate::WgpuAutodiff>> RunsOnEnabled for J {}

/// A job that runs on every backend enabled in this build; implemented for every such job.
#[cfg(not(any(feature = "ndarray", feature = "wgpu")))]
pub trait RunsOnEnabled: BackendJob {}
#[cfg(not(any(feature = "ndarray", feature = "wgpu")))]
impl<J: BackendJob> RunsOnEnabled for J {}

impl BackendKind {
    /// Every backend, enabled or not.
    pub const ALL: [BackendKind; 2] = [BackendKind::NdArray, BackendKind::Wgpu];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::NdArray => "ndarray",
            BackendKind::Wgpu => "wgpu",
        }
    }

    /// Whether this build includes the backend (a `const fn`: [`crate::crate_checks!`] asks it
    /// at compile time).
    pub const fn is_enabled(self) -> bool {
        match self {
            BackendKind::NdArray => cfg!(feature = "ndarray"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The backends this build includes.
    pub fn enabled() -> Vec<BackendKind> {
        Self::ALL.into_iter().filter(|k| k.is_enabled()).collect()
    }

    /// Runs `job` on this backend's default device.
    ///
    /// For wgpu the adapter is set up first, so a machine without one gets
    /// [`BackendError::NoAdapter`] instead of a panic deep inside the runtime.
    pub fn run<J: RunsOnEnabled>(self, job: J) -> Result<J::Output, BackendError> {
        match self {
            #[cfg(feature = "ndarray")]
            BackendKind::NdArray => Ok(RunOn::<crate::NdArrayAutodiff>::run(
                job,
                Default::default(),
            )),
            #[cfg(feature = "wgpu")]
            BackendKind::Wgpu => {
                wgpu_adapter_info()?;
                Ok(RunOn::<crate::WgpuAutodiff>::run(job, Default::default()))
            }
            #[allow(unreachable_patterns)]
            other => Err(BackendError::NotEnabled(other)),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ndarray" | "cpu" => Ok(BackendKind::NdArray),
            "wgpu" => Ok(BackendKind::Wgpu),
            _ => Err(BackendError::Unknown(s.to_string())),
        }
    }
}

/// The wgpu adapter Focal runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgpuAdapterInfo {
    /// Adapter name, e.g. `llvmpipe (LLVM 15.0.6, 256 bits)` for lavapipe.
    pub name: String,
    /// Graphics API, e.g. `Vulkan`.
    pub api: String,
    /// Kind of device, e.g. `Cpu`, `DiscreteGpu`.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// The largest storage buffer the device binds, in bytes: no tensor can be larger (burn-wgpu
    /// panics on one that is). Mesa's lavapipe allows 128 MiB, most GPUs far more.
    pub max_buffer_bytes: u64,
}

impl fmt::Display for WgpuAdapterInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, {}, driver {})",
            self.name, self.api, self.device_type, self.driver
        )
    }
}

/// Sets up wgpu's default device (once per process) and describes its adapter.
///
/// Errors when this build lacks wgpu or when no adapter can be found.
pub fn wgpu_adapter_info() -> Result<WgpuAdapterInfo, BackendError> {
    #[cfg(feature = "wgpu")]
    {
        use std::sync::OnceLock;
        static SETUP: OnceLock<Result<WgpuAdapterInfo, BackendError>> = OnceLock::new();
        SETUP.get_or_init(setup_wgpu).clone()
    }
    #[cfg(not(feature = "wgpu"))]
    {
        Err(BackendError::NotEnabled(BackendKind::Wgpu))
    }
}

#[cfg(feature = "wgpu")]
fn setup_wgpu() -> Result<WgpuAdapterInfo, BackendError> {
    use burn::backend::wgpu::{RuntimeOptions, WgpuDevice, graphics::AutoGraphicsApi, init_setup};

    // The runtime panics when it finds no adapter; turn that into an error, without letting the
    // default hook print a backtrace hint over the user's terminal.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let setup = std::panic::catch_unwind(|| {
        init_setup::<AutoGraphicsApi>(&WgpuDevice::default(), RuntimeOptions::default())
    });
    std::panic::set_hook(hook);

    let setup = setup.map_err(|payload| {
        let reason = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no adapter found".to_string());
        BackendError::NoAdapter(reason.lines().next().unwrap_or_default().to_string())
    })?;
    let info = setup.adapter.get_info();
    Ok(WgpuAdapterInfo {
        name: info.name,
        api: format!("{:?}", info.backend),
        device_type: format!("{:?}", info.device_type),
        driver: format!("{} {}", info.driver, info.driver_info)
            .trim()
            .to_string(),
        max_buffer_bytes: setup.device.limits().max_storage_buffer_binding_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_names_and_refuses_others() {
        assert_eq!("ndarray".parse::<BackendKind>(), Ok(BackendKind::NdArray));
        assert_eq!("WGPU".parse::<BackendKind>(), Ok(BackendKind::Wgpu));
        let err = "cuda".parse::<BackendKind>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown backend 'cuda': expected one of ndarray, wgpu"
        );
    }

    #[test]
    fn ndarray_is_enabled_by_default() {
        assert!(BackendKind::enabled().contains(&BackendKind::NdArray));
    }

    struct ParamCount;
    impl BackendJob for ParamCount {
        type Output = usize;
    }
    impl<B: AutodiffBackend> RunOn<B> for ParamCount {
        fn run(self, device: B::Device) -> usize {
            let x = burn::tensor::Tensor::<B, 2>::ones([2, 3], &device);
            x.shape().num_elements()
        }
    }

    #[test]
    fn runs_a_generic_job_on_ndarray() {
        assert_eq!(BackendKind::NdArray.run(ParamCount), Ok(6));
    }
}
