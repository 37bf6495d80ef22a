//! Turning a stream of generated ids into a stream of final text.

use samd_model::Tokenizer;

use crate::Error;

/// The text of a generation so far, handed out as deltas that never change afterwards.
///
/// The tokenizer decodes byte-level BPE with lossy UTF-8, so a character whose bytes are
/// split across tokens shows up as trailing U+FFFD until its last byte arrives. Holding
/// back trailing U+FFFD keeps every delta final; [`TextStream::finish`] releases whatever
/// is held back when the generation ends.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// An empty stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `ids` and returns the text that became final.
    pub fn push(&mut self, tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, Error> {
        self.ids.extend_from_slice(ids);
        let full = tokenizer.decode(&self.ids)?;
        Ok(self.take(full.trim_end_matches('\u{FFFD}')))
    }

    /// Returns the held-back rest, at the end of a generation.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String, Error> {
        let full = tokenizer.decode(&self.ids)?;
        Ok(self.take(&full))
    }

    /// Every id pushed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    fn take(&mut self, stable: &str) -> String {
        let delta = stable.get(self.emitted..).unwrap_or("").to_owned();
        self.emitted += delta.len();
        delta
    }
}
