use super::*;

#[test]
fn traces_url_appends_the_signal_path_once() {
    let cases = [
        ("http://localhost:4318", "http://localhost:4318/v1/traces"),
        ("http://localhost:4318/", "http://localhost:4318/v1/traces"),
        (
            "https://otel.example:443/otlp",
            "https://otel.example:443/otlp/v1/traces",
        ),
        ("http://c:4318/v1/traces", "http://c:4318/v1/traces"),
        ("http://c:4318/v1/traces/", "http://c:4318/v1/traces"),
    ];
    for (endpoint, url) in cases {
        assert_eq!(traces_url(endpoint).unwrap(), url, "{endpoint}");
    }
    for bad in [
        "localhost:4318",
        "ftp://c/x",
        "http://",
        "http://c:4318/?a=b",
        "",
        "not a url",
    ] {
        assert!(traces_url(bad).is_err(), "{bad} accepted");
    }
}

fn config(toml: &str) -> OtlpConfig {
    toml::from_str(toml).unwrap()
}

#[test]
fn defaults_are_the_documented_ones() {
    let c = config("endpoint = \"http://127.0.0.1:4318\"");
    assert_eq!(c.protocol, OtlpProtocol::HttpProtobuf);
    assert_eq!(c.service_name, "streamgate");
    assert!((c.sampling_ratio - 1.0).abs() < f64::EPSILON);
    assert_eq!(c.timeout_ms, 10_000);
    assert_eq!(c.max_queue_size, 2048);
    assert_eq!(c.export_interval_ms, 5000);
    assert!(c.headers_env.is_empty());
    c.validate().unwrap();
}

#[test]
fn out_of_range_settings_are_refused() {
    let base = "endpoint = \"http://127.0.0.1:4318\"\n";
    for extra in [
        "sampling_ratio = 1.5",
        "sampling_ratio = -0.1",
        "sampling_ratio = nan",
        "timeout_ms = 0",
        "max_queue_size = 0",
        "max_queue_size = 100000000",
        "export_interval_ms = 0",
        "headers_env = { \"bad header\" = \"X\" }",
    ] {
        let c = config(&format!("{base}{extra}"));
        assert!(c.validate().is_err(), "{extra} accepted");
    }
    assert!(toml::from_str::<OtlpConfig>(&format!("{base}protocol = \"grpc\"")).is_err());
    assert!(toml::from_str::<OtlpConfig>(&format!("{base}typo = 1")).is_err());
}

#[test]
fn a_missing_header_variable_is_an_error_that_never_shows_a_value() {
    let c = config(
        "endpoint = \"http://127.0.0.1:4318\"\nheaders_env = { authorization = \"STREAMGATE_TEST_OTLP_UNSET_VAR\" }",
    );
    let err = c.headers().unwrap_err();
    assert!(matches!(
        err,
        OtlpConfigError::Header {
            reason: HeaderProblem::MissingVar,
            ..
        }
    ));
}

#[test]
fn failures_are_logged_at_most_once_per_interval() {
    // Seeded schedules of failures: whatever their spacing, an admitted failure is at least
    // one interval after the previous admitted one, and every other failure is counted.
    let interval = Duration::from_millis(1000);
    let mut rng = fastrand::Rng::with_seed(12);
    for _ in 0..50 {
        let log = FailureLog::new(interval);
        let mut now = log.start;
        let mut admitted: Vec<Instant> = Vec::new();
        let mut quiet_seen = 0;
        let n = rng.usize(1..200);
        for _ in 0..n {
            now += Duration::from_millis(rng.u64(0..400));
            if let Some(unlogged) = log.admit(now) {
                if let Some(prev) = admitted.last() {
                    assert!(now.duration_since(*prev) >= interval);
                }
                quiet_seen += unlogged;
                admitted.push(now);
            }
        }
        assert!(!admitted.is_empty(), "the first failure is always logged");
        let pending = log.quiet.load(Ordering::Relaxed);
        assert_eq!(admitted.len() as u64 + quiet_seen + pending, n as u64);
    }
}

#[test]
fn no_config_builds_nothing() {
    let built = layer::<tracing_subscriber::Registry>(None).unwrap();
    assert!(built.is_none());
}
