//! `samd`, the native command-line front end: `generate`, `bench`, `profile`, `inspect-model`,
//! `check-kernels` and `check-reference`.
//!
//! Errors are `anyhow` chains printed on one line (`samd: error: outer: inner`) with a
//! non-zero exit code; every failure a user can cause (a missing or corrupt model, an empty
//! or too-long prompt, an unsupported architecture) ends up here rather than in a panic.

mod args;
mod bench;
mod check;
mod corpus;
mod generate;
mod inspect;
mod launches;
mod load;
mod memory;
mod profile;
mod progress;
mod shrink;

use std::process::ExitCode;

use clap::Parser;

use crate::args::{Cli, Command, CorpusCommand};

fn main() -> ExitCode {
    memory::keep_freed_memory();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Bench(args) => bench::run(args),
        Command::InspectModel(args) => inspect::run(args),
        Command::Profile(args) => profile::run(args),
        Command::ShrinkModel(args) => shrink::run(args),
        Command::CheckKernels(args) => check::run(args),
        Command::CheckReference(args) => check::reference(args),
        Command::Corpus(CorpusCommand::Build(args)) => corpus::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("samd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
