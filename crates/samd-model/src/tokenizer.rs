//! The tokenizer, rebuilt from a GGUF file's metadata.
//!
//! GGUF models ship no `tokenizer.json`: the vocab, merges and token types live in the
//! `tokenizer.ggml.*` keys. This module rebuilds the HF tokenizer they came from with the
//! `tokenizers` crate, so that encode/decode match what the model was trained with,
//! instead of reimplementing BPE. The cost is the crate's size in the wasm build; the
//! gain is that its BPE, byte-level mapping and added-token splitting are the reference.
//!
//! Supported (one submodule each): `tokenizer.ggml.model = "gpt2"` (byte-level BPE,
//! `byte_level`) with the pre-tokenizers llama.cpp calls `smollm`/`starcoder`/`refact`
//! (every digit split off, then the GPT-2 regex), `gpt2` (the GPT-2 regex alone),
//! `llama-bpe` (Llama 3's regex: runs of up to three digits, letters with one leading
//! non-letter) and `qwen2` (the same with every digit alone, after NFC normalisation); and
//! `"llama"` (SentencePiece BPE, `spm`, merges ranked by the file's scores, decoded by our
//! own code). See `llama_vocab::impl::load` in llama.cpp for the key names and the
//! pre-tokenizer table. Anything else is an [`Error::UnsupportedTokenizer`] naming the
//! value found, never a silently wrong split. How a prompt is wrapped as a user's turn is
//! `chat`'s.
//!
//! Token types (`tokenizer.ggml.token_type`) follow llama.cpp: 3 (control, e.g.
//! `<|im_start|>`) becomes a special added token, 4 (user-defined) a normal added token;
//! both are matched whole in input text before BPE runs.
#![deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, Once};

use tokenizers::AddedToken;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value, keys};

mod byte_level;
mod chat;
mod spm;

use byte_level::PreSplit;
use chat::{ChatFormat, EOT, IM_END, Piece};
#[cfg(test)]
use chat::{END_HEADER, IM_START, START_HEADER};

/// llama.cpp's `LLAMA_TOKEN_TYPE_NORMAL`.
const TOKEN_TYPE_NORMAL: i128 = 1;
/// llama.cpp's `LLAMA_TOKEN_TYPE_CONTROL`.
const TOKEN_TYPE_CONTROL: i128 = 3;
/// llama.cpp's `LLAMA_TOKEN_TYPE_USER_DEFINED`.
const TOKEN_TYPE_USER_DEFINED: i128 = 4;
/// llama.cpp's `LLAMA_TOKEN_TYPE_BYTE`: SentencePiece's `<0x0A>`.
const TOKEN_TYPE_BYTE: i128 = 6;
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

/// How a vocab's text is cut into tokens (`tokenizer.ggml.model`).
#[derive(Debug, Clone, Copy)]
enum Encoding {
    /// `gpt2`: byte-level BPE from the file's merges, split first as it says.
    ByteLevel(PreSplit),
    /// `llama`: SentencePiece BPE from the file's scores ([`spm`]).
    SentencePiece,
}

impl Encoding {
    /// The encoding in words, for `samd inspect-model`.
    fn describe(self) -> &'static str {
        match self {
            Self::ByteLevel(split) => split.describe(),
            Self::SentencePiece => "SentencePiece BPE (merges ranked by score, byte fallback)",
        }
    }
}

/// A BPE tokenizer plus the few ids the decoder loop needs.
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
    /// What [`Tokenizer::kind`] says.
    kind: &'static str,
    /// A SentencePiece vocab's decoder, which [`Tokenizer::decode`] takes over `inner`'s.
    sentence_piece: Option<spm::Decoder>,
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

        let encoding = match gguf.get_str(keys::TOKENIZER_MODEL)? {
            "gpt2" => Encoding::ByteLevel(PreSplit::of(gguf)?),
            "llama" => Encoding::SentencePiece,
            other => {
                return Err(Error::UnsupportedTokenizer {
                    what: keys::TOKENIZER_MODEL,
                    found: other.to_owned(),
                    hint: "supported: \"gpt2\" (byte-level BPE), \"llama\" (SentencePiece BPE)",
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

        // Each token's type, or none without the key (every token normal).
        let mut types = Vec::new();
        if gguf.metadata(keys::TOKENIZER_TOKEN_TYPE).is_some() {
            let values = gguf.get_array(keys::TOKENIZER_TOKEN_TYPE)?;
            if values.len() != vocab_size {
                return Err(invalid(
                    keys::TOKENIZER_TOKEN_TYPE,
                    format!("{} types for {vocab_size} tokens", values.len()),
                ));
            }
            for (token, ty) in tokens.iter().zip(values) {
                types.push(ty.as_i128().ok_or_else(|| {
                    invalid(
                        keys::TOKENIZER_TOKEN_TYPE,
                        format!("type of {token:?} is not an integer"),
                    )
                })?);
            }
        }
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter_map(|(token, &ty)| match ty {
                TOKEN_TYPE_CONTROL => Some(AddedToken::from(*token, true)),
                TOKEN_TYPE_USER_DEFINED => Some(AddedToken::from(*token, false)),
                _ => None,
            })
            .collect();

        let eos_id = id_in_vocab(gguf, keys::TOKENIZER_EOS_ID, "eos", vocab_size)?;
        let sentence_piece = matches!(encoding, Encoding::SentencePiece);
        let bos_id = Self::prompt_start(gguf, vocab_size, sentence_piece)?;
        let template = match gguf.metadata(keys::TOKENIZER_CHAT_TEMPLATE) {
            Some(_) => Some(gguf.get_str(keys::TOKENIZER_CHAT_TEMPLATE)?),
            None => None,
        };
        let chat = ChatFormat::of(template, &vocab);
        let end_of_turn = chat.ok().map_or(Some(IM_END), ChatFormat::end_of_turn);
        let end_of_turn_id = end_of_turn.and_then(|t| vocab.get(t).copied());
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

        let (mut inner, sentence_piece) = match encoding {
            Encoding::ByteLevel(split) => (byte_level::tokenizer(gguf, vocab, split)?, None),
            Encoding::SentencePiece => {
                let types = &types;
                let of_type = |ty| move |id: usize| types.get(id).is_none_or(|&t| t == ty);
                let (inner, decoder) = spm::tokenizer(
                    gguf,
                    &tokens,
                    vocab,
                    of_type(TOKEN_TYPE_NORMAL),
                    of_type(TOKEN_TYPE_BYTE),
                )?;
                (inner, Some(decoder))
            }
        };
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
            kind: encoding.describe(),
            sentence_piece,
            vocab_hash,
        })
    }

    /// The BOS id, if `tokenizer.ggml.add_bos_token` is true, or absent from a
    /// `sentence_piece` vocab's file: llama.cpp then starts every prompt with it, and a
    /// model trained so answers worse without it.
    fn prompt_start(
        gguf: &GgufFile<'_>,
        vocab_size: usize,
        sentence_piece: bool,
    ) -> Result<Option<u32>> {
        let bos = || id_in_vocab(gguf, keys::TOKENIZER_BOS_ID, "bos", vocab_size).map(Some);
        match gguf.metadata(keys::TOKENIZER_ADD_BOS) {
            None if sentence_piece => bos(),
            None | Some(Value::Bool(false)) => Ok(None),
            Some(Value::Bool(true)) => bos(),
            Some(other) => Err(invalid(
                keys::TOKENIZER_ADD_BOS,
                format!("is {}, not a bool", other.describe()),
            )),
        }
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
        if let Some(decoder) = &self.sentence_piece {
            return Ok(decoder.decode(ids));
        }
        self.inner()
            .decode(ids, false)
            .map_err(tokenizer_error("decoding"))
    }

    /// What cuts text into tokens, in words: `SentencePiece BPE`, or `byte-level BPE`
    /// and its pre-tokenizer.
    pub fn kind(&self) -> &'static str {
        self.kind
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
    /// <|user|>\n{user}</s>\n<|assistant|>\n
    /// [INST] {user} [/INST]
    /// ```
    ///
    /// The user's text stays text: a `<|im_end|>` written in it is encoded as the
    /// characters it is made of, not as the control token, so a prompt cannot close its
    /// own turn and forge another (prompts come from a page's visitors). Otherwise the ids
    /// are those of encoding the whole string, since control tokens split the text in
    /// both. No system turn is added (SmolLM2's own template would insert a default one,
    /// Llama 3.1's a date; llama.cpp's own Llama 3 format adds none either). The BOS token
    /// comes first where the file asks for one. Fails with
    /// [`Error::UnsupportedChatTemplate`] when the model's format is none of these.
    pub fn encode_chat(&self, user: &str) -> Result<Vec<u32>> {
        let format = self
            .chat
            .map_err(|reason| Error::UnsupportedChatTemplate { reason })?;
        let mut inner = self.inner();
        let eos = inner.id_to_token(self.eos_id).unwrap_or_default();
        let mut ids: Vec<u32> = self.bos_id.into_iter().collect();
        for piece in format.turn(user, &eos) {
            match piece {
                Piece::Control(token) => ids.push(inner.token_to_id(token).ok_or(
                    Error::UnsupportedChatTemplate {
                        reason: "the vocab lacks a control token of its chat format",
                    },
                )?),
                Piece::Text(text) => {
                    inner.set_encode_special_tokens(true);
                    let encoded = inner.encode(text.as_ref(), false);
                    inner.set_encode_special_tokens(false);
                    ids.extend_from_slice(encoded.map_err(tokenizer_error("encoding"))?.get_ids());
                }
            }
        }
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
