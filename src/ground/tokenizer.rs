//! CLIP's byte-level BPE tokenizer, as Hugging Face's `CLIPTokenizer` (`transformers/models/clip/
//! tokenization_clip.py`) reads a checkpoint's `vocab.json` and `merges.txt`, with OWL-ViT's padding
//! (`OwlViTProcessor`: `padding="max_length"` to the text model's 16 positions).
//!
//! Steps: clean the text (lower case, runs of white space to one space, as `CLIPTokenizer` does without `ftfy`);
//! split it into pre-tokens with CLIP's pattern (`'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`); map
//! each pre-token's UTF-8 bytes to GPT-2's printable byte alphabet; mark its last symbol with `</w>`; merge the
//! adjacent pair of lowest merge rank until none is left; look the symbols up in the vocabulary.

use std::collections::HashMap;
use std::path::Path;

use eyre::{WrapErr, ensure, eyre};

/// The start-of-text token, prepended to every query.
const BOS: &str = "<|startoftext|>";
/// The end-of-text token, appended to every query (and the unknown token).
const EOS: &str = "<|endoftext|>";
/// OWL-ViT's padding token (`OwlViTProcessor` pads with `!`, id 0 in the published vocabulary).
const PAD: &str = "!";
/// `CLIPTokenizer` reads at most this many merges (`49152 - 256 - 2`), whatever the file holds.
const MAX_MERGES: usize = 49152 - 256 - 2;

/// One tokenized batch of queries, padded to a common length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tokens {
    /// `[queries][length]` token ids: start, the query's tokens, end, then padding.
    pub input_ids: Vec<Vec<u32>>,
    /// `[queries][length]`: 1 for real tokens (start and end included), 0 for padding.
    pub attention_mask: Vec<Vec<u32>>,
}

/// A CLIP tokenizer: the vocabulary and the merge ranks of a checkpoint.
#[derive(Clone, Debug)]
pub struct ClipTokenizer {
    vocab: HashMap<String, u32>,
    ranks: HashMap<(String, String), usize>,
    byte_to_char: [char; 256],
    bos: u32,
    eos: u32,
    pad: u32,
}

impl ClipTokenizer {
    /// Reads `vocab.json` and `merges.txt` from a checkpoint folder.
    pub fn from_dir(dir: &Path) -> eyre::Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).wrap_err_with(|| format!("CLIP tokenizer file missing: {}", path.display()))
        };
        Self::new(&read("vocab.json")?, &read("merges.txt")?)
            .wrap_err_with(|| format!("bad CLIP tokenizer in {}", dir.display()))
    }

    /// A tokenizer from the text of `vocab.json` (token -> id) and `merges.txt` (an optional `#version` line,
    /// then one `left right` pair per line, in rank order).
    pub fn new(vocab_json: &str, merges_txt: &str) -> eyre::Result<Self> {
        let vocab: HashMap<String, u32> = serde_json::from_str(vocab_json).wrap_err("vocab.json: expected {token: id}")?;
        let ranks = merges_txt
            .lines()
            .filter(|line| !line.starts_with("#version") && !line.trim().is_empty())
            .take(MAX_MERGES)
            .enumerate()
            .map(|(rank, line)| {
                let (left, right) = line
                    .split_once(' ')
                    .ok_or_else(|| eyre!("merges.txt line {}: expected `left right`, got {line:?}", rank + 1))?;
                Ok(((left.to_owned(), right.to_owned()), rank))
            })
            .collect::<eyre::Result<_>>()?;
        let id = |token: &str| vocab.get(token).copied().ok_or_else(|| eyre!("vocab.json has no {token:?} token"));
        let (bos, eos, pad) = (id(BOS)?, id(EOS)?, id(PAD)?);
        Ok(Self { ranks, byte_to_char: byte_alphabet(), bos, eos, pad, vocab })
    }

    /// The token ids of one text, without start and end tokens. The special tokens (start, end and OWL-ViT's
    /// padding `!`) are matched in the raw text first, as the reference's added-token split does: a `!` in a
    /// query reads as the padding id.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let specials = [(BOS, self.bos), (EOS, self.eos), (PAD, self.pad)];
        let mut ids = Vec::new();
        let mut rest = text;
        loop {
            // The earliest special token, the longest on a tie.
            let next = specials
                .iter()
                .filter_map(|&(token, id)| rest.find(token).map(|at| (at, std::cmp::Reverse(token.len()), id)))
                .min();
            let Some((at, std::cmp::Reverse(len), id)) = next else {
                ids.extend(self.encode_plain(rest));
                return ids;
            };
            ids.extend(self.encode_plain(&rest[..at]));
            ids.push(id);
            rest = &rest[at + len..];
        }
    }

    /// [`Self::encode`] of text holding no special token.
    fn encode_plain(&self, text: &str) -> Vec<u32> {
        pre_tokens(&clean(text))
            .iter()
            .flat_map(|word| {
                let printable: String = word.bytes().map(|b| self.byte_to_char[usize::from(b)]).collect();
                self.bpe(&printable)
            })
            .map(|symbol| self.vocab.get(&symbol).copied().unwrap_or(self.eos))
            .collect()
    }

    /// Tokenizes each query as `[start, tokens.., end]` padded to `length` positions (OWL-ViT's 16); a query
    /// that does not fit is an error naming it.
    pub fn batch(&self, queries: &[String], length: usize) -> eyre::Result<Tokens> {
        let mut tokens = Tokens { input_ids: Vec::new(), attention_mask: Vec::new() };
        for query in queries {
            let mut ids = vec![self.bos];
            ids.extend(self.encode(query));
            ids.push(self.eos);
            ensure!(
                ids.len() <= length,
                "text query {query:?} is {} tokens with start and end; the text model holds {length}",
                ids.len()
            );
            let real = ids.len();
            ids.resize(length, self.pad);
            tokens.attention_mask.push((0..length).map(|i| u32::from(i < real)).collect());
            tokens.input_ids.push(ids);
        }
        Ok(tokens)
    }

    /// Byte-pair merges of one pre-token (already in the printable alphabet), lowest rank first.
    fn bpe(&self, word: &str) -> Vec<String> {
        let mut symbols: Vec<String> = word.chars().map(String::from).collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str("</w>");
        }
        loop {
            let best = symbols
                .windows(2)
                .enumerate()
                .filter_map(|(i, pair)| self.ranks.get(&(pair[0].clone(), pair[1].clone())).map(|&rank| (rank, i)))
                .min();
            let Some((_, first)) = best else { return symbols };
            let (left, right) = (symbols[first].clone(), symbols[first + 1].clone());
            // Merge every occurrence of the pair, left to right, as the reference does.
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && symbols[i] == left && symbols[i + 1] == right {
                    merged.push(format!("{left}{right}"));
                    i += 2;
                } else {
                    merged.push(symbols[i].clone());
                    i += 1;
                }
            }
            symbols = merged;
        }
    }
}

/// Lower case, white space collapsed to single spaces, trimmed.
fn clean(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

/// CLIP's pre-tokenizer pattern, alternatives tried in order at each position; white space separates and is
/// dropped. (The special tokens, first in the reference pattern, are split off before, in [`ClipTokenizer::encode`].)
fn pre_tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let run = |keep: &dyn Fn(char) -> bool| chars[i..].iter().take_while(|&&c| keep(c)).count();
        let len = if c.is_whitespace() {
            i += 1;
            continue;
        } else if let Some(len) = contraction(&chars[i..]) {
            len
        } else if c.is_alphabetic() {
            run(&|c: char| c.is_alphabetic())
        } else if c.is_numeric() {
            1
        } else {
            run(&|c: char| !c.is_whitespace() && !c.is_alphabetic() && !c.is_numeric())
        };
        out.push(chars[i..i + len].iter().collect());
        i += len;
    }
    out
}

/// Length of a contraction (`'s 't 're 've 'm 'll 'd`) at the start of `chars`.
fn contraction(chars: &[char]) -> Option<usize> {
    ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"]
        .iter()
        .map(|suffix| suffix.chars().collect::<Vec<_>>())
        .find(|suffix| chars.starts_with(suffix))
        .map(|suffix| suffix.len())
}

/// GPT-2's reversible byte -> printable character table (`bytes_to_unicode` in the reference): printable
/// Latin-1 bytes map to themselves, the rest to code points from 256 on, in byte order.
fn byte_alphabet() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut table = ['\0'; 256];
    let mut next = 256;
    for b in 0..256u32 {
        let code = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        table[b as usize] = char::from_u32(code).expect("code points below 512 are characters");
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pre_tokens_follow_clip_pattern() {
        assert_eq!(pre_tokens("it's a red-block 42!"), ["it", "'s", "a", "red", "-", "block", "4", "2", "!"]);
        assert_eq!(pre_tokens("we'll  go"), ["we", "'ll", "go"]);
        assert_eq!(clean("  Red\tBLOCK \n"), "red block");
    }

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let table = byte_alphabet();
        assert_eq!((table[b'a' as usize], table[b' ' as usize], table[0]), ('a', 'Ġ', 'Ā'));
        let mut unique = table.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), 256, "the table is one to one");
    }

    #[test]
    fn merges_lowest_rank_first_and_pads() {
        let vocab = r#"{"!": 0, "r": 1, "e": 2, "d</w>": 3, "re": 4, "red</w>": 5, "<|startoftext|>": 6, "<|endoftext|>": 7}"#;
        let tokenizer = ClipTokenizer::new(vocab, "#version: 0.2\nr e\nre d</w>\n").unwrap();
        assert_eq!(tokenizer.encode("Red"), [5]);
        assert_eq!(tokenizer.encode("x"), [7], "unknown symbols read as the end token, as the reference's unk");
        assert_eq!(tokenizer.encode("red!<|endoftext|> red"), [5, 0, 7, 5], "special tokens split first");
        let tokens = tokenizer.batch(&["red".into()], 5).unwrap();
        assert_eq!(tokens.input_ids, [[6, 5, 7, 0, 0]]);
        assert_eq!(tokens.attention_mask, [[1, 1, 1, 0, 0]]);
        let long = tokenizer.batch(&["red red red red".into()], 5).unwrap_err().to_string();
        assert!(long.contains("6 tokens") && long.contains("holds 5"), "{long}");
        assert!(ClipTokenizer::new(r#"{"r": 1}"#, "").unwrap_err().to_string().contains("<|startoftext|>"));
    }
}
