//! The tokenizer, rebuilt from a GGUF file's metadata.
//!
//! GGUF models ship no `tokenizer.json`: the vocab, merges and token types live in the
//! `tokenizer.ggml.*` keys. This module rebuilds the HF tokenizer they came from with the
//! `tokenizers` crate, so that encode/decode match what the model was trained with,
//! instead of reimplementing BPE. The cost is the crate's size in the wasm build; the
//! gain is that its BPE, byte-level mapping and added-token splitting are the reference.
//!
//! Supported: `tokenizer.ggml.model = "gpt2"` (byte-level BPE) with the pre-tokenizers
//! llama.cpp calls `smollm`/`starcoder`/`refact` (every digit split off, then the GPT-2
//! regex), `gpt2` (the GPT-2 regex alone), `llama-bpe` (Llama 3's regex: runs of up to
//! three digits, letters with one leading non-letter) and `qwen2` (the same with every digit
//! alone, after NFC normalisation); see `llama_vocab::impl::load` in llama.cpp for the key
//! names and the pre-tokenizer table. Anything else is an
//! [`Error::UnsupportedTokenizer`] naming the value found, never a silently wrong split.
//!
//! Token types (`tokenizer.ggml.token_type`) follow llama.cpp: 3 (control, e.g.
//! `<|im_start|>`) becomes a special added token, 4 (user-defined) a normal added token;
//! both are matched whole in input text before BPE runs.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, Once};

use tokenizers::SplitDelimiterBehavior;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value, keys};

/// llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`.
const TOKEN_TYPE_CONTROL: i128 = 3;
/// llama.cpp's `LLAMA_TOKEN_TYPE_USER_DEFINED`.
const TOKEN_TYPE_USER_DEFINED: i128 = 4;
/// ChatML's turn markers.
const IM_START: &str = "<|im_start|>";
const IM_END: &str = "<|im_end|>";
/// Llama 3's: a header names the turn's role, and `<|eot_id|>` ends the turn.
const START_HEADER: &str = "<|start_header_id|>";
const END_HEADER: &str = "<|end_header_id|>";
const EOT: &str = "<|eot_id|>";

/// Control tokens that end generation wherever a vocab has them, as in llama.cpp's
/// end-of-generation set: a model may end its reply with any of its own, not only with
/// its EOS (Qwen2.5 with `<|endoftext|>` as well as `<|im_end|>`, Llama 3 with
/// `<|eom_id|>` or `<|end_of_text|>` as well as `<|eot_id|>`).
const END_OF_GENERATION: [&str; 5] = [
    "<|endoftext|>",
    IM_END,
    EOT,
    "<|eom_id|>",
    "<|end_of_text|>",
];

/// How a user's turn is wrapped into a prompt ([`Tokenizer::encode_chat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatFormat {
    /// `<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n` (SmolLM2, Qwen).
    ChatMl,
    /// `<|start_header_id|>user<|end_header_id|>\n\n…<|eot_id|>` and the assistant's
    /// header (Llama 3).
    Llama3,
}

impl ChatFormat {
    /// The control tokens the format is made of, all of which the vocab must have.
    fn markers(self) -> &'static [&'static str] {
        match self {
            Self::ChatMl => &[IM_START, IM_END],
            Self::Llama3 => &[START_HEADER, END_HEADER, EOT],
        }
    }

    /// The token that ends a turn, which generation stops on.
    fn end_of_turn(self) -> &'static str {
        match self {
            Self::ChatMl => IM_END,
            Self::Llama3 => EOT,
        }
    }

    /// What comes before the user's text, what wraps it (encoded with it, and with
    /// control-token strings in it read as text), and what follows it up to where the
    /// assistant's reply begins.
    fn turn(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Self::ChatMl => (IM_START, "user\n", "<|im_end|>\n<|im_start|>assistant\n"),
            Self::Llama3 => (
                "<|start_header_id|>user<|end_header_id|>",
                "\n\n",
                "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
            ),
        }
    }
}

/// A byte-level BPE tokenizer plus the few ids the decoder loop needs.
pub struct Tokenizer {
    /// Locked because [`Tokenizer::encode_chat`] switches it, for the user's text, to
    /// reading control-token strings as text. A second copy that always did cost 7.5 MB
    /// of memory, for a flag.
    inner: Mutex<tokenizers::Tokenizer>,
    vocab_size: usize,
    eos_id: u32,
    /// The id that ends a turn in the model's chat format, or `<|im_end|>` without one.
    end_of_turn_id: Option<u32>,
    /// The id a prompt starts with, where the file asks for one
    /// (`tokenizer.ggml.add_bos_token`).
    bos_id: Option<u32>,
    /// What [`Tokenizer::stop_ids`] returns.
    stop_ids: Vec<u32>,
    /// How prompts are wrapped as a user's turn, or why they cannot be.
    chat: Result<ChatFormat, &'static str>,
    vocab_hash: u64,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("eos_id", &self.eos_id)
            .field("end_of_turn_id", &self.end_of_turn_id)
            .field("vocab_hash", &format_args!("{:#018x}", self.vocab_hash))
            .finish_non_exhaustive()
    }
}

/// How the pre-tokenizer splits text before BPE.
#[derive(Debug, Clone, Copy)]
enum PreSplit {
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

/// The token id at `key`, refused unless it is inside the vocab.
fn id_in_vocab(
    gguf: &GgufFile<'_>,
    key: &'static str,
    what: &str,
    vocab_size: usize,
) -> Result<u32> {
    let id = gguf.get_u32(key)?;
    if usize::try_from(id).map_or(true, |i| i >= vocab_size) {
        return Err(invalid(
            key,
            format!("{what} id {id} is outside the vocab of {vocab_size}"),
        ));
    }
    Ok(id)
}

fn invalid(key: &'static str, problem: String) -> Error {
    Error::InvalidTokenizer { key, problem }
}

fn tokenizer_error(what: &'static str) -> impl FnOnce(tokenizers::Error) -> Error {
    move |source| Error::Tokenizer { what, source }
}

/// FNV-1a, 64-bit: tiny, stable across platforms and versions, good enough to tell two
/// vocabularies apart (this is a fingerprint, not a defence against forgery).
fn fnv1a64(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.ggml.*` metadata, validating it first: token
    /// strings must be unique, every merge must join two vocab tokens into a third, token
    /// types must match the vocab in length, and the EOS id must be in range.
    pub fn from_gguf(gguf: &GgufFile<'_>) -> Result<Tokenizer> {
        static PARALLELISM: Once = Once::new();
        // No rayon thread pool: wasm has no threads, and encoding one prompt gains nothing.
        PARALLELISM.call_once(|| tokenizers::utils::parallelism::set_parallelism(false));

        let model = gguf.get_str(keys::TOKENIZER_MODEL)?;
        if model != "gpt2" {
            return Err(Error::UnsupportedTokenizer {
                what: keys::TOKENIZER_MODEL,
                found: model.to_owned(),
                hint: "only \"gpt2\" (byte-level BPE) is supported",
            });
        }
        let pre = match gguf.metadata(keys::TOKENIZER_PRE) {
            Some(_) => gguf.get_str(keys::TOKENIZER_PRE)?,
            None => "",
        };
        let split = match pre {
            "smollm" | "starcoder" | "refact" => PreSplit::DigitsThenGpt2,
            "gpt2" => PreSplit::Gpt2,
            "llama-bpe" => PreSplit::Llama3,
            "qwen2" => PreSplit::Qwen2,
            other => {
                return Err(Error::UnsupportedTokenizer {
                    what: keys::TOKENIZER_PRE,
                    found: other.to_owned(),
                    hint: "supported pre-tokenizers: smollm, starcoder, refact, gpt2, llama-bpe, \
                           qwen2",
                });
            }
        };

        let tokens = gguf.get_str_array(keys::TOKENIZER_TOKENS)?;
        let vocab_size = tokens.len();
        if vocab_size == 0 || u32::try_from(vocab_size).is_err() {
            return Err(invalid(
                keys::TOKENIZER_TOKENS,
                format!("vocab size {vocab_size} is out of range"),
            ));
        }
        let mut vocab: HashMap<String, u32> = HashMap::with_capacity(vocab_size);
        let mut vocab_hash = 0xcbf2_9ce4_8422_2325;
        for (id, token) in (0u32..).zip(&tokens) {
            if let Some(first) = vocab.insert((*token).to_owned(), id) {
                return Err(invalid(
                    keys::TOKENIZER_TOKENS,
                    format!("token {token:?} appears twice (ids {first} and {id})"),
                ));
            }
            vocab_hash = fnv1a64(fnv1a64(vocab_hash, token.as_bytes()), &[0xff]);
        }

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
                        format!(
                            "merge {i} ({merge:?}) is not two vocab tokens joining into a third"
                        ),
                    ));
                }
            }
        }

        let mut added = Vec::new();
        if gguf.metadata(keys::TOKENIZER_TOKEN_TYPE).is_some() {
            let types = gguf.get_array(keys::TOKENIZER_TOKEN_TYPE)?;
            if types.len() != vocab_size {
                return Err(invalid(
                    keys::TOKENIZER_TOKEN_TYPE,
                    format!("{} types for {vocab_size} tokens", types.len()),
                ));
            }
            for (token, ty) in tokens.iter().zip(types) {
                match ty.as_i128() {
                    Some(TOKEN_TYPE_CONTROL) => added.push(AddedToken::from(*token, true)),
                    Some(TOKEN_TYPE_USER_DEFINED) => added.push(AddedToken::from(*token, false)),
                    Some(_) => {}
                    None => {
                        return Err(invalid(
                            keys::TOKENIZER_TOKEN_TYPE,
                            format!("type of {token:?} is not an integer"),
                        ));
                    }
                }
            }
        }

        let eos_id = id_in_vocab(gguf, keys::TOKENIZER_EOS_ID, "eos", vocab_size)?;
        let bos_id = Self::prompt_start(gguf, vocab_size)?;
        let chat = Self::chat_format(gguf, &vocab)?;
        let end_of_turn = chat.map_or(IM_END, ChatFormat::end_of_turn);
        let end_of_turn_id = vocab.get(end_of_turn).copied();
        let mut stop_ids = vec![eos_id];
        let control = added
            .iter()
            .filter(|t| t.special)
            .map(|t| t.content.as_str());
        let ends = control.filter(|t| END_OF_GENERATION.contains(t));
        for id in end_of_turn_id
            .into_iter()
            .chain(ends.filter_map(|t| vocab.get(t).copied()))
        {
            if !stop_ids.contains(&id) {
                stop_ids.push(id);
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
        // Added tokens all exist in the vocab, so this only marks them for whole matching.
        let specials: Vec<AddedToken> = added.iter().filter(|t| t.special).cloned().collect();
        let normal: Vec<AddedToken> = added.into_iter().filter(|t| !t.special).collect();
        inner
            .add_special_tokens(specials)
            .map_err(tokenizer_error("adding control tokens"))?;
        inner
            .add_tokens(normal)
            .map_err(tokenizer_error("adding user-defined tokens"))?;
        Ok(Tokenizer {
            inner: Mutex::new(inner),
            vocab_size,
            eos_id,
            end_of_turn_id,
            bos_id,
            stop_ids,
            chat,
            vocab_hash,
        })
    }

    /// The BOS id, if `tokenizer.ggml.add_bos_token` is true: llama.cpp then starts every
    /// prompt with it, and a model trained so answers worse without it.
    fn prompt_start(gguf: &GgufFile<'_>, vocab_size: usize) -> Result<Option<u32>> {
        match gguf.metadata(keys::TOKENIZER_ADD_BOS) {
            None | Some(Value::Bool(false)) => Ok(None),
            Some(Value::Bool(true)) => {
                id_in_vocab(gguf, keys::TOKENIZER_BOS_ID, "bos", vocab_size).map(Some)
            }
            Some(other) => Err(invalid(
                keys::TOKENIZER_ADD_BOS,
                format!("is {}, not a bool", other.describe()),
            )),
        }
    }

    /// Decides how prompts are wrapped as a user's turn. We do not run Jinja templates: a
    /// template that mentions `<|im_start|>` is taken to be ChatML, one that mentions
    /// `<|start_header_id|>` Llama 3's, and a file without a template gets whichever its
    /// vocab has the markers of, ChatML first.
    fn chat_format(
        gguf: &GgufFile<'_>,
        vocab: &HashMap<String, u32>,
    ) -> Result<Result<ChatFormat, &'static str>> {
        let has = |format: ChatFormat| format.markers().iter().all(|m| vocab.contains_key(*m));
        let named = match gguf.metadata(keys::TOKENIZER_CHAT_TEMPLATE) {
            None => None,
            Some(_) => {
                let template = gguf.get_str(keys::TOKENIZER_CHAT_TEMPLATE)?;
                if template.contains(IM_START) {
                    Some(ChatFormat::ChatMl)
                } else if template.contains(START_HEADER) {
                    Some(ChatFormat::Llama3)
                } else {
                    return Ok(Err(
                        "the chat template is neither ChatML (<|im_start|>) nor Llama 3's \
                         (<|start_header_id|>)",
                    ));
                }
            }
        };
        Ok(match named {
            Some(format) if has(format) => Ok(format),
            Some(ChatFormat::ChatMl) => Err("the vocab has no <|im_start|>/<|im_end|> tokens"),
            Some(ChatFormat::Llama3) => {
                Err("the vocab lacks <|start_header_id|>, <|end_header_id|> or <|eot_id|>")
            }
            None => [ChatFormat::ChatMl, ChatFormat::Llama3]
                .into_iter()
                .find(|&f| has(f))
                .ok_or("the vocab has the markers of no chat format (ChatML, Llama 3)"),
        })
    }

    /// Encodes text. Special tokens written in the text (`<|im_start|>`) become their ids;
    /// no BOS or other token is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner()
            .encode(text, false)
            .map_err(tokenizer_error("encoding"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Encodes a prompt used verbatim (no chat template): [`Tokenizer::encode`], after
    /// the BOS token where the file asks for one. Text that encodes to nothing stays
    /// nothing, so that an empty prompt is still refused as one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode(text)?;
        Ok(match self.bos_id {
            Some(bos) if !ids.is_empty() => std::iter::once(bos).chain(ids).collect(),
            _ => ids,
        })
    }

    /// Decodes ids back to text, special tokens included, so that `decode(encode(s)) == s`.
    /// Ids that split a UTF-8 character decode to U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner()
            .decode(ids, false)
            .map_err(tokenizer_error("decoding"))
    }

    /// The number of tokens in the vocab (the model's logit width).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The end-of-sequence id (`tokenizer.ggml.eos_token_id`).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The id that ends a turn in the model's chat format (ChatML's `<|im_end|>`, Llama
    /// 3's `<|eot_id|>`), or `<|im_end|>` where there is none, if the vocab has it.
    /// Generation should stop on it as well as on [`Tokenizer::eos_id`].
    pub fn end_of_turn_id(&self) -> Option<u32> {
        self.end_of_turn_id
    }

    /// The ids generation stops on, each once: [`Tokenizer::eos_id`], then
    /// [`Tokenizer::end_of_turn_id`] where the vocab has one, then the vocab's other
    /// control tokens that end generation (`<|endoftext|>`, `<|eom_id|>`, …).
    pub fn stop_ids(&self) -> Vec<u32> {
        self.stop_ids.clone()
    }

    /// The id of a token string, if it is in the vocab.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner().token_to_id(token)
    }

    /// Encodes one user turn as a prompt that ends where the assistant's reply begins, in
    /// the model's chat format:
    ///
    /// ```text
    /// <|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n
    /// <|start_header_id|>user<|end_header_id|>\n\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n
    /// ```
    ///
    /// The user's text stays text: a `<|im_end|>` written in it is encoded as the
    /// characters it is made of, not as the control token, so a prompt cannot close its
    /// own turn and forge another (prompts come from a page's visitors). Otherwise the ids
    /// are those of encoding the whole string, since control tokens split the text in
    /// both. No system turn is added (SmolLM2's own template would insert a default one,
    /// Llama 3.1's a date; llama.cpp's own Llama 3 format adds none either). The BOS token
    /// comes first where the file asks for one. Fails with
    /// [`Error::UnsupportedChatTemplate`] when the model's format is neither.
    pub fn encode_chat(&self, user: &str) -> Result<Vec<u32>> {
        let format = self
            .chat
            .map_err(|reason| Error::UnsupportedChatTemplate { reason })?;
        let (before, wrap, after) = format.turn();
        let mut ids: Vec<u32> = self.bos_id.into_iter().collect();
        ids.extend(self.encode(before)?);
        let turn = {
            let mut inner = self.inner();
            inner.set_encode_special_tokens(true);
            let turn = inner.encode(format!("{wrap}{user}"), false);
            inner.set_encode_special_tokens(false);
            turn.map_err(tokenizer_error("encoding"))?
        };
        ids.extend_from_slice(turn.get_ids());
        ids.extend(self.encode(after)?);
        Ok(ids)
    }

    /// The tokenizer, for one call. A panic inside `tokenizers` during
    /// [`Tokenizer::encode_chat`] could leave its flag set, the one thing a call changes;
    /// it is cleared here, with the poison.
    fn inner(&self) -> MutexGuard<'_, tokenizers::Tokenizer> {
        self.inner.lock().unwrap_or_else(|poisoned| {
            let mut inner = poisoned.into_inner();
            inner.set_encode_special_tokens(false);
            self.inner.clear_poison();
            inner
        })
    }

    /// A fingerprint of the vocab: FNV-1a-64 over each token string's UTF-8 bytes in id
    /// order, each followed by one 0xFF byte (which never occurs in UTF-8). A static corpus
    /// stores it, so that one built with another tokenizer is rejected rather than
    /// drafting nonsense ids.
    pub fn vocab_hash(&self) -> u64 {
        self.vocab_hash
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]
mod tests;
