//! Anthropic -> OpenAI rules.
