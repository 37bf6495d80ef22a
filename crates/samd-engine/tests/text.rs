//! Streaming text with the real tokenizer: deltas are final (no U+FFFD from characters
//! split across tokens), add up to the whole text, and stop exactly before a stop string,
//! even one split across tokens.

use std::path::Path;

use samd_engine::TextStream;
use samd_model::{GgufFile, Tokenizer};

const MODEL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../models/SmolLM2-135M-Instruct.Q4_1.gguf"
);

fn tokenizer() -> Option<Tokenizer> {
    if !Path::new(MODEL).exists() {
        eprintln!("skipped: {MODEL} is absent (run scripts/fetch-model.sh)");
        return None;
    }
    let bytes = std::fs::read(MODEL).expect("the model file");
    let file = GgufFile::parse(&bytes).expect("a valid GGUF");
    Some(Tokenizer::from_gguf(&file).expect("the tokenizer"))
}

/// Streams `text`'s ids one at a time and returns the deltas and the final rest.
fn stream(tokenizer: &Tokenizer, text: &str, stops: &[&str]) -> (Vec<String>, String, bool) {
    let ids = tokenizer.encode(text).expect("encode");
    let mut s = TextStream::with_stops(stops.iter().map(|s| s.to_string()));
    let deltas: Vec<String> = ids
        .iter()
        .map(|&id| s.push(tokenizer, &[id]).expect("push"))
        .collect();
    let rest = s.finish(tokenizer).expect("finish");
    assert_eq!(
        s.text(),
        deltas.concat() + &rest,
        "text() is what was handed out"
    );
    (deltas, rest, s.stopped())
}

#[test]
fn deltas_are_final_and_add_up_to_the_text() {
    let Some(tokenizer) = tokenizer() else { return };
    let text = "Grüße, 世界! naïve café 🙂 ✓ done";
    let (deltas, rest, stopped) = stream(&tokenizer, text, &[]);
    assert!(!stopped);
    assert!(deltas.iter().all(|d| !d.contains('\u{FFFD}')), "{deltas:?}");
    // Some character spans several tokens, so some delta was held back.
    assert!(deltas.iter().any(String::is_empty), "{deltas:?}");
    assert_eq!(deltas.concat() + &rest, text);
}

#[test]
fn text_stops_right_before_a_stop_string() {
    let Some(tokenizer) = tokenizer() else { return };
    let text = "The answer is 42.\nQuestion: what next?";
    let (deltas, rest, stopped) = stream(&tokenizer, text, &["\nQuestion:", "never"]);
    assert!(stopped);
    assert_eq!(deltas.concat(), "The answer is 42.");
    assert_eq!(rest, "");

    // A stop string that starts and ends inside tokens.
    let (deltas, _, stopped) = stream(&tokenizer, text, &["swer is 4"]);
    assert!(stopped);
    assert_eq!(deltas.concat(), "The an");
}

#[test]
fn a_held_back_partial_stop_string_is_released_at_the_end() {
    let Some(tokenizer) = tokenizer() else { return };
    let text = "Tea for two\nQues";
    let (deltas, rest, stopped) = stream(&tokenizer, text, &["\nQuestion:"]);
    assert!(!stopped);
    assert_eq!(deltas.concat(), "Tea for two");
    assert_eq!(rest, "\nQues");
}

/// Speculative steps push several ids at once, in any grouping: the deltas must add up
/// to the same text whatever the grouping, each settled once (the stream decodes only
/// the new ids after a little context, so a grouping that splits a character or a word
/// differently must not change the text).
#[test]
fn any_grouping_of_ids_into_pushes_gives_the_same_text() {
    let Some(tokenizer) = tokenizer() else { return };
    let text = "Grüße aus Köln! 東京は大きい都市です。 naïve → café 🙂🙂 ✓\n  indented   spaces\tand tabs, \
                then code: fn main() { println!(\"hi\"); } and the end.";
    let ids = tokenizer.encode(text).expect("encode");
    let mut state = 12_345u64;
    for _ in 0..20 {
        let mut s = TextStream::new();
        let mut deltas = String::new();
        let mut at = 0;
        while at < ids.len() {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let take = 1 + (state >> 33) as usize % 5;
            let end = (at + take).min(ids.len());
            let delta = s.push(&tokenizer, &ids[at..end]).expect("push");
            assert!(!delta.contains('\u{FFFD}'), "{delta:?}");
            deltas.push_str(&delta);
            at = end;
        }
        deltas.push_str(&s.finish(&tokenizer).expect("finish"));
        assert_eq!(deltas, text);
        assert_eq!(s.text(), text);
    }
}
