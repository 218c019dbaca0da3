//! The CLIP tokenizer gives transformers' `CLIPTokenizer` ids exactly, through the production
//! loader on the real 49,408-token vocabulary. Ids are integers: no tolerance.

use i2vgen::Error;
use i2vgen::loading::tokenizer::CLIPTokenizer;

const TOKENIZER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tiny-i2vgen/tokenizer");
const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/golden/tokenizer.json");

fn read(file: &str) -> String {
    let path = format!("{TOKENIZER}/{file}");
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{path}: {err}"))
}

fn tokenizer() -> CLIPTokenizer {
    CLIPTokenizer::from_files(
        &read("vocab.json"),
        &read("merges.txt"),
        Some(&read("tokenizer_config.json")),
        Some(&read("special_tokens_map.json")),
    )
    .unwrap()
}

#[derive(serde::Deserialize)]
struct Case {
    prompt: String,
    ids: Vec<u32>,
}

#[test]
fn matches_transformers_on_every_golden_prompt() {
    let tokenizer = tokenizer();
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&golden).unwrap();
    assert_eq!(cases.len(), 31);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let ids = tokenizer.encode(&case.prompt);
            (ids != case.ids).then(|| format!("{:?}\n  expected {:?}\n  found    {:?}", case.prompt, case.ids, ids))
        })
        .collect();
    assert!(failures.is_empty(), "{} prompts differ:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn a_photo_of_a_cat() {
    let tokenizer = tokenizer();
    assert_eq!(tokenizer.model_max_length(), 77);
    assert_eq!((tokenizer.bos_token_id(), tokenizer.eos_token_id(), tokenizer.pad_token_id()), (49406, 49407, 0));
    let ids = tokenizer.encode("a photo of a cat");
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[..7], [49406, 320, 1125, 539, 320, 2368, 49407]);
    assert!(ids[7..].iter().all(|&id| id == 0), "padded with {:?}", &ids[7..]);
}

#[test]
fn defaults_pad_with_the_end_token() {
    let tokenizer = CLIPTokenizer::from_files(&read("vocab.json"), &read("merges.txt"), None, None).unwrap();
    assert_eq!(tokenizer.model_max_length(), 77);
    assert_eq!(tokenizer.pad_token_id(), 49407);
    assert_eq!(tokenizer.encode("a photo of a cat")[7..], [49407; 70]);
}

#[test]
fn broken_vocab_names_the_file() {
    let result = CLIPTokenizer::from_files("{\"a\": ", &read("merges.txt"), None, None);
    match result {
        Err(Error::Config { file, .. }) => assert_eq!(file, "vocab.json"),
        Err(err) => panic!("expected a vocab.json error, got: {err}"),
        Ok(_) => panic!("a truncated vocab.json was accepted"),
    }
}
