//! Counting the GPU kernels a step launches.
//!
//! On a GPU a decode step of a model this small is bound by how many kernels it launches,
//! not by arithmetic, so the launch count per step is the figure that fused kernels and
//! speculation are judged by. It does not depend on the device's speed, so a count taken
//! on lavapipe holds for an H100. cubecl calls the observer on the issuing thread for
//! every launch, on any wgpu adapter; the CPU backend (flex) launches no kernels and
//! counts zero.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cubecl_runtime::logging::{LaunchObservation, LaunchObserver};

/// Kernel launches by kernel name, while a [`Watch`] is alive.
#[derive(Debug, Default)]
struct Tally(Mutex<HashMap<&'static str, usize>>);

impl LaunchObserver for Tally {
    fn launched(&self, kernel: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(kernel)
            .or_default() += 1;
    }
}

/// Counts every kernel launched from its creation until [`Watch::finish`].
#[derive(Debug)]
pub struct Watch {
    tally: Arc<Tally>,
    _observation: LaunchObservation,
}

impl Watch {
    /// Starts counting.
    pub fn start() -> Self {
        let tally = Arc::new(Tally::default());
        let observation = LaunchObservation::new(tally.clone());
        Self {
            tally,
            _observation: observation,
        }
    }

    /// Stops counting and returns the launches by kernel, most launched first.
    pub fn finish(self) -> Vec<(String, usize)> {
        let Self {
            tally,
            _observation,
        } = self;
        drop(_observation);
        let by_type = std::mem::take(&mut *tally.0.lock().unwrap_or_else(PoisonError::into_inner));
        // Kernels that differ only in generic arguments count as one.
        let mut by_name = HashMap::<String, usize>::new();
        for (name, n) in by_type {
            *by_name.entry(short_name(name)).or_default() += n;
        }
        let mut counts: Vec<(String, usize)> = by_name.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        counts
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
