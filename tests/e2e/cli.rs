//! `samd generate`, `samd inspect-model`, `samd check-reference` and `samd bench --replay` as a user runs them: exit codes, stdout/stderr
//! and the `--json` report. CPU backend only, and at most a dozen generated tokens per run,
//! to keep the suite short.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const QUESTION: &str = "What is the capital of France? Answer in one sentence.";

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The real model's path, or `None` (with a message) when it has not been fetched.
fn real_model() -> Option<PathBuf> {
    let path = model_path();
    if path.is_file() {
        Some(path)
    } else {
        eprintln!(
            "skipping: {} is absent; run scripts/fetch-model.sh",
            path.display()
        );
        None
    }
}

/// A scratch directory for this test, under cargo's per-target temp dir.
fn scratch(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("e2e-cli-{test}"));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn samd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_samd"))
        .args(args)
        .output()
        .expect("run samd")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts a clean failure: non-zero exit, one `samd: error:` line, no panic.
fn assert_clean_error(out: &Output) -> String {
    let err = stderr(out);
    assert!(!out.status.success(), "expected failure, stderr: {err}");
    assert!(err.contains("samd: error:"), "stderr: {err}");
    assert!(
        !err.contains("panicked"),
        "panic instead of an error: {err}"
    );
    err
}

fn generate_json(model: &Path, max_tokens: &str, extra: &[&str]) -> serde_json::Value {
    let model = model.to_str().expect("utf-8 model path");
    let mut args = vec![
        "generate",
        "--json",
        "--max-tokens",
        max_tokens,
        "--model",
        model,
    ];
    args.extend_from_slice(extra);
    let out = samd(&args);
    assert!(out.status.success(), "samd failed: {}", stderr(&out));
    let stdout = String::from_utf8(out.stdout).expect("utf-8 stdout");
    let mut lines = stdout.lines();
    let line = lines.next().expect("one line of JSON");
    assert_eq!(lines.next(), None, "exactly one JSON object: {stdout}");
    serde_json::from_str(line).expect("valid JSON")
}

#[test]
fn generate_json_answers_the_capital_of_france() {
    let Some(model) = real_model() else { return };
    let report = generate_json(&model, "12", &[QUESTION]);
    assert_eq!(report["text"], "The capital of France is Paris.");
    assert_eq!(report["stop_reason"], "eos");
    let generated = report["generated_ids"].as_array().expect("ids");
    assert!(!generated.is_empty() && generated.len() < 12, "{report}");
    let prompt = report["prompt_ids"].as_array().expect("ids");
    // <|im_start|> opens the ChatML turn.
    assert_eq!(prompt.first().and_then(|v| v.as_u64()), Some(1), "{report}");
    let timings = &report["timings"];
    assert_eq!(
        timings["prefill_tokens"].as_u64(),
        Some(prompt.len() as u64)
    );
    assert!(timings["decode_tok_per_s"].as_f64().expect("tok/s") > 0.0);
    assert!(timings["load"]["load_ms"].as_f64().expect("load") > 0.0);
}

#[test]
fn generate_raw_feeds_the_prompt_verbatim_and_stops_at_max_tokens() {
    let Some(model) = real_model() else { return };
    let report = generate_json(&model, "4", &["--raw", "The capital of France is"]);
    // "The capital of France is" with no template around it: no <|im_start|>.
    let prompt: Vec<u64> = report["prompt_ids"]
        .as_array()
        .expect("ids")
        .iter()
        .map(|v| v.as_u64().expect("id"))
        .collect();
    assert!(!prompt.contains(&1), "{report}");
    assert_eq!(prompt.len(), 5, "{report}");
    assert_eq!(report["stop_reason"], "max_tokens");
    assert_eq!(report["generated_ids"].as_array().map(Vec::len), Some(4));
    assert!(
        report["text"].as_str().expect("text").contains("Paris"),
        "{report}"
    );
}

#[test]
fn generate_streams_text_to_stdout_and_timings_to_stderr() {
    let Some(model) = real_model() else { return };
    let model = model.to_str().expect("utf-8 path");
    let out = samd(&["generate", "--max-tokens", "12", "--model", model, QUESTION]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "The capital of France is Paris.\n"
    );
    assert!(err.contains("tok/s") && err.contains("stop: eos"), "{err}");
}

#[test]
fn empty_prompt_is_an_error() {
    for prompt in ["", "  \n"] {
        let out = samd(&["generate", "--model", "does-not-matter.gguf", prompt]);
        let err = assert_clean_error(&out);
        assert!(err.contains("empty prompt"), "{err}");
    }
}

#[test]
fn missing_model_file_is_an_error_naming_it() {
    let path = scratch("missing").join("no-such-model.gguf");
    let out = samd(&["generate", "--model", path.to_str().expect("utf-8"), "hi"]);
    let err = assert_clean_error(&out);
    assert!(err.contains("no-such-model.gguf"), "{err}");
}

#[test]
fn non_gguf_file_is_an_error_naming_it() {
    let path = scratch("non-gguf").join("notes.gguf");
    std::fs::write(&path, "these are not the weights you are looking for\n").expect("write");
    let path = path.to_str().expect("utf-8");
    for args in [
        vec!["generate", "--model", path, "hi"],
        vec!["inspect-model", "--model", path],
    ] {
        let err = assert_clean_error(&samd(&args));
        assert!(err.contains("notes.gguf"), "{err}");
        assert!(err.contains("not a GGUF file"), "{err}");
    }
}

#[test]
fn truncated_gguf_is_an_error_naming_the_file() {
    let Some(model) = real_model() else { return };
    let bytes = std::fs::read(&model).expect("read model");
    let path = scratch("truncated").join("half.gguf");
    std::fs::write(&path, bytes.get(..bytes.len() / 2).expect("half")).expect("write");
    let out = samd(&["generate", "--model", path.to_str().expect("utf-8"), "hi"]);
    let err = assert_clean_error(&out);
    assert!(err.contains("half.gguf"), "{err}");
    assert!(err.contains("but the file has"), "{err}");
}

#[test]
fn prompt_longer_than_the_context_is_an_error() {
    let Some(model) = real_model() else { return };
    let path = scratch("too-long").join("prompt.txt");
    // " hello" is one token; 9000 of them exceed the 8192-token context.
    std::fs::write(&path, " hello".repeat(9000)).expect("write prompt");
    let out = samd(&[
        "generate",
        "--raw",
        "--model",
        model.to_str().expect("utf-8"),
        "--prompt-file",
        path.to_str().expect("utf-8"),
    ]);
    let err = assert_clean_error(&out);
    assert!(err.contains("context"), "{err}");
    assert!(err.contains("9000 tokens"), "{err}");
}

#[test]
fn missing_prompt_file_is_an_error_naming_it() {
    let out = samd(&["generate", "--prompt-file", "/nonexistent/prompt.txt"]);
    let err = assert_clean_error(&out);
    assert!(err.contains("/nonexistent/prompt.txt"), "{err}");
}

#[test]
fn inspect_model_prints_architecture_config_and_load_times() {
    let Some(model) = real_model() else { return };
    let out = samd(&["inspect-model", "--model", model.to_str().expect("utf-8")]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    for want in [
        "architecture:  llama",
        "30 layers",
        "d_model 576",
        "vocab:         49152 tokens",
        "q4_1    210 tensors",
        "matrices read as its blocks",
        "q8_0",
        "dequantise+upload",
        "MiB as held on cpu",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn unsupported_architecture_is_an_error_naming_it() {
    use samd_model::gguf::Value;
    use samd_model::gguf_writer::GgufWriter;
    let mut w = GgufWriter::new();
    w.metadata("general.architecture", Value::String("gemma2".into()));
    w.tensor_f32("token_embd.weight", &[32, 4], &[0.0; 128]);
    let path = scratch("gemma2").join("gemma2.gguf");
    std::fs::write(&path, w.to_bytes()).expect("write");
    let path = path.to_str().expect("utf-8");
    for args in [
        vec!["generate", "--model", path, "hi"],
        vec!["inspect-model", "--model", path],
    ] {
        let err = assert_clean_error(&samd(&args));
        assert!(err.contains("gemma2.gguf"), "{err}");
        assert!(
            err.contains("unsupported model architecture \"gemma2\""),
            "{err}"
        );
    }
}

/// The tiny Qwen file of `arch` that the model crate's tests hold to numpy (random
/// weights; see `scripts/make-tiny-qwen.py`), and its reference's path.
fn tiny_qwen(arch: &str) -> (PathBuf, PathBuf) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samd-model/tests/fixtures");
    (
        fixtures.join(format!("tiny_{arch}.gguf")),
        fixtures.join(format!("tiny_{arch}_reference.json")),
    )
}

/// Qwen2 and Qwen3 files run through the CLI as SmolLM2's does: `check-reference` holds
/// each to its own numpy reference, and every method's greedy reply to the reference's
/// prompt is the reference's, token for token (the default static corpus, SmolLM2's,
/// passed over).
#[test]
fn qwen_files_decode_as_their_references_with_every_method() {
    for arch in ["qwen2", "qwen3"] {
        assert_decodes_as_its_reference(tiny_qwen(arch));
    }
}

fn assert_decodes_as_its_reference((model, fixture): (PathBuf, PathBuf)) {
    let out = samd(&[
        "check-reference",
        "--model",
        model.to_str().expect("utf-8 path"),
        "--fixture",
        fixture.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "samd failed: {}", stderr(&out));
    let reference = std::fs::read_to_string(&fixture).expect("the fixture is committed");
    let reference: serde_json::Value = serde_json::from_str(&reference).expect("valid JSON");
    let want = &reference["greedy_ids"];
    let tokens = want.as_array().expect("ids").len().to_string();
    for method in ["ar", "pld", "sam", "tr", "sam+tr"] {
        let got = generate_json(&model, &tokens, &["--method", method, QUESTION]);
        assert_eq!(got["prompt_ids"], reference["prompt_ids"], "{method}");
        assert_eq!(&got["generated_ids"], want, "{method}");
    }
}

#[test]
fn check_reference_holds_the_cpu_to_the_numpy_forward() {
    let Some(model) = real_model() else { return };
    let out = samd(&[
        "check-reference",
        "--model",
        model.to_str().expect("utf-8 model path"),
    ]);
    assert!(out.status.success(), "samd failed: {}", stderr(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("a token at a time") && stdout.contains("The capital of France is Paris."),
        "stdout: {stdout}"
    );
}

/// `--fixture` holds a model to a reference of its own; a file that is not one is an
/// error that names it, before any model is read.
#[test]
fn check_reference_says_which_fixture_it_cannot_use() {
    let dir = scratch("check-reference-fixture");
    let fixture = dir.join("reference.json");
    std::fs::write(&fixture, br#"{"prompt_ids": [1, 2"#).expect("write");
    let err = assert_clean_error(&samd(&[
        "check-reference",
        "--model",
        dir.join("absent.gguf").to_str().expect("utf-8 path"),
        "--fixture",
        fixture.to_str().expect("utf-8 path"),
    ]));
    assert!(
        err.contains("reference.json is not usable") && err.contains("reference fixture"),
        "stderr: {err}"
    );
}

#[test]
fn check_reference_refuses_a_file_the_reference_did_not_run() {
    let other = scratch("check-reference").join("other.gguf");
    std::fs::write(&other, b"GGUF, but not the reference's").expect("write");
    let err = assert_clean_error(&samd(&[
        "check-reference",
        "--model",
        other.to_str().expect("utf-8 path"),
    ]));
    assert!(
        err.contains("is not the file the reference ran") && err.contains("other.gguf"),
        "stderr: {err}"
    );
}

#[test]
fn bench_replay_cuts_as_the_device_would_simulates_step_costs_and_refuses_a_longer_trace() {
    let Some(model) = real_model() else { return };
    let model = model.to_str().expect("utf-8 model path");
    // A prompt of 20 tokens, then 40 generated that repeat it: SAM drafts long chains.
    let unit: Vec<u32> = (1000..1020).collect();
    let tokens: Vec<u32> = unit.repeat(3);
    let line = serde_json::json!({
        "question_id": 1, "category": "qa", "prompt_len": 20, "tokens": tokens,
    });
    let traces = scratch("replay").join("traces.jsonl");
    std::fs::write(&traces, format!("{line}\n")).expect("write traces");
    let traces = traces.to_str().expect("utf-8 path");
    let replay = |extra: &[&str]| {
        let mut args = vec!["bench", "--replay", traces, "--model", model];
        args.extend_from_slice(&["--methods", "sam", "--no-corpus"]);
        args.extend_from_slice(extra);
        samd(&args)
    };
    for (device, cap) in [("cpu", 16), ("wgpu", 128)] {
        let out = replay(&["--device", device, "--max-tokens", "40"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("at most {cap} a step on {device}")),
            "{err}"
        );
        assert!(err.contains("0 of 1 traces end at a stop id"), "{err}");
        let table = String::from_utf8_lossy(&out.stdout);
        assert!(table.contains("| sam |"), "{table}");
    }
    let err = assert_clean_error(&replay(&["--max-tokens", "39"]));
    assert!(err.contains("--max-tokens"), "{err}");

    // Step costs make the replay stand for a device: the budget's trees, simulated times.
    let costs = ["--device", "wgpu", "--max-tokens", "40", "--step-costs"];
    let out = replay(&[&costs[..], &["1:6.36,2:7.71,16:12.32,64:26.51"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("timed as 1:6.36,2:7.71,16:12.32,64:26.51 ms by its padded"),
        "{err}"
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("speedup over AR, simulated"), "{table}");
    // Steps without step graphs compute only their own nodes.
    let ungraphed = [&costs[..], &["1:6.36,2:7.71", "--no-graphs"]].concat();
    let err = stderr(&replay(&ungraphed));
    assert!(err.contains("ms by its node count"), "{err}");
    let err = assert_usage_error(&replay(&[&costs[..], &["2:5,4:6"]].concat()));
    assert!(err.contains("one-node step"), "{err}");
    let err = assert_usage_error(&samd(&["bench", "--step-costs", "1:5", "--model", model]));
    assert!(err.contains("--replay"), "{err}");
}

/// Asserts that the command line was refused before anything ran: exit code 2 and
/// clap's message, no panic.
fn assert_usage_error(out: &Output) -> String {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert!(err.starts_with("error:"), "stderr: {err}");
    assert!(!err.contains("panicked"), "stderr: {err}");
    err
}
