//! Configuration: defaults, validation and the serialised form.

use super::*;

#[test]
fn defaults_follow_the_brief_and_validate() {
    let c = cfg();
    assert_eq!(
        (c.active_view, c.passive_view, c.arwl, c.prwl),
        (5, 30, 6, 3)
    );
    assert_eq!(
        (c.shuffle_active, c.shuffle_passive, c.shuffle_ttl),
        (3, 4, 6)
    );
    assert_eq!(c.shuffle_interval, secs(10));
    assert_eq!(c.heartbeat_interval, secs(1));
    assert_eq!(c.failure_timeout, secs(5));
    assert_eq!(c.probe_timeout, secs(1));
    assert_eq!((c.join_retry, c.join_retry_max), (secs(1), secs(30)));
    c.validate().unwrap();
}

#[test]
fn validate_names_the_bad_key() {
    let cases: Vec<(MembershipConfig, &str)> = vec![
        (
            MembershipConfig {
                active_view: 0,
                ..cfg()
            },
            "active_view",
        ),
        (
            MembershipConfig {
                active_view: 65,
                ..cfg()
            },
            "active_view",
        ),
        (
            MembershipConfig {
                passive_view: 0,
                ..cfg()
            },
            "passive_view",
        ),
        (MembershipConfig { prwl: 7, ..cfg() }, "prwl"),
        (
            MembershipConfig {
                shuffle_interval: Duration::ZERO,
                ..cfg()
            },
            "shuffle_interval",
        ),
        (
            MembershipConfig {
                heartbeat_interval: Duration::ZERO,
                ..cfg()
            },
            "heartbeat_interval",
        ),
        (
            MembershipConfig {
                probe_timeout: Duration::ZERO,
                ..cfg()
            },
            "probe_timeout",
        ),
        (
            MembershipConfig {
                failure_timeout: ms(1500),
                ..cfg()
            },
            "failure_timeout",
        ),
        (
            MembershipConfig {
                join_retry: Duration::ZERO,
                ..cfg()
            },
            "join_retry",
        ),
        (
            MembershipConfig {
                join_retry_max: ms(500),
                ..cfg()
            },
            "join_retry_max",
        ),
    ];
    for (c, key) in cases {
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, key);
        assert!(e.to_string().contains(key));
        assert!(Membership::new(ME, c, 1).is_err());
    }
}

#[test]
fn config_serialises_durations_as_millis_and_fills_defaults() {
    let c: MembershipConfig =
        serde_json::from_str(r#"{"active_view": 4, "failure_timeout": 3000}"#).unwrap();
    assert_eq!(c.active_view, 4);
    assert_eq!(c.failure_timeout, secs(3));
    assert_eq!(c.passive_view, 30);
    let json = serde_json::to_string(&cfg()).unwrap();
    assert!(json.contains(r#""shuffle_interval":10000"#));
    assert!(serde_json::from_str::<MembershipConfig>(r#"{"bogus": 1}"#).is_err());
}
