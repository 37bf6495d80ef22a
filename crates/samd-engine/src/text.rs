//! Turning a stream of generated ids into a stream of final text.

use samd_model::Tokenizer;

use crate::Error;

/// The text of a generation so far, handed out as deltas that never change afterwards,
/// and cut at the first stop string.
///
/// Two things are held back until they are settled:
/// - trailing U+FFFD: the tokenizer decodes byte-level BPE with lossy UTF-8, so a
///   character split across tokens shows up as U+FFFD until its last byte arrives;
/// - a tail that could begin a stop string, so that no part of a stop string is ever
///   handed out.
///
/// [`TextStream::finish`] releases whatever is held back when the generation ends.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    /// Everything handed out so far.
    out: String,
    stops: Vec<String>,
    stopped: bool,
}

impl TextStream {
    /// An empty stream without stop strings.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty stream that stops at the first of `stops` (empty strings are ignored).
    pub fn with_stops(stops: impl IntoIterator<Item = String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..Self::default()
        }
    }

    /// Appends `ids` and returns the text that became final. Once a stop string shows
    /// up, the text before it is the last delta and [`TextStream::stopped`] turns true.
    pub fn push(&mut self, tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, Error> {
        if self.stopped {
            return Ok(String::new());
        }
        self.ids.extend_from_slice(ids);
        let full = tokenizer.decode(&self.ids)?;
        let stable = full.trim_end_matches('\u{FFFD}');
        // A match cannot start in emitted text: any prefix of a stop string was held back.
        let emitted = self.out.len();
        let fresh = stable.get(emitted..).unwrap_or("");
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| fresh.find(s.as_str()))
            .min()
        {
            self.stopped = true;
            return Ok(self.take(&stable[..emitted + at]));
        }
        let hold = self.partial_stop_len(stable);
        Ok(self.take(&stable[..stable.len() - hold]))
    }

    /// Returns the held-back rest, at the end of a generation.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String, Error> {
        if self.stopped {
            return Ok(String::new());
        }
        let full = tokenizer.decode(&self.ids)?;
        Ok(self.take(&full))
    }

    /// The text handed out so far: after [`TextStream::finish`], the whole text, cut
    /// before the stop string if one appeared.
    pub fn text(&self) -> &str {
        &self.out
    }

    /// Whether a stop string has appeared.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// The length of the longest tail of `text` that is a proper prefix of a stop string.
    fn partial_stop_len(&self, text: &str) -> usize {
        self.stops
            .iter()
            .flat_map(|stop| {
                stop.char_indices()
                    .skip(1)
                    .map(|(end, _)| &stop[..end])
                    .filter(|prefix| text.ends_with(prefix))
                    .map(str::len)
            })
            .max()
            .unwrap_or(0)
    }

    fn take(&mut self, stable: &str) -> String {
        let delta = stable.get(self.out.len()..).unwrap_or("").to_owned();
        self.out.push_str(&delta);
        delta
    }
}
