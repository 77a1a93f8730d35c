//! Deterministic input data for the benchmarks: incompressible bytes and pseudo-English
//! text, both generated in memory before any clock starts.

use crate::{Context, Result};

/// SplitMix64: a tiny, fast generator. Its output is statistically good enough that zstd
/// finds nothing to compress and content-defined chunking cuts it like real random data;
/// it is not cryptographic and need not be.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator starting from `seed`; the same seed gives the same sequence.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (`n` > 0). Multiply-and-shift instead of `%` avoids a division
    /// per call; its bias is far below anything a benchmark could notice.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut words = out.chunks_exact_mut(8);
        for word in &mut words {
            word.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let tail = words.into_remainder();
        let last = self.next_u64().to_le_bytes();
        tail.copy_from_slice(&last[..tail.len()]);
    }

    /// 32 random bytes, the size of every vault identifier.
    pub fn id(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        self.fill(&mut out);
        out
    }
}

/// An empty buffer able to hold `len` bytes. Reserving up front turns an impossible
/// `--size-mib` into an error message instead of an allocation abort.
fn buffer(len: usize, what: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    out.try_reserve_exact(len)
        .context(format!("cannot allocate {len} bytes of {what}"))?;
    Ok(out)
}

/// `len` incompressible bytes.
pub fn random_bytes(len: usize, seed: u64) -> Result<Vec<u8>> {
    let mut out = buffer(len, "random data")?;
    out.resize(len, 0);
    SplitMix64::new(seed).fill(&mut out);
    Ok(out)
}

/// Common English words, roughly most frequent first: [`english_text`] draws early words
/// more often, which gives the skewed word frequencies that real prose has and that
/// compressors exploit.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "it",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "from",
    "have",
    "or",
    "by",
    "one",
    "had",
    "not",
    "but",
    "what",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "an",
    "your",
    "which",
    "their",
    "said",
    "if",
    "do",
    "will",
    "each",
    "about",
    "how",
    "up",
    "out",
    "them",
    "then",
    "she",
    "many",
    "some",
    "so",
    "these",
    "would",
    "other",
    "into",
    "has",
    "more",
    "her",
    "two",
    "like",
    "him",
    "see",
    "time",
    "could",
    "no",
    "make",
    "than",
    "first",
    "been",
    "its",
    "who",
    "now",
    "people",
    "my",
    "made",
    "over",
    "did",
    "down",
    "only",
    "way",
    "find",
    "use",
    "may",
    "water",
    "long",
    "little",
    "very",
    "after",
    "words",
    "called",
    "just",
    "where",
    "most",
    "know",
    "get",
    "through",
    "back",
    "much",
    "before",
    "go",
    "good",
    "new",
    "write",
    "our",
    "used",
    "me",
    "man",
    "too",
    "any",
    "day",
    "same",
    "right",
    "look",
    "think",
    "also",
    "around",
    "another",
    "came",
    "come",
    "work",
    "three",
    "word",
    "must",
    "because",
    "does",
    "part",
    "even",
    "place",
    "well",
    "such",
    "here",
    "take",
    "why",
    "things",
    "help",
    "put",
    "years",
    "different",
    "away",
    "again",
    "off",
    "went",
    "old",
    "number",
    "great",
    "tell",
    "men",
    "say",
    "small",
    "every",
    "found",
    "still",
    "between",
    "name",
    "should",
    "home",
    "big",
    "give",
    "air",
    "line",
    "set",
    "own",
    "under",
    "read",
    "last",
    "never",
    "us",
    "left",
    "end",
    "along",
    "while",
    "might",
    "next",
    "sound",
    "below",
    "saw",
    "something",
    "thought",
    "both",
    "few",
    "those",
    "always",
    "looked",
    "show",
    "large",
    "often",
    "together",
    "asked",
    "house",
    "world",
    "going",
    "want",
    "school",
    "important",
    "until",
    "form",
    "food",
    "keep",
    "children",
    "feet",
    "land",
    "side",
    "without",
    "boy",
    "once",
    "animals",
    "life",
    "enough",
    "took",
    "sometimes",
    "four",
    "head",
    "above",
    "kind",
    "began",
    "almost",
    "live",
    "page",
    "got",
    "earth",
    "need",
    "far",
    "hand",
    "high",
    "year",
    "mother",
    "light",
    "country",
    "father",
    "let",
    "night",
    "picture",
    "being",
    "study",
    "second",
    "soon",
    "story",
    "since",
    "white",
    "ever",
    "paper",
    "hard",
    "near",
    "sentence",
    "better",
    "best",
    "across",
    "during",
    "today",
    "however",
    "sure",
    "knew",
    "try",
    "told",
    "young",
    "sun",
    "whole",
    "hear",
    "example",
    "heard",
    "several",
    "change",
    "answer",
    "room",
    "sea",
    "against",
    "top",
    "turned",
    "learn",
    "point",
    "city",
    "play",
    "toward",
    "five",
    "himself",
    "usually",
    "money",
    "seen",
    "car",
    "morning",
    "body",
    "upon",
    "family",
    "later",
    "turn",
    "move",
    "face",
    "door",
    "cut",
    "done",
    "group",
    "true",
    "half",
    "red",
    "fish",
    "plants",
    "living",
    "black",
    "eat",
    "short",
    "river",
    "field",
    "stood",
    "book",
    "question",
    "system",
    "backup",
    "archive",
    "disk",
    "storage",
    "server",
    "network",
    "record",
    "window",
    "garden",
    "winter",
    "summer",
    "mountain",
    "village",
    "letter",
    "market",
    "evening",
];

/// Builds text up to a fixed length, silently dropping whatever would overflow it.
struct TextWriter {
    out: Vec<u8>,
    limit: usize,
}

impl TextWriter {
    fn full(&self) -> bool {
        self.out.len() >= self.limit
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = self.limit - self.out.len();
        self.out.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn push_byte(&mut self, byte: u8) {
        if !self.full() {
            self.out.push(byte);
        }
    }
}

/// `len` bytes of pseudo-English: random sentences over [`WORDS`] with commas, full stops
/// and paragraph breaks. It compresses roughly like ordinary prose, logs or documents,
/// without any long repeats that deduplication could find.
pub fn english_text(len: usize, seed: u64) -> Result<Vec<u8>> {
    let mut rng = SplitMix64::new(seed);
    let mut text = TextWriter {
        out: buffer(len, "text")?,
        limit: len,
    };
    let vocabulary = WORDS.len() as u64;
    while !text.full() {
        let sentences = 3 + rng.below(5);
        for s in 0..sentences {
            let words = 4 + rng.below(15);
            for w in 0..words {
                // An index uniform below a uniform bound favours the first words about
                // as a Zipf law would.
                let bound = 1 + rng.below(vocabulary);
                let word = WORDS[rng.below(bound) as usize].as_bytes();
                if w == 0 {
                    text.push_byte(word[0].to_ascii_uppercase());
                    text.push(&word[1..]);
                } else {
                    text.push_byte(b' ');
                    text.push(word);
                }
                if w + 1 < words && rng.below(12) == 0 {
                    text.push_byte(b',');
                }
            }
            text.push_byte(if rng.below(16) == 0 { b'?' } else { b'.' });
            if s + 1 < sentences {
                text.push_byte(b' ');
            }
        }
        text.push(b"\n\n");
    }
    Ok(text.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generators_are_deterministic_and_exact() {
        assert_eq!(
            random_bytes(1001, 7).unwrap(),
            random_bytes(1001, 7).unwrap()
        );
        assert_ne!(random_bytes(64, 7).unwrap(), random_bytes(64, 8).unwrap());
        let text = english_text(10_007, 3).unwrap();
        assert_eq!(text.len(), 10_007);
        assert_eq!(text, english_text(10_007, 3).unwrap());
        assert!(text.is_ascii());
        assert!(text[0].is_ascii_uppercase());
    }

    #[test]
    fn below_stays_in_range() {
        let mut rng = SplitMix64::new(1);
        assert!((0..10_000).all(|_| rng.below(7) < 7));
    }
}
