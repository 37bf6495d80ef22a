//! Our kernels and replayed step graphs under Vulkan's validation layer (Khronos), with
//! its synchronisation checks on.
//!
//! lavapipe runs a command buffer's dispatches one after another, so a missing barrier
//! between two kernels, or SPIR-V (naga's, from our WGSL) that a stricter driver would
//! refuse, passes unnoticed there and fails only on a real GPU, which this project's
//! test machines lack. The layer reports both: it validates every shader module and
//! tracks every buffer access between dispatches. Any error or warning fails the test.
//!
//! The layer comes from Debian's `vulkan-validationlayers` (scripts/setup-system.sh).
//! Without a Vulkan adapter the test prints why and passes, as the other wgpu tests do;
//! with an adapter but no layer it fails, since its check would not have run.

mod common;
#[path = "common/scenarios.rs"]
mod scenarios;

use std::path::{Path, PathBuf};

use burn::tensor::read_sync;
use common::wgpu_device;
use samd_model::kernel_check::check_kernels;
use samd_model::{Llama, LlamaConfig};
use scenarios::assert_replays_match_launches;

/// The layer's line when it starts, proof that it ran.
const LAYER_ACTIVE: &str = "Khronos Validation Layer Active";

#[test]
fn kernels_and_replayed_steps_pass_vulkan_validation() {
    let log = ValidationLog::enable();
    let Some(gpu) = wgpu_device() else { return };

    // Every kernel, over f32 and quantised weights: top-k, the draws, the skinny
    // products (one-row and staged tiles), the attention (tree and tiled), a prefill.
    let check = read_sync(check_kernels(&gpu)).expect("check ran");
    assert!(check.passed(), "{check}");
    // Steps captured as graphs, then replayed, and compacted between.
    assert_replays_match_launches(Llama::random(LlamaConfig::tiny(), 5, true, &gpu).expect("f32"));
    assert_replays_match_launches(
        Llama::random_quantized(LlamaConfig::tiny_quantisable(), 5, true, &gpu).expect("quantised"),
    );

    log.assert_clean();
}

/// The layer's report, in a file of its own.
struct ValidationLog {
    dir: PathBuf,
}

impl ValidationLog {
    /// Points the Vulkan loader at the validation layer, logging errors, warnings and
    /// its start-up line to a file. Must run before the process's first Vulkan instance.
    fn enable() -> Self {
        let dir = std::env::temp_dir().join(format!("samd-vk-validation-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("log dir");
        let settings = format!(
            "khronos_validation.debug_action = VK_DBG_LAYER_ACTION_LOG_MSG\n\
             khronos_validation.log_filename = {}\n\
             khronos_validation.report_flags = error,warn,info\n\
             khronos_validation.enables = VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION\n",
            Self::file(&dir).display()
        );
        std::fs::write(dir.join("vk_layer_settings.txt"), settings).expect("layer settings");
        // SAFETY: this binary's one test sets these before anything reads the environment
        // from another thread: the harness's main thread only waits for it.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("VK_INSTANCE_LAYERS", "VK_LAYER_KHRONOS_validation");
            std::env::set_var("VK_LAYER_SETTINGS_PATH", &dir);
        }
        Self { dir }
    }

    fn file(dir: &Path) -> PathBuf {
        dir.join("report.txt")
    }

    /// Fails on any error or warning the layer reported, or if it never ran.
    fn assert_clean(&self) {
        let report = std::fs::read_to_string(Self::file(&self.dir)).unwrap_or_default();
        assert!(
            report.contains(LAYER_ACTIVE),
            "the Vulkan validation layer did not run (install Debian's \
             vulkan-validationlayers, as scripts/setup-system.sh does); its report:\n{report}"
        );
        let problems: Vec<&str> = report
            .lines()
            .filter(|line| line.contains("(ERROR /") || line.contains("(WARN /"))
            .collect();
        assert!(
            problems.is_empty(),
            "the Vulkan validation layer reported {} problems:\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
}

impl Drop for ValidationLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
