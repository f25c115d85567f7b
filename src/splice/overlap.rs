//! Removing the text a continuation repeats from what the client already has.
//!
//! A continuation's head may repeat the tail of the text already sent: an OpenAI-dialect model
//! asked to "continue" often restarts the interrupted sentence, the interrupted word
//! ("Step 1: Divid" + "Divide 1071 by") or the last few words, and a prefill whose trailing
//! whitespace had to be trimmed (Anthropic rejects it) comes back with that whitespace.
//!
//! A head repeats a tail of the sent text when it starts with that tail and the tail is one of:
//! - the whole text sent so far (a model that starts the answer again);
//! - at least [`MIN_REPEAT`] bytes (a restarted sentence);
//! - the text from the start of one of the last [`MAX_WORDS`] words, however short: a head
//!   that restarts the word the break cut ("Divid" + "Divide") or repeats the last whole
//!   words ("1: Divide" + "Divide 1071" or "1: Divide 1071") starts at a word start;
//! - the whitespace the gateway trimmed from the prefill.
//!
//! The longest such tail is removed. A short repeat that does not start at a word start is a
//! coincidence and kept ("a mis" + "sion" is "a mission"); so is the exact rest of a cut word
//! ("Divid" + "e 1071": the head does not start with the word's sent part). A word is a run of
//! alphanumeric characters, an apostrophe between two of them included ("I'l" + "l" is "I'll").
//!
//! Only text that repeats itself glued can be mistaken for a repeat: a word whose start comes
//! twice ("mur" + "mured" loses "mur" of "murmured") or an answer whose first character is
//! doubled, cut between the two ("*" + "*Title**" loses a "*" of "**Title**"). Natural text
//! rarely does the first, and breaks fall between tokens, which keep "**" whole; while a
//! one-character answer that the model restarts ("-" + "- Captain") is real.

/// Shortest repeated text treated as an overlap wherever it starts.
pub const MIN_REPEAT: usize = 12;

/// How many of the last words a head may repeat, starting at a word start, however short.
pub const MAX_WORDS: usize = 3;

/// How much of the sent tail is compared, in bytes.
pub const WINDOW: usize = 256;

/// The number of bytes at the start of `head` that repeat the end of `sent`.
///
/// `trimmed` is the whitespace removed from the end of the prefill (so not seen by the
/// model): a head starting with exactly it repeats it.
pub fn overlap(sent: &str, head: &str, trimmed: &str) -> usize {
    repeats(sent, trimmed)
        .filter(|r| head.starts_with(r))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// Whether [`overlap`] is final for `head`: no more text can change it, because no longer
/// repeatable tail starts with `head`.
pub fn decidable(sent: &str, head: &str, trimmed: &str) -> bool {
    !repeats(sent, trimmed).any(|r| r.len() > head.len() && r.starts_with(head))
}

/// Every tail of `sent` that a head starting with it repeats (see the module docs).
fn repeats<'a>(sent: &'a str, trimmed: &'a str) -> impl Iterator<Item = &'a str> {
    let tail = tail(sent, WINDOW);
    let base = sent.len() - tail.len();
    let words = word_starts(sent, base);
    let whole = (!sent.is_empty() && sent.len() <= WINDOW).then_some(sent);
    let trimmed = (!trimmed.is_empty()).then_some(trimmed);
    tail.char_indices()
        .map(|(i, _)| i)
        .filter(move |&i| tail.len() - i >= MIN_REPEAT || words.contains(&Some(base + i)))
        .map(move |i| &tail[i..])
        .chain(whole)
        .chain(trimmed)
}

/// The byte offsets in `sent` of its last [`MAX_WORDS`] word starts at or after `from`.
fn word_starts(sent: &str, from: usize) -> [Option<usize>; MAX_WORDS] {
    let mut starts = [None; MAX_WORDS];
    let mut before = sent[..from].chars().rev();
    let (mut b1, mut b2) = (before.next(), before.next());
    for (i, c) in sent[from..].char_indices() {
        if starts_word(b2, b1, c) {
            starts.rotate_right(1);
            starts[0] = Some(from + i);
        }
        (b2, b1) = (b1, Some(c));
    }
    starts
}

/// Whether `c`, after `b2` and `b1`, starts a word: a word is a run of alphanumeric
/// characters, an apostrophe between two of them included ("I'll", "l'eau").
pub(super) fn starts_word(b2: Option<char>, b1: Option<char>, c: char) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let apostrophe = matches!(b1, Some('\'' | '\u{2019}'));
    c.is_alphanumeric() && !alnum(b1) && !(apostrophe && alnum(b2))
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
        assert_eq!(overlap("it is a mis", "sion", ""), 0);
        // The exact rest of a cut word is never a restart of it.
        assert_eq!(overlap("Step 1: Divid", "e 1071 by", ""), 0);
        assert_eq!(overlap("Step 1: Divide", " 1071 by", ""), 0);
        // Older words than the last three are not repeated by a short head.
        assert_eq!(overlap("one two three four", "one two", ""), 0);
    }

    #[test]
    fn a_restarted_word_is_removed() {
        let head = "Divide 1071 by 462.";
        assert_eq!(
            &head[overlap("Step 1: Divid", head, "")..],
            "e 1071 by 462."
        );
        assert_eq!(overlap("Step 1: D", "Divide", ""), 1);
        assert_eq!(overlap("Il a dit « Étu", "Étudiez", ""), "Étu".len());
    }

    #[test]
    fn the_last_whole_words_repeated_are_removed() {
        let sent = "Step 1: Divide";
        for (head, rest) in [
            ("Divide 1071 by", " 1071 by"),
            ("1: Divide 1071 by", " 1071 by"),
            ("Divide.", "."),
        ] {
            assert_eq!(&head[overlap(sent, head, "")..], rest, "{head}");
        }
        // The sent text ends after a space or punctuation: the repeat includes it.
        assert_eq!(overlap("We divide 1071 by 462. ", "462. Then", " "), 5);
        assert_eq!(overlap("We divide 1071 by 462. ", "by 462. Then", " "), 8);
        // A word glued to the sent one is the same word again, so "the end" + "end of it"
        // is "the end of it", not "the endend of it".
        assert_eq!(overlap("the end", "end of it", ""), 3);
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
    fn decidable_once_no_longer_repeat_can_match() {
        assert!(!decidable("0123456789", "0123", ""));
        assert!(decidable("0123456789", "0123456789x", ""));
        // "Divid" may still become "Divide": wait; "Dx" can no longer repeat anything.
        assert!(!decidable("Step 1: Divid", "Div", ""));
        assert!(decidable("Step 1: Divid", "Dx", ""));
        assert!(decidable("Step 1: Divid", "e 1071", ""));
        // A prefix of the trimmed whitespace may be the start of it.
        assert!(!decidable("Hello\n\n", "\n", "\n\n"));
    }
}
