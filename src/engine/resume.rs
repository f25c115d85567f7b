//! Bringing an answer's splicer back to where its client is, after a restart: the journal
//! holds the client's events of the answer so far, and the engine continues from them.

use providers::AgentEvent;

use crate::splice::Splicer;

/// Feeds `prior`, the events a client already has of this answer (the splicer's own output,
/// seams of earlier breaks and restarts included), into a fresh `splicer` as if one attempt
/// had just sent them, so that what it counts as sent (the text, the tool calls, the block
/// numbering, the usage so far, the number of events) is exactly what the client has.
///
/// The seams in `prior` are kept as plain events, not replayed as breaks: what follows a seam
/// is the splicer's *output* for the next attempt (text merged into the block the break left
/// open, usage already summed over the earlier attempts), not what an attempt sent. Breaking
/// there again would make the splicer forget the open text block, so the text after the seam
/// would not count as sent (the next continuation repeats it in a second text block), and it
/// would add the earlier attempts' usage once more. Pushed as one attempt, the client's events
/// come out unchanged: every block number is the next one, and a usage event carries the total
/// so far, which the splicer keeps as the latest report.
pub(super) fn restore(splicer: &mut Splicer, prior: &[AgentEvent]) {
    let mut sent = Vec::with_capacity(prior.len());
    for event in prior {
        splicer.push(event.clone(), &mut sent);
    }
    if sent.len() != prior.len() {
        // Only a journal cut inside a held tool call's events gets here (the client has part
        // of a call the continuation produces again).
        tracing::warn!(
            journaled = prior.len(),
            restored = sent.len(),
            "recovery: the journaled answer does not replay exactly"
        );
    }
}

#[cfg(test)]
mod tests;
