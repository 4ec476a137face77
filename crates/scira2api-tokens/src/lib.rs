//! Token counting with the real BPE vocabularies (tiktoken's `o200k_base` and `cl100k_base`,
//! embedded, so it works offline), and OpenAI's chat framing for prompts.
//!
//! The vocabulary is chosen from the *internal* (upstream) model name: `cl100k_base` for the
//! GPT-3.5 / GPT-4 families, `o200k_base` for GPT-4o, 4.1, 4.5, 5 and the o-series, and for
//! every other model (the best general estimate). Loading a vocabulary takes a few hundred
//! milliseconds: a vocabulary loads on first use (or earlier, with [`preload_in_background`]);
//! the gateway counts only where the upstream did not report usage, on a blocking thread.
//!
//! Prompt framing follows OpenAI's published recipe: 3 tokens per message, 1 per `name`, 3 to
//! prime the reply, and the function-definition overhead for `tools`. Images count as OpenAI's
//! rule of thumb for a 1024×1024 image: 85 tokens at `detail: low`, 765 otherwise (the real size
//! is not fetched).

#![deny(missing_docs)]

use scira2api_types::{Content, ContentPart, Message};
use serde_json::Value;
use tiktoken_rs::CoreBPE;

/// A BPE vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vocab {
    /// `o200k_base` (GPT-4o and later).
    O200k,
    /// `cl100k_base` (GPT-3.5, GPT-4).
    Cl100k,
}

/// Tokens for an image at `detail: low`.
pub const IMAGE_LOW_TOKENS: u64 = 85;
/// Tokens for a 1024×1024 image at `detail: high`/`auto` (85 + 4 tiles × 170).
pub const IMAGE_HIGH_TOKENS: u64 = 765;

impl Vocab {
    /// The vocabulary for an upstream model name.
    pub fn for_model(model: &str) -> Vocab {
        let m = model.to_ascii_lowercase();
        let newer = ["gpt-4o", "gpt-4.1", "gpt-4.5", "chatgpt-4o"];
        if m.contains("gpt-3.5")
            || m.contains("gpt-35")
            || (m.contains("gpt-4") && !newer.iter().any(|n| m.contains(n)))
        {
            Vocab::Cl100k
        } else {
            Vocab::O200k
        }
    }

    fn bpe(self) -> &'static CoreBPE {
        match self {
            Vocab::O200k => tiktoken_rs::o200k_base_singleton(),
            Vocab::Cl100k => tiktoken_rs::cl100k_base_singleton(),
        }
    }

    /// Tokens in `text` (special tokens are counted as plain text, as a client's text is).
    ///
    /// Exact for ordinary text. Bounded for any text: BPE merging is quadratic in the length of
    /// one word, so text is encoded in pieces of at most [`PIECE`] bytes (cut at whitespace where
    /// possible, which changes nothing for real prose), and beyond [`SAMPLE`] bytes the count of
    /// the first `SAMPLE` bytes is scaled to the whole length.
    pub fn count(self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        if text.len() <= PIECE {
            return self.bpe().encode_ordinary(text).len() as u64;
        }
        let sample = &text[..floor_char_boundary(text, SAMPLE)];
        let mut n = 0u64;
        let mut rest = sample;
        while !rest.is_empty() {
            let cut = piece_end(rest);
            n += self.bpe().encode_ordinary(&rest[..cut]).len() as u64;
            rest = &rest[cut..];
        }
        if sample.len() < text.len() {
            n = (n as f64 * text.len() as f64 / sample.len() as f64).ceil() as u64;
        }
        n
    }

    /// Whether counting tools uses the GPT-3.5/4 constants.
    fn func_init(self) -> i64 {
        match self {
            Vocab::O200k => 7,
            Vocab::Cl100k => 10,
        }
    }
}

/// Longest piece of text encoded at once.
pub const PIECE: usize = 1024;

/// Most text encoded for one count; longer text is counted by proportion.
pub const SAMPLE: usize = 64 << 10;

/// The largest char boundary of `s` at or below `at`.
fn floor_char_boundary(s: &str, at: usize) -> usize {
    if at >= s.len() {
        return s.len();
    }
    let mut i = at;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where the next piece of `s` ends: all of it when short, else before the last whitespace
/// within [`PIECE`] bytes (a word keeps its leading space, as the tokenizer splits it), else at
/// a char boundary.
fn piece_end(s: &str) -> usize {
    if s.len() <= PIECE {
        return s.len();
    }
    let limit = floor_char_boundary(s, PIECE);
    match s[..limit].rfind(char::is_whitespace) {
        Some(ws) if ws > 0 => ws,
        _ => limit.max(s.chars().next().map_or(1, char::len_utf8)),
    }
}

static LOADED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Loads both vocabularies (a few hundred ms); call it off the request path, at startup.
pub fn preload() {
    let _ = Vocab::O200k.bpe();
    let _ = Vocab::Cl100k.bpe();
    LOADED.store(true, std::sync::atomic::Ordering::Release);
}

/// Whether [`preload`] has finished, so counting will not stop to load a vocabulary.
pub fn ready() -> bool {
    LOADED.load(std::sync::atomic::Ordering::Acquire)
}

/// Starts [`preload`] on a background thread unless it already ran; returns at once.
pub fn preload_in_background() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        let _ = std::thread::Builder::new()
            .name("tokens-preload".into())
            .spawn(preload);
    });
}

fn count_content(vocab: Vocab, content: &Content) -> u64 {
    match content {
        Content::Text(t) => vocab.count(t),
        Content::Parts(parts) => parts
            .iter()
            .map(|p| match p {
                ContentPart::Text { text } => vocab.count(text),
                ContentPart::ImageUrl { image_url } => match image_url.detail.as_deref() {
                    Some("low") => IMAGE_LOW_TOKENS,
                    _ => IMAGE_HIGH_TOKENS,
                },
                ContentPart::Other => 0,
            })
            .sum(),
    }
}

fn count_tool_calls(vocab: Vocab, calls: &Value) -> u64 {
    calls
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .map(|c| {
                    let f = &c["function"];
                    vocab.count(f["name"].as_str().unwrap_or(""))
                        + vocab.count(f["arguments"].as_str().unwrap_or(""))
                        + vocab.count(c["id"].as_str().unwrap_or(""))
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Tokens of function definitions (`tools`), per OpenAI's published recipe.
pub fn count_tools(vocab: Vocab, tools: &Value) -> u64 {
    let Some(tools) = tools.as_array().filter(|t| !t.is_empty()) else {
        return 0;
    };
    let (prop_init, prop_key, enum_init, enum_item, func_end) = (3i64, 3i64, -3i64, 3i64, 12i64);
    let mut n: i64 = 0;
    for tool in tools {
        let f = &tool["function"];
        n += vocab.func_init();
        let desc = f["description"]
            .as_str()
            .unwrap_or("")
            .trim_end_matches('.');
        n += vocab.count(&format!("{}:{desc}", f["name"].as_str().unwrap_or(""))) as i64;
        if let Some(props) = f["parameters"]["properties"]
            .as_object()
            .filter(|p| !p.is_empty())
        {
            n += prop_init;
            for (key, p) in props {
                n += prop_key;
                if let Some(items) = p["enum"].as_array() {
                    n += enum_init;
                    for item in items {
                        n += enum_item;
                        n += vocab.count(
                            &item
                                .as_str()
                                .map_or_else(|| item.to_string(), str::to_owned),
                        ) as i64;
                    }
                }
                let ptype = p["type"].as_str().unwrap_or("");
                let pdesc = p["description"]
                    .as_str()
                    .unwrap_or("")
                    .trim_end_matches('.');
                n += vocab.count(&format!("{key}:{ptype}:{pdesc}")) as i64;
            }
        }
    }
    n += func_end;
    n.max(0) as u64
}

/// Prompt tokens of a chat request for `model`: messages with OpenAI's chat framing, plus tools.
pub fn count_prompt(model: &str, messages: &[Message], tools: Option<&Value>) -> u64 {
    let vocab = Vocab::for_model(model);
    let mut n = 3; // every reply is primed with <|start|>assistant<|message|>
    for m in messages {
        n += 3 + vocab.count(&m.role);
        if let Some(c) = &m.content {
            n += count_content(vocab, c);
        }
        if let Some(name) = &m.name {
            n += 1 + vocab.count(name);
        }
        if let Some(calls) = &m.tool_calls {
            n += count_tool_calls(vocab, calls);
        }
        if let Some(id) = &m.tool_call_id {
            n += vocab.count(id);
        }
    }
    n + tools.map_or(0, |t| count_tools(vocab, t))
}

/// Completion tokens of an answer's text for `model`.
pub fn count_completion(model: &str, text: &str) -> u64 {
    Vocab::for_model(model).count(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pathological_text_is_counted_quickly_and_plausibly() {
        let t = std::time::Instant::now();
        let n = count_completion("gpt-4o", &"x".repeat(2 << 20));
        assert!(n > 100_000 && n < 2_200_000, "{n}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            t.elapsed()
        );
        // Prose longer than a piece counts as it does in one go, or within a token a piece.
        let prose = "The quick brown fox jumps over the lazy dog. ".repeat(200);
        let whole = Vocab::O200k.bpe().encode_ordinary(&prose).len() as u64;
        let pieces = count_completion("gpt-4o", &prose);
        assert!(
            pieces.abs_diff(whole) <= (prose.len() / PIECE) as u64 + 1,
            "{pieces} vs {whole}"
        );
        let mixed = "日本語のテキスト".repeat(500);
        assert!(count_completion("gpt-4o", &mixed) > 0);
    }

    const SAMPLES: &[&str] = &[
        "hello world",
        "The quick brown fox jumps over the lazy dog.",
        "你好，世界。日本語のテキストも数えます。한국어도요.",
        "Emoji: 😀🧠𝄞🀄 and 👨‍👩‍👧‍👦 families",
        "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{v:?}\");\n}\n",
        "    indented\ttabs\r\nand   spaces   ",
        "<|endoftext|> is plain text here",
    ];

    #[test]
    fn known_counts() {
        assert_eq!(Vocab::Cl100k.count("hello world"), 2);
        assert_eq!(Vocab::O200k.count("hello world"), 2);
        // tiktoken's README example.
        assert_eq!(Vocab::Cl100k.count("tiktoken is great!"), 6);
        assert_eq!(Vocab::O200k.count(""), 0);
    }

    #[test]
    fn agrees_with_an_independent_bpe_implementation() {
        // bpe-openai (GitHub's BPE, its own embedded vocabularies) must count the same.
        for s in SAMPLES {
            assert_eq!(
                Vocab::O200k.count(s) as usize,
                bpe_openai::o200k_base().count(*s),
                "o200k {s:?}"
            );
            assert_eq!(
                Vocab::Cl100k.count(s) as usize,
                bpe_openai::cl100k_base().count(*s),
                "cl100k {s:?}"
            );
        }
    }

    #[test]
    fn vocab_by_internal_model() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini",
            "gpt-4.1-nano",
            "o3",
            "o4-mini",
            "gpt-5",
            "scira-default",
            "llama-3",
        ] {
            assert_eq!(Vocab::for_model(m), Vocab::O200k, "{m}");
        }
        for m in ["gpt-4", "gpt-4-turbo", "gpt-3.5-turbo", "gpt-4-0613"] {
            assert_eq!(Vocab::for_model(m), Vocab::Cl100k, "{m}");
        }
    }

    fn cookbook_messages() -> Vec<Message> {
        // OpenAI cookbook, "How to count tokens with tiktoken": the API reported 129 prompt
        // tokens for gpt-3.5-turbo / gpt-4 and 124 for gpt-4o / gpt-4o-mini.
        serde_json::from_value(json!([
            {"role": "system", "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain English."},
            {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
            {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
            {"role": "system", "name": "example_user", "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage."},
            {"role": "system", "name": "example_assistant", "content": "Let's talk later when we're less busy about how to do better."},
            {"role": "user", "content": "This late pivot means we don't have time to boil the ocean for the client deliverable."}
        ]))
        .unwrap()
    }

    #[test]
    fn chat_framing_matches_the_api() {
        let m = cookbook_messages();
        assert_eq!(count_prompt("gpt-4-0613", &m, None), 129);
        assert_eq!(count_prompt("gpt-3.5-turbo", &m, None), 129);
        assert_eq!(count_prompt("gpt-4o", &m, None), 124);
        assert_eq!(count_prompt("gpt-4o-mini", &m, None), 124);
    }

    #[test]
    fn framing_details() {
        let one: Vec<Message> =
            serde_json::from_value(json!([{"role": "user", "content": "hello world"}])).unwrap();
        // 3 (message) + 1 (role "user") + 2 (text) + 3 (reply priming)
        assert_eq!(count_prompt("gpt-4o", &one, None), 9);
        let img: Vec<Message> = serde_json::from_value(json!([{"role": "user", "content": [
            {"type": "text", "text": "hello world"},
            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
            {"type": "image_url", "image_url": {"url": "https://x/z.png"}}
        ]}]))
        .unwrap();
        assert_eq!(
            count_prompt("gpt-4o", &img, None),
            9 + IMAGE_LOW_TOKENS + IMAGE_HIGH_TOKENS
        );
        let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Get the weather.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["c", "f"]}}}}}]);
        let t = count_tools(Vocab::O200k, &tools);
        let expected = 7
            + Vocab::O200k.count("get_weather:Get the weather")
            + 3
            + 3
            + Vocab::O200k.count("city:string:City name")
            + 3
            - 3
            + 3
            + 1
            + 3
            + 1
            + Vocab::O200k.count("unit:string:")
            + 12;
        assert_eq!(t, expected);
        assert_eq!(count_prompt("gpt-4o", &one, Some(&tools)), 9 + t);
        assert_eq!(count_tools(Vocab::O200k, &json!([])), 0);
    }
}
