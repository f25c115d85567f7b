//! The wire format against generated messages: every valid framing read whole at any read
//! boundaries, every cut seen as one, and arbitrary bytes never panicking nor yielding more
//! data than they hold.

use proptest::prelude::*;

use super::*;

/// What a reader of `wire` got, fed in pieces cut at `cuts` (offsets, any order).
#[derive(Debug, PartialEq)]
struct Read {
    data: Vec<u8>,
    /// Bytes consumed when the body ended, or None if it had not.
    ended_at: Option<usize>,
}

/// Feeds `wire` to `framing` as a reader would: the bytes arrive in pieces, each step's bytes
/// are consumed, `More` waits for the next piece. At the end of the bytes, `eof` says whether
/// the connection closed there.
fn read(mut framing: Framing, wire: &[u8], cuts: &[usize], eof: bool) -> Result<Read, WireError> {
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    ends.push(wire.len());
    ends.sort_unstable();
    let (mut arrived, mut at) = (0, 0);
    let mut data = Vec::new();
    for end in ends {
        arrived = arrived.max(end);
        loop {
            match framing.step(&wire[at..arrived])? {
                Step::Data(n) => {
                    assert!(n > 0 && at + n <= arrived, "data of {n} at {at}/{arrived}");
                    data.extend_from_slice(&wire[at..at + n]);
                    at += n;
                }
                Step::Skip(n) => {
                    assert!(n > 0 && at + n <= arrived, "skip of {n} at {at}/{arrived}");
                    at += n;
                }
                Step::Done(n) => {
                    assert!(at + n <= arrived);
                    return Ok(Read {
                        data,
                        ended_at: Some(at + n),
                    });
                }
                Step::More => break,
            }
        }
    }
    if eof {
        framing.at_eof()?;
    }
    Ok(Read {
        data,
        ended_at: None,
    })
}

/// A chunk-size line for `size`, as some server might write it.
fn size_line(size: usize, style: u8, ext: &str) -> String {
    let hex = match style % 3 {
        0 => format!("{size:x}"),
        1 => format!("{size:X}"),
        _ => format!("000{size:x}"),
    };
    let blanks = if style.is_multiple_of(2) { "" } else { " \t" };
    format!("{hex}{blanks}{ext}\r\n")
}

/// `data` in chunks of the sizes `sizes` cycles through, then the last chunk and trailers.
fn chunked(data: &[u8], sizes: &[usize], style: u8, ext: &str, trailers: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
        out.extend_from_slice(size_line(n, style, ext).as_bytes());
        out.extend_from_slice(&rest[..n]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    out.extend_from_slice(size_line(0, style, ext).as_bytes());
    for t in trailers {
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn chunked_framing() -> Framing {
    Framing::new(Kind::Chunked(Chunked::Size))
}

/// What follows a body on a kept-alive connection (must never be read as this body's).
const NEXT: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi";

fn ext() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,8}".prop_map(|e| format!(";{e}")),
        "[a-z]{1,8}=[a-z0-9]{0,8}".prop_map(|e| format!(" ;{e};x=\"q\"")),
    ]
}

fn trailers() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[a-z-]{1,12}: [ -~]{0,30}", 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Any chunked body, cut into reads anywhere, reads back whole and ends exactly where it
    /// ends.
    #[test]
    fn chunked_bodies_read_back_whole_at_any_read_boundaries(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        sizes in prop::collection::vec(1usize..700, 1..8),
        style in any::<u8>(),
        ext in ext(),
        trailers in trailers(),
        cuts in prop::collection::vec(any::<usize>(), 0..40),
    ) {
        let body = chunked(&data, &sizes, style, &ext, &trailers);
        let mut wire = body.clone();
        wire.extend_from_slice(NEXT);
        let got = read(chunked_framing(), &wire, &cuts, false).unwrap();
        prop_assert_eq!(got.data, data);
        prop_assert_eq!(got.ended_at, Some(body.len()));
    }

    /// A chunked body cut anywhere before its end is incomplete at the close, and what was
    /// read of it is a prefix of its data.
    #[test]
    fn a_chunked_body_cut_anywhere_is_incomplete(
        data in prop::collection::vec(any::<u8>(), 1..2000),
        sizes in prop::collection::vec(1usize..300, 1..6),
        ext in ext(),
        cut in any::<prop::sample::Index>(),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
    ) {
        let body = chunked(&data, &sizes, 0, &ext, &[]);
        let cut = cut.index(body.len());
        let wire = &body[..cut];
        match read(chunked_framing(), wire, &cuts, true) {
            Err(WireError::Incomplete) => {}
            other => prop_assert!(false, "cut at {}/{}: {:?}", cut, body.len(), other),
        }
        // Without the close, the bytes read so far are a prefix of the data.
        let got = read(chunked_framing(), wire, &cuts, false).unwrap();
        prop_assert!(data.starts_with(&got.data));
        prop_assert_eq!(got.ended_at, None);
    }

    /// A body of a given length reads exactly that many bytes, and the rest is left alone;
    /// fewer bytes and a close are incomplete.
    #[test]
    fn length_bodies_read_exactly_their_length(
        data in prop::collection::vec(any::<u8>(), 0..3000),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        short in any::<prop::sample::Index>(),
    ) {
        let framing = || Framing::new(Kind::Length(data.len() as u64));
        let mut wire = data.clone();
        wire.extend_from_slice(NEXT);
        let got = read(framing(), &wire, &cuts, false).unwrap();
        prop_assert_eq!(&got.data, &data);
        prop_assert_eq!(got.ended_at, Some(data.len()));
        if !data.is_empty() {
            let short = short.index(data.len());
            prop_assert_eq!(
                read(framing(), &data[..short], &cuts, true),
                Err(WireError::Incomplete)
            );
        }
    }

    /// Whatever bytes come, in whatever framing: no panic, no data that was not sent, and
    /// every step within what was read.
    #[test]
    fn arbitrary_bytes_never_yield_more_than_they_hold(
        wire in prop::collection::vec(
            prop_oneof![
                any::<u8>(),
                Just(b'\r'), Just(b'\n'), Just(b';'), Just(b'0'), Just(b'a'), Just(b' '),
            ],
            0..600,
        ),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        length in 0u64..1000,
    ) {
        for framing in [chunked_framing(), Framing::new(Kind::Length(length)), Framing::new(Kind::Close)] {
            if let Ok(got) = read(framing, &wire, &cuts, true) {
                prop_assert!(got.data.len() <= wire.len());
            }
        }
    }
}

#[test]
fn malformed_chunk_framing_is_named() {
    let cases: [(&[u8], WireError); 7] = [
        (b"x\r\n", WireError::ChunkSize),
        (b"\r\n", WireError::ChunkSize),
        (b"1 2\r\n", WireError::ChunkSize),
        (b"1000000000000000\r\n", WireError::ChunkSize),
        (b"1\n", WireError::Line),
        (b"1\r\nab", WireError::ChunkEnd),
        (b"1;a\rb\r\n", WireError::Line),
    ];
    for (wire, expected) in cases {
        assert_eq!(
            read(chunked_framing(), wire, &[], false),
            Err(expected),
            "{}",
            String::from_utf8_lossy(wire)
        );
    }
}

/// Lines and trailers are capped whatever their content: a size line or trailer that never
/// ends, or trailers that never stop, fail once past their cap, not at the end of memory.
#[test]
fn lines_and_trailers_are_capped() {
    let endless = vec![b'0'; MAX_LINE + 1];
    assert_eq!(
        read(chunked_framing(), &endless, &[], false),
        Err(WireError::LineTooLong)
    );
    let mut ext = b"1;".to_vec();
    ext.resize(MAX_LINE * 2, b'x');
    assert_eq!(
        read(chunked_framing(), &ext, &[], false),
        Err(WireError::LineTooLong)
    );
    let mut trailers = b"0\r\n".to_vec();
    let line = format!("x-t: {}\r\n", "v".repeat(1000));
    while trailers.len() < MAX_TRAILER_BYTES + 2 * line.len() {
        trailers.extend_from_slice(line.as_bytes());
    }
    assert_eq!(
        read(chunked_framing(), &trailers, &[7, 100], false),
        Err(WireError::TrailersTooLong)
    );
}

fn final_head(text: &str) -> Result<(ResponseHead, usize), WireError> {
    match parse_head(text.as_bytes(), 8192)? {
        Head::Final { head, len } => Ok((*head, len)),
        other => panic!("{other:?} for {text:?}"),
    }
}

/// The framing and reuse of a response, as RFC 9112 §6.3 reads its head, over generated
/// combinations of version, status, transfer-encoding, content-length and connection.
#[test]
fn heads_say_how_their_body_is_framed() {
    let mut rng = fastrand::Rng::with_seed(0x6_0003);
    for _ in 0..2000 {
        let http10 = rng.u8(..8) == 0;
        let status = [200u16, 201, 204, 304, 400, 429, 500][rng.usize(..7)];
        let te = [
            None,
            Some("chunked"),
            Some("gzip, chunked"),
            Some("chunked, gzip"),
            Some("gzip"),
            Some("CHUNKED"),
        ][rng.usize(..6)];
        let length: Option<u64> = rng.bool().then(|| rng.u64(..100_000));
        let close = rng.u8(..4) == 0;
        let mut text = format!("HTTP/1.{} {status} X\r\n", if http10 { 0 } else { 1 });
        if let Some(te) = te {
            text.push_str(&format!("Transfer-Encoding: {te}\r\n"));
        }
        if let Some(n) = length {
            text.push_str(&format!("content-length: {n}\r\n"));
            if rng.bool() {
                text.push_str(&format!("Content-Length: {n}, {n}\r\n"));
            }
        }
        if close {
            text.push_str("Connection: keep-alive, Close\r\n");
        }
        text.push_str("\r\n");
        let parsed = final_head(&text);
        let no_body = status == 204 || status == 304;
        let expected = if no_body {
            Ok(Kind::Length(0))
        } else if let Some(te) = te {
            if http10 {
                Err(WireError::TransferEncodingInHttp10)
            } else if te.to_ascii_lowercase().ends_with("chunked") {
                Ok(Kind::Chunked(Chunked::Size))
            } else {
                Ok(Kind::Close)
            }
        } else {
            Ok(length.map_or(Kind::Close, Kind::Length))
        };
        match (parsed, expected) {
            (Ok((head, len)), Ok(kind)) => {
                assert_eq!(len, text.len());
                assert_eq!(head.parts.status, status);
                assert_eq!(head.framing.kind, kind, "{text}");
                let reusable = !http10 && !close && kind != Kind::Close;
                assert_eq!(head.keep_alive, reusable, "{text}");
            }
            (Err(got), Err(want)) => assert_eq!(got, want, "{text}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn bad_lengths_and_upgrades_are_refused() {
    for (text, expected) in [
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
            WireError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 5, 6\r\n\r\n",
            WireError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            WireError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            WireError::ContentLength,
        ),
        (
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            WireError::ContentLength,
        ),
        (
            "HTTP/1.1 101 Switching\r\nupgrade: x\r\n\r\n",
            WireError::Upgrade,
        ),
    ] {
        assert_eq!(
            parse_head(text.as_bytes(), 8192).map(|_| ()),
            Err(expected),
            "{text}"
        );
    }
}

/// A head arriving in pieces is partial until its last byte, informational heads are sized
/// to be skipped, and a head that does not end within the cap is refused.
#[test]
fn heads_arrive_in_pieces_and_are_capped() {
    let info = "HTTP/1.1 100 Continue\r\n\r\n";
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    for end in 0..info.len() {
        assert!(matches!(
            parse_head(&info.as_bytes()[..end], 8192),
            Ok(Head::Partial)
        ));
    }
    assert!(matches!(
        parse_head(info.as_bytes(), 8192),
        Ok(Head::Informational { len }) if len == info.len()
    ));
    for end in 0..head.len() {
        assert!(matches!(
            parse_head(&head.as_bytes()[..end], 8192),
            Ok(Head::Partial)
        ));
    }
    let (parsed, len) = final_head(head).unwrap();
    assert_eq!(len, head.len());
    assert_eq!(parsed.parts.headers["content-type"], "text/event-stream");
    let long = format!("HTTP/1.1 200 OK\r\nx-pad: {}", "p".repeat(9000));
    assert_eq!(
        parse_head(&long.as_bytes()[..8192], 8192).map(|_| ()),
        Err(WireError::HeadTooLarge(8192))
    );
    let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
    assert!(matches!(
        parse_head(format!("HTTP/1.1 200 OK\r\n{many}\r\n").as_bytes(), 8192),
        Err(WireError::Head(httparse::Error::TooManyHeaders))
    ));
}

#[test]
fn the_request_head_carries_host_length_and_headers_once() {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("authorization", HeaderValue::from_static("Bearer k"));
    headers.insert("host", HeaderValue::from_static("evil"));
    headers.insert("content-length", HeaderValue::from_static("1"));
    let head = request_head(
        "/v1/chat/completions?x=1",
        &HeaderValue::from_static("api.example.com:8443"),
        &headers,
        1234,
    );
    let text = String::from_utf8(head).unwrap();
    assert!(
        text.starts_with("POST /v1/chat/completions?x=1 HTTP/1.1\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\n"), "{text}");
    assert_eq!(text.matches("host:").count(), 1, "{text}");
    assert!(text.contains("host: api.example.com:8443\r\n"), "{text}");
    assert_eq!(text.matches("content-length:").count(), 1, "{text}");
    assert!(text.contains("content-length: 1234\r\n"), "{text}");
    assert!(text.contains("authorization: Bearer k\r\n"), "{text}");
    // The head parses as a request with exactly these headers.
    let mut parsed = [httparse::EMPTY_HEADER; 8];
    let mut request = httparse::Request::new(&mut parsed);
    assert!(request.parse(text.as_bytes()).unwrap().is_complete());
    assert_eq!(request.headers.len(), 4);
}
