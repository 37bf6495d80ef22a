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
///
/// Each push decodes only the new ids, with the ids of the previous push as context
/// (a decoder may treat a window's first token differently, e.g. drop its leading
/// space): `decode(context + new)` minus `decode(context)` is the new text. Decoding the
/// whole text each time would make a long generation quadratic.
#[derive(Debug, Clone, Default)]
pub struct TextStream {
    ids: Vec<u32>,
    /// `ids[context..settled]` is the context re-decoded with the next ids.
    context: usize,
    /// `ids[..settled]` are decoded into `settled_text`: they end on a whole character.
    settled: usize,
    settled_text: String,
    /// Everything handed out so far: a prefix of `settled_text` and the new text after it.
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
        let new = self.decode_new(tokenizer)?;
        let stable = new.trim_end_matches('\u{FFFD}');
        if stable.len() == new.len() {
            // Ends on a whole character: the next push needs only what follows.
            self.settled_text.push_str(&new);
            self.context = self.settled;
            self.settled = self.ids.len();
            Ok(self.release(""))
        } else {
            Ok(self.release(stable))
        }
    }

    /// Returns the held-back rest, at the end of a generation.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String, Error> {
        if self.stopped {
            return Ok(String::new());
        }
        let new = self.decode_new(tokenizer)?;
        let tail = self.unreleased(&new);
        self.out.push_str(&tail);
        Ok(tail)
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

    /// The text of `ids[settled..]`, decoded after its context.
    fn decode_new(&self, tokenizer: &Tokenizer) -> Result<String, Error> {
        let context = tokenizer.decode(&self.ids[self.context..self.settled])?;
        let window = tokenizer.decode(&self.ids[self.context..])?;
        Ok(match window.strip_prefix(context.as_str()) {
            Some(new) => new.to_owned(),
            // A decoder whose text of the context changes with what follows (none that a
            // GGUF carries does): fall back to the whole text.
            None => {
                let all = tokenizer.decode(&self.ids)?;
                all.get(self.settled_text.len()..).unwrap_or("").to_owned()
            }
        })
    }

    /// The settled text and then `pending`, past what was handed out.
    fn unreleased(&self, pending: &str) -> String {
        let released = self.out.len();
        match self.settled_text.get(released..) {
            Some(settled) => format!("{settled}{pending}"),
            // Released text already runs into `pending` (characters settled later).
            None => released
                .checked_sub(self.settled_text.len())
                .and_then(|skip| pending.get(skip..))
                .unwrap_or("")
                .to_owned(),
        }
    }

    /// Hands out what is final of the settled text followed by `pending`: up to a stop
    /// string if one appears, else all but a tail that could begin one.
    fn release(&mut self, pending: &str) -> String {
        // A match cannot start in released text: any prefix of a stop string was held back.
        let fresh = self.unreleased(pending);
        let end = match self
            .stops
            .iter()
            .filter_map(|s| fresh.find(s.as_str()))
            .min()
        {
            Some(at) => {
                self.stopped = true;
                at
            }
            None => fresh.len() - self.partial_stop_len(&fresh),
        };
        self.out.push_str(&fresh[..end]);
        fresh[..end].to_owned()
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
}
