//! The decoding methods samd compares, and the drafter each one uses.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use samd_draft::Drafter;
use samd_draft::corpus::StaticSam;
use samd_draft::drafter::{
    LookupConfig, PromptLookup, RecyclingConfig, SamConfig, SamDrafter, TokenRecycling,
};

use crate::Error;

/// A decoding method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Plain autoregressive decoding: one token per forward pass, the baseline.
    Ar,
    /// Prompt lookup (n-gram) drafts, as HF transformers' `prompt_lookup_num_tokens`.
    Pld,
    /// Dynamic and static suffix automata.
    Sam,
    /// Token Recycling alone.
    Tr,
    /// The paper's adaptive SAM with Token Recycling as the auxiliary drafter.
    SamTr,
}

impl Method {
    /// Every method, baseline first.
    pub const ALL: [Method; 5] = [
        Method::Ar,
        Method::Pld,
        Method::Sam,
        Method::Tr,
        Method::SamTr,
    ];

    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Method::Ar => "ar",
            Method::Pld => "pld",
            Method::Sam => "sam",
            Method::Tr => "tr",
            Method::SamTr => "sam+tr",
        }
    }

    /// Parses a comma-separated list such as `ar,pld,sam+tr`.
    pub fn parse_list(list: &str) -> Result<Vec<Method>, Error> {
        list.split(',').map(|s| s.trim().parse()).collect()
    }

    /// The most likely next ids per verified node its drafter reads back (0: none), as
    /// [`Drafter::top_k`] of [`Method::drafter`]: known without building the drafter.
    pub fn top_k(self) -> usize {
        match self {
            Method::Ar | Method::Pld | Method::Sam => 0,
            Method::Tr | Method::SamTr => RecyclingConfig::default().k,
        }
    }

    /// The drafter of this method (`None` for plain AR), for ids below `vocab_size`.
    pub fn drafter(
        self,
        vocab_size: u32,
        corpus: Option<Arc<StaticSam>>,
    ) -> Result<Option<Box<dyn Drafter>>, Error> {
        let recycling = || TokenRecycling::new(RecyclingConfig::default(), vocab_size);
        Ok(match self {
            Method::Ar => None,
            Method::Pld => Some(Box::new(PromptLookup::new(
                LookupConfig::default(),
                vocab_size,
            )?)),
            Method::Sam => Some(Box::new(SamDrafter::new(
                SamConfig::default(),
                vocab_size,
                corpus,
                None,
            )?)),
            Method::Tr => Some(Box::new(recycling()?)),
            Method::SamTr => Some(Box::new(SamDrafter::new(
                SamConfig::default(),
                vocab_size,
                corpus,
                Some(recycling()?),
            )?)),
        })
    }
}

impl FromStr for Method {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| Error::UnknownMethod { name: s.into() })
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks that a static corpus was built with the model's tokenizer.
pub fn check_corpus(corpus: &StaticSam, tokenizer_hash: u64) -> Result<(), Error> {
    if corpus.tokenizer_hash() != tokenizer_hash {
        return Err(Error::CorpusTokenizer {
            corpus: corpus.tokenizer_hash(),
            model: tokenizer_hash,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_methods_top_k_is_its_drafters() {
        for method in Method::ALL {
            let drafter = method.drafter(1_000, None).expect("drafter");
            assert_eq!(method.top_k(), drafter.map_or(0, |d| d.top_k()), "{method}");
        }
        assert!(Method::SamTr.top_k() > 0);
    }
}
