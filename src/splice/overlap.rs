//! Removing the text a continuation repeats from what the client already has.
//!
//! A continuation's head may repeat the tail of the text already sent: an OpenAI-dialect model
//! asked to "continue" often restarts the interrupted sentence, and a prefill whose trailing
//! whitespace had to be trimmed (Anthropic rejects it) comes back with that whitespace. Short
//! coincidences must not be cut ("mis" + "sion" shares an "s"), so only whitespace the gateway
//! itself trimmed, a repeat of at least [`MIN_REPEAT`] bytes, or a restart of the whole text
//! sent so far counts as overlap.

/// Shortest repeated text treated as an overlap rather than a coincidence.
pub const MIN_REPEAT: usize = 12;

/// How much of the sent tail is compared, in bytes.
pub const WINDOW: usize = 256;

/// The number of bytes at the start of `head` that repeat the end of `sent`.
///
/// `trimmed` is the whitespace removed from the end of the prefill (so not seen by the
/// model): a head starting with exactly it repeats it.
pub fn overlap(sent: &str, head: &str, trimmed: &str) -> usize {
    let tail = tail(sent, WINDOW);
    // A model that starts the whole answer again (short answers cut early).
    if !sent.is_empty() && sent.len() <= WINDOW && head.starts_with(sent) {
        return sent.len();
    }
    // Longest suffix of the tail that the head starts with.
    let mut best = 0;
    for (start, _) in tail.char_indices() {
        let suffix = &tail[start..];
        if suffix.len() >= MIN_REPEAT && head.starts_with(suffix) {
            best = suffix.len();
            break;
        }
    }
    if best == 0 && !trimmed.is_empty() && head.starts_with(trimmed) {
        best = trimmed.len();
    }
    best
}

/// Whether `head` is long enough to decide on [`overlap`] (more text could only add a longer
/// match while it is shorter than the compared tail).
pub fn decidable(sent: &str, head: &str) -> bool {
    head.len() >= tail(sent, WINDOW).len()
}

/// The last `max` bytes of `s`, cut at a character boundary.
fn tail(s: &str, max: usize) -> &str {
    let mut start = s.len().saturating_sub(max);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_sentence_is_removed() {
        let sent = "Paris is lovely. The capital of France is Par";
        let head = "The capital of France is Paris, on the Seine.";
        let k = overlap(sent, head, "");
        assert_eq!(&head[k..], "is, on the Seine.");
    }

    #[test]
    fn a_restart_of_the_whole_short_answer_is_removed() {
        assert_eq!(overlap("I", "I'll help", ""), 1);
    }

    #[test]
    fn short_coincidences_are_kept() {
        assert_eq!(overlap("a mis", "sion", ""), 0);
        assert_eq!(overlap("the end", "end of it", ""), 0);
    }

    #[test]
    fn trimmed_whitespace_is_not_doubled() {
        assert_eq!(overlap("Hello ", " world", " "), 1);
        assert_eq!(overlap("Hello\n\n", "\n\nNext", "\n\n"), 2);
        assert_eq!(overlap("Hello ", "world", " "), 0);
    }

    #[test]
    fn multibyte_tails_are_cut_at_character_boundaries() {
        let sent = "é".repeat(200);
        assert!(tail(&sent, 255).chars().all(|c| c == 'é'));
        assert_eq!(overlap(&sent, &"é".repeat(10), ""), 20);
    }

    #[test]
    fn decidable_once_the_head_covers_the_window() {
        assert!(!decidable("0123456789", "0123"));
        assert!(decidable("0123456789", "0123456789x"));
    }
}
