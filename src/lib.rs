//! streamgate: a streaming gateway for LLM providers.
//!
//! # Layout
//!
//! - [`cli`]: the `streamgate` command line (`events`, `convert`).
//!
//! The dialect adapters and the Agent Event Stream types live in the `providers` crate.

pub mod cli;
