//! The backend layer of Focal.
//!
//! Everything above this crate is generic over burn's [`Backend`](burn::tensor::backend::Backend)
//! trait; this crate is the one place that names concrete backends. It provides:
//!
//! - aliases for the CPU (`NdArray`, feature `ndarray`) and GPU (`Wgpu`, feature `wgpu`) backends
//!   and their autodiff forms;
//! - [`BackendKind`], the backend chosen at run time (`ndarray` or `wgpu`), and
//!   [`BackendKind::run`], which runs one generic [`BackendJob`] on it (the job states its own
//!   backend bounds through [`RunOn`]);
//! - [`backend_tests!`], which expands one generic test into one `#[test]` per enabled backend;
//! - [`assert_close`] / [`assert_data_close`], tolerance asserts that explain a mismatch;
//! - [`seed`], deterministic seeding of a backend and of a host-side random generator;
//! - [`ConfigError`], the error every layer's config returns when it is refused;
//! - [`math`], the host and tensor math shared by heads, pipelines and interpretation
//!   (read-back, softmax, log-softmax, argmax, masked mean pooling, ℓ2 normalisation).

mod assert;
mod config_error;
pub mod files;
mod kind;
pub mod math;
mod testing;

pub use assert::{Tolerance, assert_close, assert_data_close, compare_data};
pub use config_error::{ConfigError, checked_product, format_bytes, machine_memory};
pub use files::{FileError, recover_dir, write_atomic, write_dir_atomic};
pub use kind::{
    BackendError, BackendJob, BackendKind, RunOn, RunsOnEnabled, WgpuAdapterInfo, wgpu_adapter_info,
};
pub use testing::seed;

/// The CPU backend: burn-ndarray with `f32` floats.
#[cfg(feature = "ndarray")]
pub type NdArray = burn::backend::NdArray<f32>;
/// [`NdArray`] with automatic differentiation, used for training.
#[cfg(feature = "ndarray")]
pub type NdArrayAutodiff = burn::backend::Autodiff<NdArray>;
/// The device of the CPU backend.
#[cfg(feature = "ndarray")]
pub type NdArrayDevice = burn::backend::ndarray::NdArrayDevice;

/// The GPU backend: burn-wgpu (Vulkan, Metal, DirectX or lavapipe on the CPU) with `f32` floats.
#[cfg(feature = "wgpu")]
pub type Wgpu = burn::backend::Wgpu<f32, i32>;
/// [`Wgpu`] with automatic differentiation, used for training.
#[cfg(feature = "wgpu")]
pub type WgpuAutodiff = burn::backend::Autodiff<Wgpu>;
/// The device of the GPU backend.
#[cfg(feature = "wgpu")]
pub type WgpuDevice = burn::backend::wgpu::WgpuDevice;

/// Expands its input only when the `wgpu` feature of `focal-backend` is enabled.
///
/// The `cfg` is evaluated in this crate, so callers (tests comparing backends, the test macro)
/// need no feature of their own: whatever enables wgpu in the build enables their code.
#[cfg(feature = "wgpu")]
#[macro_export]
macro_rules! if_wgpu {
    ($($item:tt)*) => { $($item)* };
}

/// Expands its input only when the `wgpu` feature of `focal-backend` is enabled.
///
/// The `cfg` is evaluated in this crate, so callers (tests comparing backends, the test macro)
/// need no feature of their own: whatever enables wgpu in the build enables their code.
#[cfg(not(feature = "wgpu"))]
#[macro_export]
macro_rules! if_wgpu {
    ($($item:tt)*) => {};
}

/// Expands its input only when the `ndarray` feature of `focal-backend` is enabled.
#[cfg(feature = "ndarray")]
#[macro_export]
macro_rules! if_ndarray {
    ($($item:tt)*) => { $($item)* };
}

/// Expands its input only when the `ndarray` feature of `focal-backend` is enabled.
#[cfg(not(feature = "ndarray"))]
#[macro_export]
macro_rules! if_ndarray {
    ($($item:tt)*) => {};
}

/// A compile-time check that a crate's own `ndarray` and `wgpu` features reach
/// focal-backend's, where the backends are switched on: with the crate's feature on and the
/// backend off, the crate does not compile, and the error says which feature to forward.
///
/// Every crate above focal-backend forwards its backend features down; a crate that stopped
/// forwarding one would still build, with its backend code and tests quietly compiled out. In
/// the workspace another crate's features can hide that (cargo unifies them), which is why
/// `cargo xtask test-crates` builds each crate alone, where `cargo check` is enough to see it.
/// The `cfg!`s are evaluated in the crate that expands the macro.
///
/// ```
/// focal_backend::forwarded_features_check!();
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! forwarded_features_check {
    () => {
        const _: () = assert!(
            !cfg!(feature = "ndarray") || $crate::BackendKind::NdArray.is_enabled(),
            concat!(
                env!("CARGO_PKG_NAME"),
                " has its ndarray feature on, but focal-backend's is off: forward it \
                 (ndarray = [\"focal-backend/ndarray\", …] in its Cargo.toml)"
            )
        );
        const _: () = assert!(
            !cfg!(feature = "wgpu") || $crate::BackendKind::Wgpu.is_enabled(),
            concat!(
                env!("CARGO_PKG_NAME"),
                " has its wgpu feature on, but focal-backend's is off: forward it \
                 (wgpu = [\"focal-backend/wgpu\", …] in its Cargo.toml)"
            )
        );
    };
}

/// What every crate of Focal checks about itself, expanded once at the root of its `lib.rs`:
///
/// - [`forwarded_features_check!`]: its `ndarray` and `wgpu` features reach focal-backend's
///   (checked when it compiles);
/// - the example of its `README.md` (its crates.io page) is compiled, and run unless marked
///   `no_run`, by `cargo test --doc` (as the doc of a `#[cfg(doctest)]` item, `ReadmeExample`;
///   rustdoc names it after this macro's file, under the heading `Doc-tests <crate>`).
#[macro_export]
macro_rules! crate_checks {
    () => {
        $crate::forwarded_features_check!();

        /// The example of this crate's README (its page on crates.io), compiled by `cargo test
        /// --doc`.
        #[cfg(doctest)]
        #[doc = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))]
        pub struct ReadmeExample;
    };
}

/// Turns generic test functions into one `#[test]` per enabled backend.
///
/// Each named function must have the signature `fn name<B: Backend>(device: &B::Device)`. For
/// every name the macro creates a module of the same name holding `#[test] fn ndarray()` and,
/// when the `wgpu` feature is on, `#[test] fn wgpu()`; so a test shows up as
/// `path::name::ndarray` and `path::name::wgpu`, and `cargo test -- wgpu` selects the wgpu
/// runs (tests that compare backends put `wgpu` in their names too). A test that needs gradients wraps the backend itself (`Autodiff<B>`).
///
/// ```
/// use burn::tensor::{Tensor, backend::Backend};
///
/// fn adds<B: Backend>(device: &B::Device) {
///     let x = Tensor::<B, 1>::from_floats([1.0, 2.0], device);
///     focal_backend::assert_close(x.clone() + x, Tensor::from_floats([2.0, 4.0], device), 1e-6);
/// }
///
/// focal_backend::backend_tests!(adds);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            #[allow(non_snake_case)]
            mod $name {
                $crate::if_ndarray! {
                    #[test]
                    fn ndarray() {
                        super::$name::<$crate::NdArray>(&::core::default::Default::default());
                    }
                }
                $crate::if_wgpu! {
                    #[test]
                    fn wgpu() {
                        super::$name::<$crate::Wgpu>(&::core::default::Default::default());
                    }
                }
            }
        )+
    };
}

crate_checks!();
