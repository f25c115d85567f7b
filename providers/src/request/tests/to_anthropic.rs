//! OpenAI -> Anthropic rules.
