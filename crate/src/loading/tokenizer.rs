//! Port of transformers `models/clip/tokenization_clip.py` (`CLIPTokenizer`, the
//! tokenizers-backed class of transformers 5), as diffusers calls it:
//! `tokenizer(prompt, padding="max_length", max_length=77, truncation=True).input_ids`.
//!
//! The stages are those of the `tokenizers` pipeline the class assembles:
//! 1. added tokens (the special tokens) are cut out of the text whole;
//! 2. normalizer: NFC, every whitespace run → one space, lowercase;
//! 3. pre-tokenizer: keep the matches of CLIP's pattern, then GPT-2 byte level;
//! 4. model: byte-pair encoding with the `</w>` end-of-word suffix, merges applied by rank;
//! 5. post-processor: `<|startoftext|>` … `<|endoftext|>`, truncated and padded to
//!    `model_max_length`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

use crate::{Error, Result};

/// The `Split` pre-tokenizer's pattern; only its matches are kept
/// (`behavior="removed", invert=True`).
static PAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+")
        .expect("CLIP pattern")
});

/// `ByteLevel(use_regex=True)` splits each piece again with GPT-2's pattern. Its `\s+(?!\S)`
/// alternative is dropped: pieces never hold whitespace. The split bites on a lowercased
/// `<|ENDOFTEXT|>` that was not cut out as a special token: `<|`, `endoftext`, `|>`.
static BYTE_LEVEL_PAT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+").expect("GPT-2 pattern")
});

/// The normalizer's `Replace(Regex(r"\s+"), " ")`.
static WHITESPACE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\s+").expect("whitespace"));

const END_OF_WORD_SUFFIX: &str = "</w>";
const DEFAULT_MODEL_MAX_LENGTH: usize = 77;

/// The longest prompt or negative prompt a request takes, in characters. CLIP reads only the
/// first 75 tokens, which even one-letter words fill within 150 characters; the cap bounds the
/// normalizing that runs over the whole text before the tokenizer stops.
pub const MAX_PROMPT_CHARS: usize = 2_000;

/// Refuses a prompt over [`MAX_PROMPT_CHARS`] characters: `field` is the request field,
/// `what` the prompt's name in the sentence ("the prompt", "the negative prompt").
pub fn check_prompt(field: &'static str, what: &str, prompt: &str) -> Result<()> {
    let chars = prompt.chars().count();
    if chars > MAX_PROMPT_CHARS {
        return Err(Error::request(
            field,
            format!(
                "{what} has {} characters; at most {} are read — shorten it",
                thousands(chars),
                thousands(MAX_PROMPT_CHARS)
            ),
        ));
    }
    Ok(())
}

/// `12345` → `12,345`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A token matched whole in the text before byte-pair encoding (tokenizers' `AddedToken`).
#[derive(Debug, Clone)]
struct AddedToken {
    content: String,
    id: u32,
    /// Matched in the normalized text (`true`) or in the raw text (`false`).
    normalized: bool,
}

/// A stretch of text: an added token, already an id, or text still to tokenize.
enum Piece<'a> {
    Added(u32),
    Text(&'a str),
}

/// CLIP's byte-level BPE tokenizer, equal id for id to transformers' `CLIPTokenizer`.
#[derive(Debug, Clone)]
pub struct CLIPTokenizer {
    vocab: HashMap<String, u32>,
    /// `(left, right)` → `(rank, merged)`: a lower rank merges first.
    merges: HashMap<(u32, u32), (u32, u32)>,
    added_tokens: Vec<AddedToken>,
    /// GPT-2's `bytes_to_unicode`: every byte as a printable character.
    byte_encoder: [char; 256],
    unk_token_id: u32,
    bos_token_id: u32,
    eos_token_id: u32,
    pad_token_id: u32,
    model_max_length: usize,
}

impl CLIPTokenizer {
    /// Contents of vocab.json, merges.txt, and optionally tokenizer_config.json and
    /// special_tokens_map.json (pad/bos/eos/unk token strings and model_max_length come from
    /// these; defaults as transformers: pad = eos = unk = `<|endoftext|>`,
    /// bos = `<|startoftext|>`, max 77).
    ///
    /// As in transformers, an `added_tokens_decoder` in tokenizer_config.json makes
    /// special_tokens_map.json unused; otherwise the map's entries override the config's.
    pub fn from_files(
        vocab_json: &str,
        merges_txt: &str,
        tokenizer_config_json: Option<&str>,
        special_tokens_map_json: Option<&str>,
    ) -> Result<Self> {
        let vocab: HashMap<String, u32> = serde_json::from_str(vocab_json)
            .map_err(|err| config_error("vocab.json", format!("expected a JSON object of token → id ({err})")))?;
        let merges = read_merges(merges_txt, &vocab)?;
        let config = read_object("tokenizer_config.json", tokenizer_config_json)?;
        let special_tokens_map = read_object("special_tokens_map.json", special_tokens_map_json)?;

        // Named special tokens: special_tokens_map.json overrides tokenizer_config.json, unless an
        // `added_tokens_decoder` makes the map unused (transformers' legacy branch).
        let mut added_tokens = read_added_tokens_decoder(&config)?;
        let uses_map = !config.contains_key("added_tokens_decoder");
        let named = |key: &str| -> Result<Option<(String, bool)>> {
            let in_map = special_tokens_map.get(key).filter(|_| uses_map);
            let found = in_map
                .map(|token| ("special_tokens_map.json", token))
                .or_else(|| config.get(key).map(|token| ("tokenizer_config.json", token)));
            match found {
                None | Some((_, Value::Null)) => Ok(None),
                Some((file, token)) => read_token(file, token).map(Some),
            }
        };
        // A content declared twice (eos and unk are both `<|endoftext|>`) keeps its first
        // declaration; transformers' choice between disagreeing `normalized` flags depends on the
        // order its layers add them, and no published CLIP tokenizer disagrees with itself.
        let mut named_id = |key: &str, default: &str| -> Result<u32> {
            let (content, normalized) = named(key)?.unwrap_or_else(|| (default.to_owned(), false));
            if let Some(token) = added_tokens.iter().find(|t| t.content == content) {
                return Ok(token.id);
            }
            // Saturating: a damaged `added_tokens_decoder` may hold id 4294967295; the text
            // encoder's `vocab_size` refuses such ids before any lookup (`consistency::check`).
            let next_id = added_tokens.iter().map(|t| t.id.saturating_add(1)).fold(vocab.len() as u32, u32::max);
            let id = vocab.get(&content).copied().unwrap_or(next_id);
            added_tokens.push(AddedToken { content, id, normalized });
            Ok(id)
        };
        let bos_token_id = named_id("bos_token", "<|startoftext|>")?;
        let eos_token_id = named_id("eos_token", "<|endoftext|>")?;
        let unk_token_id = named_id("unk_token", "<|endoftext|>")?;
        let pad_token_id = named_id("pad_token", "<|endoftext|>")?;

        let model_max_length = match config.get("model_max_length") {
            None | Some(Value::Null) => DEFAULT_MODEL_MAX_LENGTH,
            Some(value) => {
                // Every prompt is padded to this length: bounded, so a damaged file cannot ask
                // for gigabytes of token ids (real CLIP tokenizers use 77).
                value.as_u64().and_then(|n| usize::try_from(n).ok()).filter(|n| (2..=4096).contains(n)).ok_or_else(
                    || {
                        config_error(
                            "tokenizer_config.json",
                            format!("model_max_length {value} is not a token count between 2 and 4096"),
                        )
                    },
                )?
            }
        };

        Ok(Self {
            vocab,
            merges,
            added_tokens,
            byte_encoder: bytes_to_unicode(),
            unk_token_id,
            bos_token_id,
            eos_token_id,
            pad_token_id,
            model_max_length,
        })
    }

    /// Ids of one prompt, truncated and padded to model_max_length.
    ///
    /// # Shapes
    /// `[model_max_length]`
    ///
    /// Words are encoded one after another and each word's ids depend on that word alone, so
    /// encoding stops once the ids that survive truncation exist: byte-pair encoding never goes
    /// past the words that fill the first 75 tokens (normalizing still reads the whole text).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let kept = self.model_max_length - 2;
        let mut ids = Vec::new();
        // 1. added tokens matched in the raw text
        'text: for piece in self.split_added_tokens(text, false) {
            let raw = match piece {
                Piece::Added(id) => {
                    ids.push(id);
                    if ids.len() >= kept {
                        break 'text;
                    }
                    continue;
                }
                Piece::Text(raw) => raw,
            };
            // 2. normalizer, then added tokens matched in the normalized text
            let normalized = normalize(raw);
            for piece in self.split_added_tokens(&normalized, true) {
                match piece {
                    Piece::Added(id) => ids.push(id),
                    // 3. pre-tokenizer, 4. model
                    Piece::Text(text) => {
                        for word in pre_tokenize(text) {
                            ids.extend(self.bpe(&self.byte_level(word)));
                            if ids.len() >= kept {
                                break 'text;
                            }
                        }
                    }
                }
                if ids.len() >= kept {
                    break 'text;
                }
            }
        }

        // 5. truncation, post-processor (RobertaProcessing), padding
        ids.truncate(kept);
        let mut input_ids = Vec::with_capacity(self.model_max_length);
        input_ids.push(self.bos_token_id);
        input_ids.extend(ids);
        input_ids.push(self.eos_token_id);
        input_ids.resize(self.model_max_length, self.pad_token_id);
        input_ids
    }

    /// Length of every [`encode`](Self::encode) output (77 for CLIP).
    pub fn model_max_length(&self) -> usize {
        self.model_max_length
    }

    /// The largest id [`encode`](Self::encode) can give (vocabulary and added tokens): the text
    /// encoder needs an embedding row for it.
    pub fn max_token_id(&self) -> u32 {
        self.vocab.values().chain(self.added_tokens.iter().map(|t| &t.id)).copied().max().unwrap_or(0)
    }

    /// Id that pads a prompt to `model_max_length` (`!`, id 0, for SD 2.x and I2VGen-XL).
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    /// Id of `<|startoftext|>`, first in every prompt.
    pub fn bos_token_id(&self) -> u32 {
        self.bos_token_id
    }

    /// Id of `<|endoftext|>`, after the last token of every prompt.
    pub fn eos_token_id(&self) -> u32 {
        self.eos_token_id
    }

    /// Id given to a character missing from the vocabulary (never, with byte-level encoding).
    pub fn unk_token_id(&self) -> u32 {
        self.unk_token_id
    }

    /// Cuts the added tokens with this `normalized` flag out of `text`, leftmost first and the
    /// longest where several start at one place (tokenizers' `MatchKind::LeftmostLongest`).
    fn split_added_tokens<'a>(&self, text: &'a str, normalized: bool) -> Vec<Piece<'a>> {
        let tokens: Vec<&AddedToken> =
            self.added_tokens.iter().filter(|t| t.normalized == normalized && !t.content.is_empty()).collect();
        let mut pieces = Vec::new();
        let mut start = 0;
        let mut pos = 0;
        while pos < text.len() {
            let longest = tokens.iter().filter(|t| text[pos..].starts_with(&t.content)).max_by_key(|t| t.content.len());
            match longest {
                Some(token) => {
                    if start < pos {
                        pieces.push(Piece::Text(&text[start..pos]));
                    }
                    pieces.push(Piece::Added(token.id));
                    pos += token.content.len();
                    start = pos;
                }
                None => pos += text[pos..].chars().next().map_or(1, char::len_utf8),
            }
        }
        if start < text.len() {
            pieces.push(Piece::Text(&text[start..]));
        }
        pieces
    }

    /// `ByteLevel`: each UTF-8 byte of the word becomes its printable stand-in.
    fn byte_level(&self, word: &str) -> String {
        word.bytes().map(|b| self.byte_encoder[b as usize]).collect()
    }

    /// Byte-pair encoding of one byte-level word.
    ///
    /// The rule is the plain loop's: merge the lowest-ranked adjacent pair, the leftmost on ties,
    /// until no pair has a merge. Rescanning every pair after each merge is quadratic in the word
    /// length, and a prompt without spaces is one word (20,000 letters took a minute), so the
    /// pairs wait in a heap keyed by `(rank, position)` over a linked list of symbols, as in
    /// `tokenizers`' `Word::merge_all`: O(n log n), the same merges in the same order.
    fn bpe(&self, word: &str) -> Vec<u32> {
        // 1. one symbol per character, the last carrying the end-of-word suffix; unknown
        //    characters become the unk token one by one (`fuse_unk=False`)
        let mut symbols = self.symbols(word);
        let count = symbols.len();
        // 2. merge the lowest-ranked pair, leftmost on ties, until no pair has a merge.
        //    `next[i]`/`prev[i]`: the neighbours of live symbol `i` (`count` or `usize::MAX` at
        //    the ends); a merge keeps the left symbol and kills the right one.
        let mut next: Vec<usize> = (1..=count).collect();
        let mut prev: Vec<usize> = (0..count).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; count];
        let mut heap = BinaryHeap::new();
        let candidate = |symbols: &[u32], left: usize, right: usize| {
            let &(rank, merged) = self.merges.get(&(symbols[left], symbols[right]))?;
            Some(Reverse((rank, left, merged)))
        };
        heap.extend((1..count).filter_map(|i| candidate(&symbols, i - 1, i)));
        while let Some(Reverse((rank, left, merged))) = heap.pop() {
            // An entry is stale once either symbol of its pair has changed: the pair now at
            // `left` must still be the one this rank merges (a rank names exactly one pair).
            let right = next[left];
            let pair_rank = |right| self.merges.get(&(symbols[left], symbols[right])).map(|&(rank, _)| rank);
            if !alive[left] || right >= count || pair_rank(right) != Some(rank) {
                continue;
            }
            symbols[left] = merged;
            alive[right] = false;
            next[left] = next[right];
            if next[left] < count {
                prev[next[left]] = left;
                heap.extend(candidate(&symbols, left, next[left]));
            }
            if prev[left] < count {
                heap.extend(candidate(&symbols, prev[left], left));
            }
        }
        (0..count).filter(|&i| alive[i]).map(|i| symbols[i]).collect()
    }

    /// The symbols BPE starts from: one per character of a byte-level word, the last with the
    /// end-of-word suffix.
    fn symbols(&self, word: &str) -> Vec<u32> {
        let count = word.chars().count();
        word.chars()
            .enumerate()
            .map(|(i, c)| {
                let mut symbol = c.to_string();
                if i + 1 == count {
                    symbol.push_str(END_OF_WORD_SUFFIX);
                }
                self.vocab.get(&symbol).copied().unwrap_or(self.unk_token_id)
            })
            .collect()
    }
}

/// The normalizer: `Sequence[NFC, Replace(\s+ → " "), Lowercase]`. Lowercase maps character by
/// character like tokenizers, so a final `Σ` becomes `σ`, not `str::to_lowercase`'s `ς`.
fn normalize(text: &str) -> String {
    let nfc: String = text.nfc().collect();
    WHITESPACE.replace_all(&nfc, " ").chars().flat_map(char::to_lowercase).collect()
}

/// The pre-tokenizer: CLIP's pattern keeps its matches, `ByteLevel` splits them with GPT-2's.
fn pre_tokenize(text: &str) -> impl Iterator<Item = &str> {
    PAT.find_iter(text).flat_map(|piece| BYTE_LEVEL_PAT.find_iter(piece.as_str())).map(|word| word.as_str())
}

/// GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the others take the
/// characters from U+0100 on, in byte order.
fn bytes_to_unicode() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        table[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("below U+0200")
        };
    }
    table
}

/// merges.txt: a `#version` header, then one `left right` pair per line, highest priority first.
fn read_merges(merges_txt: &str, vocab: &HashMap<String, u32>) -> Result<HashMap<(u32, u32), (u32, u32)>> {
    let mut merges = HashMap::new();
    for (rank, line) in merges_txt.lines().enumerate() {
        if line.starts_with("#version") {
            continue;
        }
        let bad = |what: String| config_error("merges.txt", format!("line {}: {what}", rank + 1));
        let Some((left, right)) = line.split_once(' ').filter(|(_, r)| !r.contains(' ')) else {
            return Err(bad(format!("expected two tokens separated by one space, found `{line}`")));
        };
        let id = |token: &str| vocab.get(token).copied().ok_or_else(|| bad(format!("`{token}` is not in vocab.json")));
        merges.insert((id(left)?, id(right)?), (rank as u32, id(&format!("{left}{right}"))?));
    }
    Ok(merges)
}

/// tokenizer_config.json's `added_tokens_decoder`: id → token, as transformers saves them.
fn read_added_tokens_decoder(config: &Map<String, Value>) -> Result<Vec<AddedToken>> {
    let file = "tokenizer_config.json";
    let decoder = match config.get("added_tokens_decoder") {
        None => return Ok(Vec::new()),
        Some(Value::Object(decoder)) => decoder,
        Some(_) => {
            let message = "added_tokens_decoder must be an object of id → token";
            return Err(config_error(file, message.into()));
        }
    };
    decoder
        .iter()
        .map(|(id, token)| {
            let (content, normalized) = read_token(file, token)?;
            let id = id
                .parse()
                .map_err(|_| config_error(file, format!("added_tokens_decoder key `{id}` is not a token id")))?;
            Ok(AddedToken { content, id, normalized })
        })
        .collect()
}

/// An optional JSON file that must hold an object.
fn read_object(file: &str, json: Option<&str>) -> Result<Map<String, Value>> {
    let Some(json) = json else {
        return Ok(Map::new());
    };
    match serde_json::from_str(json) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(config_error(file, "expected a JSON object".into())),
        Err(err) => Err(config_error(file, format!("not valid JSON ({err})"))),
    }
}

/// A special token as a plain string or as an `AddedToken` object: its content and whether it
/// is matched after normalization (`false` unless the object says otherwise).
fn read_token(file: &str, token: &Value) -> Result<(String, bool)> {
    let bad = |message: String| config_error(file, message);
    match token {
        Value::String(content) => Ok((content.clone(), false)),
        Value::Object(fields) => {
            let content = fields
                .get("content")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("special token {token} has no string `content`")))?;
            let flag = |name: &str| fields.get(name).and_then(Value::as_bool).unwrap_or(false);
            if let Some(name) = ["lstrip", "rstrip", "single_word"].into_iter().find(|n| flag(n)) {
                return Err(bad(format!(
                    "special token `{content}` sets `{name}`, which CLIP tokenizers never use \
                     and this port does not support"
                )));
            }
            Ok((content.to_owned(), flag("normalized")))
        }
        _ => Err(bad(format!("special token {token} is neither a string nor an object"))),
    }
}

fn config_error(file: &str, message: String) -> Error {
    Error::Config { file: file.to_owned(), message }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    fn tokenizer() -> CLIPTokenizer {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-i2vgen/tokenizer");
        let read = |file: &str| std::fs::read_to_string(format!("{dir}/{file}")).expect("tokenizer fixture");
        let (config, map) = (read("tokenizer_config.json"), read("special_tokens_map.json"));
        CLIPTokenizer::from_files(&read("vocab.json"), &read("merges.txt"), Some(&config), Some(&map))
            .expect("tokenizer fixture")
    }

    /// The merge loop as first written (and as the golden ids were checked with): rescan every
    /// pair, merge the lowest rank, leftmost on ties.
    fn reference_bpe(tokenizer: &CLIPTokenizer, word: &str) -> Vec<u32> {
        let mut symbols = tokenizer.symbols(word);
        while let Some((_, i, merged)) = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(i, pair)| {
                let &(rank, merged) = tokenizer.merges.get(&(pair[0], pair[1]))?;
                Some((rank, i, merged))
            })
            .min()
        {
            symbols[i] = merged;
            symbols.remove(i + 1);
        }
        symbols
    }

    /// [`CLIPTokenizer::encode`] with the reference merge loop and no early stop: every word is
    /// encoded, then the ids are truncated.
    fn reference_encode(tokenizer: &CLIPTokenizer, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        for piece in tokenizer.split_added_tokens(text, false) {
            match piece {
                Piece::Added(id) => ids.push(id),
                Piece::Text(raw) => {
                    let normalized = normalize(raw);
                    for piece in tokenizer.split_added_tokens(&normalized, true) {
                        match piece {
                            Piece::Added(id) => ids.push(id),
                            Piece::Text(text) => {
                                for word in pre_tokenize(text) {
                                    ids.extend(reference_bpe(tokenizer, &tokenizer.byte_level(word)));
                                }
                            }
                        }
                    }
                }
            }
        }
        ids.truncate(tokenizer.model_max_length - 2);
        let mut input_ids = vec![tokenizer.bos_token_id];
        input_ids.extend(ids);
        input_ids.push(tokenizer.eos_token_id);
        input_ids.resize(tokenizer.model_max_length, tokenizer.pad_token_id);
        input_ids
    }

    /// Deterministic pseudo-random text over `alphabet` (a 64-bit LCG; no rand dependency).
    fn text(alphabet: &[char], len: usize, seed: u64) -> String {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                alphabet[(state >> 33) as usize % alphabet.len()]
            })
            .collect()
    }

    #[test]
    fn heap_merges_equal_the_rescanning_loop() {
        let tokenizer = tokenizer();
        // Small alphabets make long merge chains and many equal-rank ties; the last mixes
        // multi-byte letters (several byte-level symbols per character).
        let alphabets: [&[char]; 5] = [
            &['a', 'b'],
            &['a', 'e', 'n', 't', 's'],
            &['t', 'h', 'e', 'r', 'i', 'n', 'g', 'o', 'a', 'l'],
            &['l', 'o', 'w', 'e', 'r', 's', 't', 'n', 'i', 'd'],
            &['é', 'a', 'ß', 'k', 'ü', '日', '本', 'o'],
        ];
        let mut words = 0;
        for (a, alphabet) in alphabets.iter().enumerate() {
            for (s, len) in [1, 2, 3, 4, 5, 7, 9, 13, 20, 33, 64, 150, 400, 1_000].into_iter().enumerate() {
                let word = tokenizer.byte_level(&text(alphabet, len, (a * 100 + s) as u64));
                assert_eq!(tokenizer.bpe(&word), reference_bpe(&tokenizer, &word), "word {word:?}");
                words += 1;
            }
        }
        assert_eq!(words, 70);
    }

    #[test]
    fn stopping_after_the_kept_tokens_changes_no_id() {
        let tokenizer = tokenizer();
        let prompts = [
            "a photo of a cat".to_owned(),
            "a red fox jumps over the lazy dog, ".repeat(20),
            "<|startoftext|>".repeat(100),
            format!("{}<|endoftext|> a cat", "x ".repeat(74)),
            format!("{}<|endoftext|> a cat", "x ".repeat(75)),
            format!("{} supercalifragilisticexpialidocious tail", "go ".repeat(72)),
            text(&['a', 'b', ' ', ',', '<', '|', '>', '1', 'é'], 3_000, 7),
        ];
        for prompt in &prompts {
            assert_eq!(tokenizer.encode(prompt), reference_encode(&tokenizer, prompt), "prompt {prompt:?}");
        }
    }

    /// A prompt without spaces is one word; it used to take a minute at 20,000 characters (debug
    /// build). Now it is a few milliseconds; one second leaves room for slow machines.
    #[test]
    fn a_20000_character_word_tokenizes_in_well_under_a_second() {
        let tokenizer = tokenizer();
        for prompt in [text(&['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'], 20_000, 1), "ab".repeat(10_000)] {
            let start = Instant::now();
            let ids = tokenizer.encode(&prompt);
            let took = start.elapsed();
            assert!(took < Duration::from_secs(1), "20,000 characters took {took:?}");
            assert_eq!(ids.len(), 77);
            assert_eq!((ids[0], ids[76]), (tokenizer.bos_token_id, tokenizer.eos_token_id));
            let word = tokenizer.byte_level(&prompt);
            assert_eq!(ids[1..76], tokenizer.bpe(&word)[..75]);
        }
    }
}
