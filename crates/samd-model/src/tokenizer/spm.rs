//! SentencePiece BPE (`tokenizer.ggml.model = "llama"`: Llama 2, TinyLlama, Mistral),
//! rebuilt as HF's `tokenizers` runs it.
//!
//! A SentencePiece BPE file stores each token's score, not merges: its encoder joins, again
//! and again, the adjacent pair whose join is the token of highest score. HF's converter
//! (`SentencePieceExtractor`) turns that into BPE merges, one per way of splitting a
//! token into two tokens, ranked by the joined token's score; this does the same, so the
//! ids are those of the model's own fast tokenizer. Spaces become `▁` and a text starts
//! with one (llama.cpp's `add_space_prefix`, HF's `Prepend`) after the start and after
//! each control token, as both do; characters no token covers fall back to byte tokens
//! (`<0x0A>`). Decoding is this module's own ([`Decoder`]).

use std::collections::HashMap;

use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::prepend::Prepend;
use tokenizers::normalizers::replace::Replace;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;

use super::{invalid, tokenizer_error};
use crate::error::Result;
use crate::gguf::{GgufFile, Value, keys};

/// SentencePiece's word-boundary mark, which stands for a space.
const SPACE: &str = "\u{2581}";

/// The longest piece, in characters, that merges make. SentencePiece caps pieces at 16
/// characters by default (Llama 2's longest are 16); this bounds the work a file of long
/// tokens could ask for, each split of a token hashing both halves.
const MAX_MERGED_CHARS: usize = 64;

/// The token SentencePiece emits for what it cannot encode, where the file names none.
const UNKNOWN: &str = "<unk>";

/// How ids become text: each piece with `▁` as a space, each byte token as its byte, then
/// the bytes as UTF-8 with U+FFFD for what is not, and the space the prefix added
/// dropped. HF's `ByteFallback` decoder turns every byte of a run of byte tokens that is
/// not valid UTF-8 into U+FFFD, its ASCII bytes too, so a run's text would change as
/// tokens join it; here a text only grows, as llama.cpp's does, which streaming needs.
#[derive(Debug)]
pub(super) struct Decoder {
    pieces: Vec<Piece>,
    strip_space: bool,
}

/// What a token decodes to.
#[derive(Debug)]
enum Piece {
    Text(String),
    Byte(u8),
}

impl Decoder {
    /// The text of `ids`, past those outside the vocab.
    pub(super) fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for piece in ids.iter().filter_map(|&id| self.pieces.get(id as usize)) {
            match piece {
                Piece::Text(text) => bytes.extend_from_slice(text.as_bytes()),
                Piece::Byte(b) => bytes.push(*b),
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        match text.strip_prefix(' ').filter(|_| self.strip_space) {
            Some(rest) => rest.to_owned(),
            None => text.into_owned(),
        }
    }
}

/// The byte a byte token (`<0x0A>`) stands for.
fn byte_of(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// The tokenizer of `tokens` (the vocab, `vocab` its index), with merges ranked by the
/// scores in `tokenizer.ggml.scores`, and its [`Decoder`]; only tokens `joinable` (normal
/// ones, not control or byte tokens) are made by merges, and only `is_byte` ones decode
/// as bytes.
pub(super) fn tokenizer(
    gguf: &GgufFile<'_>,
    tokens: &[&str],
    vocab: HashMap<String, u32>,
    joinable: impl Fn(usize) -> bool,
    is_byte: impl Fn(usize) -> bool,
) -> Result<(tokenizers::Tokenizer, Decoder)> {
    let scores = gguf
        .get_array(keys::TOKENIZER_SCORES)?
        .iter()
        .map(|v| match v {
            Value::F32(x) if x.is_finite() => Ok(*x),
            other => Err(invalid(
                keys::TOKENIZER_SCORES,
                format!("holds {}, not a finite f32", other.describe()),
            )),
        })
        .collect::<Result<Vec<f32>>>()?;
    if scores.len() != tokens.len() {
        return Err(invalid(
            keys::TOKENIZER_SCORES,
            format!("{} scores for {} tokens", scores.len(), tokens.len()),
        ));
    }
    let merges = merges(tokens, &scores, &vocab, joinable);
    let unknown = match gguf.metadata(keys::TOKENIZER_UNKNOWN_ID) {
        Some(_) => {
            let id = gguf.get_u32(keys::TOKENIZER_UNKNOWN_ID)?;
            let token = usize::try_from(id).ok().and_then(|i| tokens.get(i));
            let token = token.ok_or_else(|| {
                invalid(
                    keys::TOKENIZER_UNKNOWN_ID,
                    format!("unknown-token id {id} is outside the vocab"),
                )
            })?;
            Some((*token).to_owned())
        }
        None => vocab.contains_key(UNKNOWN).then(|| UNKNOWN.to_owned()),
    };
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if let Some(unknown) = unknown {
        builder = builder.unk_token(unknown);
    }
    let bpe = builder
        .build()
        .map_err(tokenizer_error("building the SentencePiece BPE model"))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);

    let add_space_prefix = match gguf.metadata(keys::TOKENIZER_ADD_SPACE_PREFIX) {
        None | Some(Value::Bool(true)) => true,
        Some(Value::Bool(false)) => false,
        Some(other) => {
            return Err(invalid(
                keys::TOKENIZER_ADD_SPACE_PREFIX,
                format!("is {}, not a bool", other.describe()),
            ));
        }
    };
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(tokenizer_error("building a replacement"))
    };
    // Spaces to `▁`, and one before the text; HF applies it to each stretch of text between
    // control tokens, as llama.cpp does.
    let mut normalizers = Vec::new();
    if add_space_prefix {
        normalizers.push(Prepend::new(SPACE.to_owned()).into());
    }
    normalizers.push(replace(" ", SPACE)?.into());
    inner
        .with_normalizer(Some(NormalizerSequence::new(normalizers)))
        .map_err(tokenizer_error("setting SentencePiece's normalisation"))?;
    let pieces = tokens
        .iter()
        .enumerate()
        .map(|(id, token)| match byte_of(token).filter(|_| is_byte(id)) {
            Some(b) => Piece::Byte(b),
            None => Piece::Text(token.replace(SPACE, " ")),
        })
        .collect();
    let decoder = Decoder {
        pieces,
        strip_space: add_space_prefix,
    };
    Ok((inner, decoder))
}

/// HF's `SentencePieceExtractor`: for each joinable token (in id order) of at most
/// [`MAX_MERGED_CHARS`], every split into two vocab tokens, the splits ordered by the ids
/// of their left and right parts; then all of them by the joined token's score, highest
/// first, a stable sort.
fn merges<'a>(
    tokens: &[&'a str],
    scores: &[f32],
    vocab: &HashMap<String, u32>,
    joinable: impl Fn(usize) -> bool,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, &'a str, &'a str)> = Vec::new();
    let mut found: Vec<(u32, u32, &'a str, &'a str)> = Vec::new();
    for ((id, &token), &score) in tokens.iter().enumerate().zip(scores) {
        if !joinable(id) || token.chars().nth(MAX_MERGED_CHARS).is_some() {
            continue;
        }
        found.clear();
        for (at, _) in token.char_indices().skip(1) {
            let (left, right) = token.split_at(at);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                found.push((l, r, left, right));
            }
        }
        found.sort_unstable_by_key(|&(l, r, _, _)| (l, r));
        ranked.extend(
            found
                .iter()
                .map(|&(_, _, left, right)| (score, left, right)),
        );
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked
        .into_iter()
        .map(|(_, left, right)| (left.to_owned(), right.to_owned()))
        .collect()
}
