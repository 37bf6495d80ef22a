//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`: SmolLM2, Llama 3, Qwen2), from the
//! file's merges, with the pre-tokenizer llama.cpp names in `tokenizer.ggml.pre`.

use std::collections::HashMap;

use tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

use super::{invalid, tokenizer_error};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, keys};

/// How the pre-tokenizer splits text before BPE.
#[derive(Debug, Clone, Copy)]
pub(super) enum PreSplit {
    /// Every digit alone, then the GPT-2 regex (StarCoder, SmolLM).
    DigitsThenGpt2,
    /// The GPT-2 regex alone.
    Gpt2,
    /// Llama 3's regex ([`LLAMA3_SPLIT`]), then byte-level BPE without the GPT-2 regex.
    Llama3,
    /// Qwen2's regex ([`QWEN2_SPLIT`]) likewise, over text normalised to NFC first, as
    /// Qwen2's own tokenizer does (llama.cpp leaves that out).
    Qwen2,
}

impl PreSplit {
    /// The split `tokenizer.ggml.pre` names, or an error naming the value found.
    pub(super) fn of(gguf: &GgufFile<'_>) -> Result<Self> {
        let pre = match gguf.metadata(keys::TOKENIZER_PRE) {
            Some(_) => gguf.get_str(keys::TOKENIZER_PRE)?,
            None => "",
        };
        Ok(match pre {
            "smollm" | "starcoder" | "refact" => Self::DigitsThenGpt2,
            "gpt2" => Self::Gpt2,
            "llama-bpe" => Self::Llama3,
            "qwen2" => Self::Qwen2,
            other => {
                return Err(Error::UnsupportedTokenizer {
                    what: keys::TOKENIZER_PRE,
                    found: other.to_owned(),
                    hint: "supported pre-tokenizers: smollm, starcoder, refact, gpt2, llama-bpe, \
                           qwen2",
                });
            }
        })
    }

    /// The byte-level BPE this split makes, in words.
    pub(super) fn describe(self) -> &'static str {
        match self {
            Self::DigitsThenGpt2 => "byte-level BPE, digits split, then the GPT-2 regex",
            Self::Gpt2 => "byte-level BPE, the GPT-2 regex",
            Self::Llama3 => "byte-level BPE, Llama 3's regex",
            Self::Qwen2 => "byte-level BPE, NFC, then Qwen2's regex",
        }
    }

    /// The regex a [`Split`] runs before byte-level BPE without the GPT-2 regex, for the
    /// pre-tokenizers that name their own.
    fn own_regex(self) -> Option<&'static str> {
        match self {
            Self::DigitsThenGpt2 | Self::Gpt2 => None,
            Self::Llama3 => Some(LLAMA3_SPLIT),
            Self::Qwen2 => Some(QWEN2_SPLIT),
        }
    }
}

/// The split Llama 3's `tokenizer.json` runs before byte-level BPE (llama.cpp's
/// `llama-bpe`): contractions, letters with at most one non-letter before them, digits in
/// runs of up to three, punctuation runs, and whitespace, each kept as a piece.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Qwen2's split (llama.cpp's `qwen2`): [`LLAMA3_SPLIT`] with every digit a piece alone.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The tokenizer of `vocab` with the file's merges, every one checked, split by `split`.
pub(super) fn tokenizer(
    gguf: &GgufFile<'_>,
    vocab: HashMap<String, u32>,
    split: PreSplit,
) -> Result<tokenizers::Tokenizer> {
    let merges_raw = gguf.get_str_array(keys::TOKENIZER_MERGES)?;
    let mut merges = Vec::with_capacity(merges_raw.len());
    for (i, merge) in merges_raw.iter().enumerate() {
        // The `tokenizers` BPE builder writes each merged pair into a buffer as long as
        // the longest token, so a pair whose join is not a token could index out of
        // bounds there: check all three first.
        let known = merge.split_once(' ').filter(|(a, b)| {
            vocab.contains_key(*a)
                && vocab.contains_key(*b)
                && vocab.contains_key(&format!("{a}{b}"))
        });
        match known {
            Some((a, b)) => merges.push((a.to_owned(), b.to_owned())),
            None => {
                return Err(invalid(
                    keys::TOKENIZER_MERGES,
                    format!("merge {i} ({merge:?}) is not two vocab tokens joining into a third"),
                ));
            }
        }
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .build()
        .map_err(tokenizer_error("building the BPE model"))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = match (split, split.own_regex()) {
        (_, Some(regex)) => {
            let split = Split::new(
                SplitPattern::Regex(regex.to_owned()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tokenizer_error("compiling the pre-tokenizer's regex"))?;
            Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
        (PreSplit::DigitsThenGpt2, None) => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        (_, None) => byte_level.into(),
    };
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    if let PreSplit::Qwen2 = split {
        inner
            .with_normalizer(Some(NFC))
            .map_err(tokenizer_error("setting NFC normalisation"))?;
    }
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(inner)
}
