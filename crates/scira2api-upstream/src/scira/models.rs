//! Scira's built-in model table, used when `MODEL_MAPPINGS` is unset or malformed.

/// `owned_by` for models served through Scira.
pub const SCIRA_OWNED_BY: &str = "scira";

/// The default table for the Scira provider: familiar names for Scira's current model ids
/// (Scira `ai/providers.ts` at 2026-03). The first eight work without signing in; the rest need
/// a signed-in cookie (`SCIRA_COOKIE`), some a Pro or Max plan.
pub const SCIRA_DEFAULT_MAPPINGS: &[(&str, &str)] = &[
    ("gpt-4o", "scira-default"),
    ("grok-4.1-fast", "scira-default"),
    ("qwen3-32b", "scira-qwen-32b"),
    ("qwen3-32b-thinking", "scira-qwen-32b-thinking"),
    ("qwen3-4b", "scira-qwen-4b"),
    ("nemotron-3-super", "scira-nemotron-3-super"),
    ("trinity-large", "scira-trinity-large"),
    ("gemini-3.1-flash-lite", "scira-gemini-3.1-flash-lite"),
    ("step-3.5-flash", "scira-step-3.5-flash"),
    ("gpt-4.1-nano", "scira-gpt-4.1-nano"),
    ("gpt-5.4-mini", "scira-gpt-5.4-mini"),
    ("gpt-5.4-nano", "scira-gpt-5.4-nano"),
    ("mistral-small", "scira-mistral-small"),
    ("kimi-k2.5", "scira-kimi-k2.5"),
    ("grok-4", "scira-grok-4"),
    ("gpt-5.4", "scira-gpt-5.4"),
    ("o3", "scira-o3"),
    ("deepseek-r1", "scira-deepseek-r1"),
    ("claude-sonnet-4.6", "scira-anthropic-sonnet-4.6"),
    (
        "claude-sonnet-4.6-thinking",
        "scira-anthropic-sonnet-4.6-think",
    ),
    ("claude-opus-4.6", "scira-anthropic-opus-4.6"),
    ("gemini-3.1-pro", "scira-gemini-3.1-pro"),
];
