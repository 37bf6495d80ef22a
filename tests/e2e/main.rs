//! End-to-end tests: the built `samd` binary on the real model.
//!
//! One test binary (STYLE.md §2), wired into `samd-cli` as `[[test]] name = "e2e"`, so the
//! tests can run the binary through `CARGO_BIN_EXE_samd`. Tests that need the model print a
//! message and pass when `models/SmolLM2-135M-Instruct.Q4_1.gguf` is absent (run
//! `scripts/fetch-model.sh`), so the suite still runs offline.

mod cli;
