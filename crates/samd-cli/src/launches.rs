//! Counting the GPU kernels a step launches, and timing each on the device.
//!
//! On a GPU a decode step of a model this small is bound by how many kernels it launches,
//! not by arithmetic, so the launch count per step is the figure that fused kernels and
//! speculation are judged by. It does not depend on the device's speed, so a count taken
//! on lavapipe holds for an H100. cubecl calls the observer on the issuing thread for
//! every launch, on any wgpu adapter; the CPU backend (flex) launches no kernels and
//! counts zero.
//!
//! A timed watch also asks cubecl to bracket each launch with device timestamps (wgpu's
//! timestamp queries), read only once the step is done, so the kernels still run back
//! to back; their sum against their span shows how long the device waited on the host.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use burn::tensor::read_sync;
use cubecl_runtime::logging::{
    LaunchObservation, LaunchObserver, ProfileDuration, ProfileTicks, TimingMethod, TimingRequest,
};

/// Kernel launches by kernel name, and their measurements when timing was asked for,
/// while a [`Watch`] is alive.
#[derive(Default)]
struct Tally {
    counts: Mutex<HashMap<&'static str, usize>>,
    timing: TimingRequest,
    /// Unread device measurements (the pipelined case).
    pending: Mutex<Vec<(&'static str, ProfileDuration)>>,
    /// Measurements the launch path read itself (when cubecl's profiling logger is on).
    read: Mutex<Vec<(&'static str, Duration)>>,
}

impl LaunchObserver for Tally {
    fn launched(&self, kernel: &'static str) {
        *lock(&self.counts).entry(kernel).or_default() += 1;
    }

    fn timing(&self) -> TimingRequest {
        self.timing
    }

    fn profiled(&self, kernel: &'static str, profile: ProfileDuration) {
        lock(&self.pending).push((kernel, profile));
    }

    fn timed(&self, kernel: &'static str, duration: Duration, _method: TimingMethod) {
        lock(&self.read).push((kernel, duration));
    }
}

/// The lock, also after a panic elsewhere: the tallies stay usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One kernel's launches in a watched stretch, and their device time when timed.
#[derive(Debug)]
pub struct KernelLaunches {
    pub name: String,
    pub count: usize,
    /// Summed device time of its launches (zero when not timed).
    pub device: Duration,
}

/// Where a timed stretch spent its device time.
#[derive(Debug)]
pub struct DeviceTimes {
    /// Every kernel's device time, summed.
    pub busy: Duration,
    /// From the first kernel's start to the last one's end: `span - busy` is the time the
    /// device sat idle between kernels, waiting on the host.
    pub span: Duration,
    /// Launches whose measurement never came back.
    pub unmeasured: usize,
}

/// Counts every kernel launched from its creation until [`Watch::finish`], and with
/// [`Watch::start_timed`] also measures each on the device.
pub struct Watch {
    tally: Arc<Tally>,
    /// Before any launch it sees, with a margin: device timestamps are mapped onto the
    /// host's clock, and a mapping that runs a little early must not underflow.
    epoch: Instant,
    _observation: LaunchObservation,
}

impl Watch {
    /// Starts counting.
    pub fn start() -> Self {
        Self::with(TimingRequest::None)
    }

    /// Starts counting and timing. Kernels still run back to back: measurements are read
    /// only at [`Watch::finish`], after the work is done.
    pub fn start_timed() -> Self {
        Self::with(TimingRequest::Deferred)
    }

    fn with(timing: TimingRequest) -> Self {
        let tally = Arc::new(Tally {
            timing,
            ..Tally::default()
        });
        let observation = LaunchObservation::new(tally.clone());
        let now = Instant::now();
        Self {
            tally,
            epoch: now.checked_sub(Duration::from_secs(1)).unwrap_or(now),
            _observation: observation,
        }
    }

    /// Stops counting and returns the launches by kernel, most device time (then most
    /// launched) first, with the device times when the watch was timed.
    pub fn finish(self) -> (Vec<KernelLaunches>, Option<DeviceTimes>) {
        let Self {
            tally,
            epoch,
            _observation,
        } = self;
        drop(_observation);
        let counts = std::mem::take(&mut *lock(&tally.counts));
        let mut read = std::mem::take(&mut *lock(&tally.read));
        let pending = std::mem::take(&mut *lock(&tally.pending));
        let mut ticks: Vec<ProfileTicks> = Vec::new();
        let mut unmeasured = 0;
        for (kernel, profile) in pending {
            match read_sync(profile.resolve()) {
                Some(t) => {
                    read.push((kernel, t.duration()));
                    ticks.push(t);
                }
                None => unmeasured += 1,
            }
        }
        // Kernels that differ only in generic arguments count as one.
        let mut by_name = HashMap::<String, KernelLaunches>::new();
        for (kernel, count) in counts {
            let name = short_name(kernel);
            by_name
                .entry(name.clone())
                .or_insert(KernelLaunches {
                    name,
                    count: 0,
                    device: Duration::ZERO,
                })
                .count += count;
        }
        let mut busy = Duration::ZERO;
        for (kernel, duration) in read {
            busy += duration;
            if let Some(k) = by_name.get_mut(&short_name(kernel)) {
                k.device += duration;
            }
        }
        let times = (tally.timing != TimingRequest::None).then(|| DeviceTimes {
            busy,
            span: span(&ticks, epoch),
            unmeasured,
        });
        let mut kernels: Vec<KernelLaunches> = by_name.into_values().collect();
        kernels.sort_by(|a, b| (b.device, b.count, &a.name).cmp(&(a.device, a.count, &b.name)));
        (kernels, times)
    }
}

/// From the earliest start to the latest end of `ticks` (zero when there are none), read
/// against `epoch`, an instant before all of them.
fn span(ticks: &[ProfileTicks], epoch: Instant) -> Duration {
    let first = ticks.iter().map(|t| t.start_duration_since(epoch)).min();
    let last = ticks.iter().map(|t| t.end_duration_since(epoch)).max();
    match (first, last) {
        (Some(first), Some(last)) => last.saturating_sub(first),
        _ => Duration::ZERO,
    }
}

/// `burn_cubecl::kernel::binary::kernel_binop::KernelBinop<…>` → `KernelBinop`: the
/// type's own name, without its path or generic arguments. Our WGSL kernels are all
/// `SourceKernel<WgslKernel<Shader>>`, so wrappers give way to what they wrap.
fn short_name(full: &str) -> String {
    let (head, args) = full.split_once('<').unwrap_or((full, ""));
    let name = head.rsplit("::").next().unwrap_or(head);
    match name {
        "SourceKernel" | "WgslKernel" if !args.is_empty() => {
            short_name(args.strip_suffix('>').unwrap_or(args))
        }
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::short_name;

    #[test]
    fn short_names_drop_path_and_generics() {
        assert_eq!(
            short_name("burn_cubecl::kernel::binary::kernel_binop::KernelBinop<f32, Add>"),
            "KernelBinop"
        );
        assert_eq!(short_name("plain"), "plain");
        assert_eq!(
            short_name(
                "burn_cubecl::template::base::SourceKernel<\
                 samd_model::kernels::WgslKernel<samd_model::kernels::StoreKv>>"
            ),
            "StoreKv"
        );
    }
}
