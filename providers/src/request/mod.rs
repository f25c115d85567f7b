//! Request translation between dialects (OpenAI chat <-> Anthropic messages).
