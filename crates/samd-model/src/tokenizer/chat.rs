//! Chat formats: how a user's turn is wrapped into a prompt.
//!
//! We do not run Jinja templates: a file's template is recognised by the markers it
//! mentions, and each format's turn is written out here, as llama.cpp's built-in formats
//! are.

use std::borrow::Cow;
use std::collections::HashMap;

/// ChatML's turn markers.
pub(super) const IM_START: &str = "<|im_start|>";
pub(super) const IM_END: &str = "<|im_end|>";
/// Llama 3's: a header names the turn's role, and `<|eot_id|>` ends the turn.
pub(super) const START_HEADER: &str = "<|start_header_id|>";
pub(super) const END_HEADER: &str = "<|end_header_id|>";
pub(super) const EOT: &str = "<|eot_id|>";
/// Zephyr's user marker (TinyLlama's chat models), plain text in their vocabs.
const ZEPHYR_USER: &str = "<|user|>";
/// Llama 2's and Mistral's instruction marker, plain text too.
const INST: &str = "[INST]";

/// How a user's turn is wrapped into a prompt ([`super::Tokenizer::encode_chat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChatFormat {
    /// `<|im_start|>user\n…<|im_end|>\n<|im_start|>assistant\n` (SmolLM2, Qwen).
    ChatMl,
    /// `<|start_header_id|>user<|end_header_id|>\n\n…<|eot_id|>` and the assistant's
    /// header (Llama 3).
    Llama3,
    /// `<|user|>\n…</s>\n<|assistant|>\n`, the EOS token ending the turn (TinyLlama's chat
    /// models).
    Zephyr,
    /// `[INST] … [/INST]` (Llama 2's and Mistral's instruction models).
    Inst,
}

/// A piece of a prompt: a control token, or text, which is encoded with control-token
/// strings in it read as text, so that a user's text cannot close its own turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece<'a> {
    Control(&'a str),
    Text(Cow<'a, str>),
}

impl ChatFormat {
    /// The control tokens the format is made of, all of which the vocab must have.
    fn markers(self) -> &'static [&'static str] {
        match self {
            Self::ChatMl => &[IM_START, IM_END],
            Self::Llama3 => &[START_HEADER, END_HEADER, EOT],
            Self::Zephyr | Self::Inst => &[],
        }
    }

    /// The token that ends a turn, which generation stops on; `None` where it is the
    /// EOS token.
    pub(super) fn end_of_turn(self) -> Option<&'static str> {
        match self {
            Self::ChatMl => Some(IM_END),
            Self::Llama3 => Some(EOT),
            Self::Zephyr | Self::Inst => None,
        }
    }

    /// One user turn, up to where the assistant's reply begins, in pieces; `eos` is the
    /// EOS token's string, which ends a Zephyr turn.
    pub(super) fn turn<'a>(self, user: &'a str, eos: &'a str) -> Vec<Piece<'a>> {
        use Piece::{Control, Text};
        let text = |s: &'static str| Text(Cow::Borrowed(s));
        match self {
            Self::ChatMl => vec![
                Control(IM_START),
                Text(format!("user\n{user}").into()),
                Control(IM_END),
                text("\n"),
                Control(IM_START),
                text("assistant\n"),
            ],
            Self::Llama3 => vec![
                Control(START_HEADER),
                text("user"),
                Control(END_HEADER),
                Text(format!("\n\n{user}").into()),
                Control(EOT),
                Control(START_HEADER),
                text("assistant"),
                Control(END_HEADER),
                text("\n\n"),
            ],
            Self::Zephyr => vec![
                Text(format!("{ZEPHYR_USER}\n{user}").into()),
                Control(eos),
                text("\n<|assistant|>\n"),
            ],
            Self::Inst => vec![Text(format!("{INST} {user} [/INST]").into())],
        }
    }

    /// Decides how prompts are wrapped as a user's turn: a template that mentions
    /// `<|im_start|>` is taken to be ChatML, one that mentions `<|start_header_id|>`
    /// Llama 3's, `<|user|>` Zephyr's and `[INST]` Llama 2's, and a file without a
    /// template gets whichever its vocab has the control tokens of, ChatML first. `Err`
    /// says why prompts cannot be wrapped.
    pub(super) fn of(
        template: Option<&str>,
        vocab: &HashMap<String, u32>,
    ) -> Result<ChatFormat, &'static str> {
        let has = |format: ChatFormat| format.markers().iter().all(|m| vocab.contains_key(*m));
        let Some(template) = template else {
            return [ChatFormat::ChatMl, ChatFormat::Llama3]
                .into_iter()
                .find(|&f| has(f))
                .ok_or("the vocab has the markers of no chat format (ChatML, Llama 3)");
        };
        let format = [
            (IM_START, ChatFormat::ChatMl),
            (START_HEADER, ChatFormat::Llama3),
            (ZEPHYR_USER, ChatFormat::Zephyr),
            (INST, ChatFormat::Inst),
        ]
        .into_iter()
        .find(|(marker, _)| template.contains(marker))
        .map(|(_, format)| format)
        .ok_or(
            "the chat template is none of ChatML (<|im_start|>), Llama 3's \
             (<|start_header_id|>), Zephyr's (<|user|>) or Llama 2's ([INST])",
        )?;
        match format {
            _ if has(format) => Ok(format),
            ChatFormat::ChatMl => Err("the vocab has no <|im_start|>/<|im_end|> tokens"),
            _ => Err("the vocab lacks <|start_header_id|>, <|end_header_id|> or <|eot_id|>"),
        }
    }
}
