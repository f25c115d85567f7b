//! Segment files: their names (`seg-00000001.log`, numbered in write order), their 8-byte
//! header, creating one, and scanning one's frames up to its end or its first bad record.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::JournalError;
use super::record::{self, Entry};

/// What every segment starts with: 7 bytes of magic and a format version byte.
const MAGIC: &[u8; 7] = b"SGJOURN";
/// The format this build writes and reads.
pub(crate) const VERSION: u8 = 1;
/// Bytes of the header; the first record starts here.
pub(crate) const HEADER_LEN: u64 = 8;

fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0; HEADER_LEN as usize];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()] = VERSION;
    h
}

/// The path of segment `n` in `dir`.
pub(crate) fn path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("seg-{n:08}.log"))
}

/// The number of a segment file name, `None` for any other file.
fn number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".log")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segments in `dir`, oldest first. Other files are left alone.
pub(crate) fn list(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let list_err = |source| JournalError::ListDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(list_err)? {
        let entry = entry.map_err(list_err)?;
        if let Some(n) = entry.file_name().to_str().and_then(number) {
            found.push(n);
        }
    }
    found.sort_unstable();
    Ok(found)
}

/// Creates segment `n` with its header; with `durable`, the header and the directory entry
/// reach the disk before the first record does.
pub(crate) fn create(dir: &Path, n: u64, durable: bool) -> Result<File, JournalError> {
    let path = path(dir, n);
    let open_err = |source| JournalError::Open {
        path: path.clone(),
        source,
    };
    let mut options = OpenOptions::new();
    options.append(true).create_new(true);
    // Segments hold prompts and answers: readable by the gateway's user only.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&path).map_err(open_err)?;
    file.write_all(&header())
        .map_err(|source| JournalError::Write {
            path: path.clone(),
            offset: 0,
            source,
        })?;
    if durable {
        file.sync_data()
            .and_then(|()| sync_dir(dir))
            .map_err(|source| JournalError::Sync {
                path: path.clone(),
                source,
            })?;
    }
    Ok(file)
}

/// Opens segment `n` to append after its first `keep` bytes, cutting off anything past them (a
/// torn tail). A segment cut before the end of its header gets a fresh header.
pub(crate) fn reopen(dir: &Path, n: u64, keep: u64, durable: bool) -> Result<File, JournalError> {
    let path = path(dir, n);
    let mut file = OpenOptions::new()
        .append(true)
        .open(&path)
        .map_err(|source| JournalError::Open {
            path: path.clone(),
            source,
        })?;
    let keep = if keep < HEADER_LEN { 0 } else { keep };
    let truncate_err = |source| JournalError::Truncate {
        path: path.clone(),
        offset: keep,
        source,
    };
    let len = file.metadata().map_err(truncate_err)?.len();
    if len != keep {
        file.set_len(keep).map_err(truncate_err)?;
    }
    if keep == 0 {
        file.write_all(&header())
            .map_err(|source| JournalError::Write {
                path: path.clone(),
                offset: 0,
                source,
            })?;
    }
    if durable && len != keep {
        file.sync_data()
            .map_err(|source| JournalError::Sync { path, source })?;
    }
    Ok(file)
}

/// Flushes the directory itself, so a created or deleted segment stays so after a power
/// failure.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// How a scan of one segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Every byte was a good record.
    Clean,
    /// The last segment ends in a partial or damaged record with nothing valid after it: a
    /// write the crash interrupted. The file is to be cut at `at`.
    Torn { at: u64 },
    /// A bad record (or header) with more data after it: the rest of this segment is unreadable.
    Corrupt { at: u64, why: String },
    /// The header names a format version this build does not read.
    Version(u8),
}

/// Reads the frames of one segment's bytes, handing each record (with its offset) to `each`.
/// `last` says whether this is the newest segment, the only one a torn write can end.
pub(crate) fn scan<'a>(buf: &'a [u8], last: bool, mut each: impl FnMut(u64, Entry<'a>)) -> ScanEnd {
    let expected = header();
    let Some(head) = buf.get(..expected.len()) else {
        // The header itself was cut: only a segment being created can look like that.
        return if last {
            ScanEnd::Torn { at: 0 }
        } else {
            ScanEnd::Corrupt {
                at: 0,
                why: "segment shorter than its header".into(),
            }
        };
    };
    if head[..MAGIC.len()] != *MAGIC {
        return if last && buf.len() == expected.len() {
            ScanEnd::Torn { at: 0 }
        } else {
            ScanEnd::Corrupt {
                at: 0,
                why: "not a journal segment (bad magic)".into(),
            }
        };
    }
    if head[MAGIC.len()] != VERSION {
        return ScanEnd::Version(head[MAGIC.len()]);
    }
    let mut at = expected.len();
    while at < buf.len() {
        match record::read_frame(buf, at) {
            Ok((payload, next)) => match record::decode(payload) {
                Ok(entry) => {
                    each(at as u64, entry);
                    at = next;
                }
                Err(bad) => {
                    return ScanEnd::Corrupt {
                        at: at as u64,
                        why: bad.to_string(),
                    };
                }
            },
            Err(bad) => {
                // A torn write leaves nothing valid after it; a damaged record in the middle
                // (a flipped bit) is followed by the next good one.
                let follows = bad
                    .next()
                    .is_some_and(|n| n < buf.len() && record::read_frame(buf, n).is_ok());
                return if last && !follows {
                    ScanEnd::Torn { at: at as u64 }
                } else {
                    ScanEnd::Corrupt {
                        at: at as u64,
                        why: bad.to_string(),
                    }
                };
            }
        }
    }
    ScanEnd::Clean
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::record::{Record, encode};

    fn segment(records: &[Record<'_>]) -> Vec<u8> {
        let mut buf = header().to_vec();
        for r in records {
            buf.extend(encode(r).unwrap());
        }
        buf
    }

    fn streams(buf: &[u8], last: bool) -> (Vec<String>, ScanEnd) {
        let mut seen = Vec::new();
        let end = scan(buf, last, |_, e| seen.push(e.stream().to_string()));
        (seen, end)
    }

    #[test]
    fn names_parse_back_and_strangers_are_ignored() {
        let p = path(Path::new("/j"), 42);
        assert_eq!(p, Path::new("/j/seg-00000042.log"));
        assert_eq!(number("seg-00000042.log"), Some(42));
        assert_eq!(number("seg-123456789.log"), Some(123_456_789));
        assert_eq!(number("seg-.log"), None);
        assert_eq!(number("seg-+1.log"), None);
        assert_eq!(number("seg-00000001.log.tmp"), None);
    }

    #[test]
    fn a_clean_segment_yields_every_record() {
        let buf = segment(&[Record::End { stream: "a" }, Record::Forget { stream: "b" }]);
        assert_eq!(
            streams(&buf, true),
            (vec!["a".into(), "b".into()], ScanEnd::Clean)
        );
    }

    #[test]
    fn a_cut_tail_is_torn_only_in_the_last_segment() {
        let buf = segment(&[Record::End { stream: "a" }, Record::End { stream: "b" }]);
        let cut = &buf[..buf.len() - 2];
        let first_end = HEADER_LEN + encode(&Record::End { stream: "a" }).unwrap().len() as u64;
        assert_eq!(
            streams(cut, true),
            (vec!["a".into()], ScanEnd::Torn { at: first_end })
        );
        assert!(matches!(streams(cut, false).1, ScanEnd::Corrupt { at, .. } if at == first_end));
    }

    #[test]
    fn a_bad_record_followed_by_a_good_one_is_corruption_not_a_tear() {
        let mut buf = segment(&[Record::End { stream: "a" }, Record::End { stream: "b" }]);
        buf[HEADER_LEN as usize + 9] ^= 0x40; // inside a's payload
        let (seen, end) = streams(&buf, true);
        assert!(seen.is_empty());
        assert!(
            matches!(end, ScanEnd::Corrupt { at: HEADER_LEN, .. }),
            "{end:?}"
        );
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(streams(b"SGJ", true).1, ScanEnd::Torn { at: 0 });
        assert_eq!(streams(&[0; 8], true).1, ScanEnd::Torn { at: 0 });
        assert!(matches!(
            streams(&[0; 20], true).1,
            ScanEnd::Corrupt { at: 0, .. }
        ));
        assert!(matches!(
            streams(b"SGJ", false).1,
            ScanEnd::Corrupt { at: 0, .. }
        ));
        let mut newer = segment(&[]);
        newer[7] = VERSION + 1;
        assert_eq!(streams(&newer, true).1, ScanEnd::Version(VERSION + 1));
    }
}
