//! What can go wrong with the journal, and where: every variant names the file (and the offset
//! where it matters), so an operator reading the log knows which segment to look at.

use std::io;
use std::path::PathBuf;

/// A journal operation that failed. Corrupt or torn data found by [`Journal::open`] is not an
/// error (it is reported in [`Recovered`] and logged); these are the failures the caller must
/// act on, usually by running without a journal.
///
/// [`Journal::open`]: super::Journal::open
/// [`Recovered`]: super::Recovered
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The journal directory could not be created.
    #[error("journal: cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The journal directory could not be listed.
    #[error("journal: cannot list directory {path}: {source}")]
    ListDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A segment file could not be read during recovery.
    #[error("journal: cannot read segment {path}: {source}")]
    Read {
        /// The segment.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A segment file could not be created or opened for appending.
    #[error("journal: cannot open segment {path}: {source}")]
    Open {
        /// The segment.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A torn tail could not be cut off.
    #[error("journal: cannot truncate segment {path} at offset {offset}: {source}")]
    Truncate {
        /// The segment.
        path: PathBuf,
        /// Where the file was to end.
        offset: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A record could not be written (it is not in the journal: the file was cut back, or the
    /// next record goes to a new segment).
    #[error("journal: cannot write segment {path} at offset {offset}: {source}")]
    Write {
        /// The segment.
        path: PathBuf,
        /// Where the record was to start.
        offset: u64,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// With `FsyncPolicy::Always`, the flush to disk of a batch holding this record failed: the
    /// record reached the kernel but may not survive a power failure.
    #[error("journal: cannot flush segment {path} to disk: {source}")]
    Sync {
        /// The segment (the current one when the flush was asked for).
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A segment was written by a newer (or unknown) journal format: refused rather than
    /// misread or truncated.
    #[error(
        "journal: segment {path} has format version {version}, this build reads version {supported}"
    )]
    UnsupportedVersion {
        /// The segment.
        path: PathBuf,
        /// Its version byte.
        version: u8,
        /// The version this build writes and reads.
        supported: u8,
    },
    /// The `Interval` flusher thread could not be started.
    #[error("journal: cannot start the fsync thread: {source}")]
    Thread {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A record's payload would not fit the frame's 32-bit length.
    #[error("journal: a record of stream {stream} is {bytes} bytes, more than a frame holds")]
    RecordTooLarge {
        /// The stream it belongs to.
        stream: String,
        /// Its encoded size.
        bytes: usize,
    },
}
