//! Timing and peak-memory measurement shared by every benchmark.

pub use focal::backend::format_bytes;
use peak_alloc::PeakAlloc;
use serde::Serialize;
use std::time::{Duration, Instant};

/// Counts every heap allocation of the process, so that a benchmark can report the peak bytes
/// one operation allocated (exact for ndarray, whose tensors live on the heap; on wgpu the
/// tensors live in device memory and only host-side bookkeeping is counted).
#[global_allocator]
static ALLOCATOR: PeakAlloc = PeakAlloc;

/// One measured operation.
#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Median wall-clock seconds of one run, over the timed runs after the warm-up.
    pub seconds: f64,
    /// Timed runs behind the median.
    pub runs: usize,
    /// Most bytes allocated at once during the first run, above what was allocated before it.
    pub peak_bytes: usize,
}

/// Runs `f` once untimed, as a warm-up that also measures its peak memory, then again until
/// `budget` is spent (at least once, at most 25 times), and reports the median time of the
/// timed runs.
///
/// The warm-up takes what only the first call pays: on wgpu the compilation of its kernels for
/// these shapes (which can be a thousand times the run itself on lavapipe), on ndarray
/// first-touch page faults and the allocator's growth.
///
/// `f` must finish its work before returning (read its result back), so that asynchronous
/// backends are timed fully.
pub fn measure(budget: Duration, mut f: impl FnMut()) -> Measurement {
    let before = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    f();
    let peak_bytes = ALLOCATOR.peak_usage().saturating_sub(before);

    let mut times = Vec::new();
    let started = Instant::now();
    while times.len() < 25 && (times.is_empty() || started.elapsed() < budget) {
        let run = Instant::now();
        f();
        times.push(run.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Measurement {
        seconds: times[times.len() / 2],
        runs: times.len(),
        peak_bytes,
    }
}

/// `r` with two significant digits at least, and a `×`: `0.00071×`, `0.31×`, `4.00×`, `97×`.
pub fn format_ratio(r: f64) -> String {
    if !r.is_finite() || r <= 0.0 {
        return format!("{r}×");
    }
    if r >= 10.0 {
        return format!("{r:.0}×");
    }
    let decimals = (1 - r.log10().floor() as i32).max(2) as usize;
    format!("{r:.decimals$}×")
}

/// `0.0123` → `"12.3 ms"`.
pub fn format_seconds(seconds: f64) -> String {
    if seconds >= 1.0 {
        format!("{seconds:.2} s")
    } else if seconds >= 1e-3 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{:.0} µs", seconds * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_sizes_and_times() {
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(3 << 30), "3.0 GiB");
        assert_eq!(format_seconds(2.5), "2.50 s");
        assert_eq!(format_seconds(0.0123), "12.3 ms");
        assert_eq!(format_seconds(0.000_045), "45 µs");
        assert_eq!(format_ratio(4.0), "4.00×");
        assert_eq!(format_ratio(0.31), "0.31×");
        assert_eq!(format_ratio(0.000_71), "0.00071×");
        assert_eq!(format_ratio(97.2), "97×");
    }

    #[test]
    fn counts_the_peak_of_one_run() {
        let m = measure(Duration::from_millis(1), || {
            let v = vec![1u8; 1 << 20];
            std::hint::black_box(&v);
        });
        assert!(m.peak_bytes >= 1 << 20, "peak {} bytes", m.peak_bytes);
        assert!(m.runs >= 1);
    }

    #[test]
    fn the_first_run_is_not_timed() {
        let mut calls = 0;
        let m = measure(Duration::ZERO, || {
            calls += 1;
            // Only the first call is slow, as a kernel compiled on first use.
            if calls == 1 {
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        assert_eq!((calls, m.runs), (2, 1));
        assert!(m.seconds < 0.025, "the warm-up was timed: {} s", m.seconds);
    }
}
