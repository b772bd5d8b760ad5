//! The `qzx` command line as a user meets it: configuration errors name the
//! key, tokens verify, services refuse to start without what they need.

use std::process::{Command, Output};

fn qzx(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qzx"));
    cmd.args(args);
    // Only what the test sets: a stray QZX_* in the caller's environment
    // would change the answers.
    for (k, _) in std::env::vars() {
        if k.starts_with("QZX_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("qzx runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_prints_the_effective_configuration() {
    let out = qzx(
        &["check-config"],
        &[("QZX_KAFKA__PARTITIONS", "9"), ("QZX_JWT_SECRET", "hidden")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    let parsed: toml::Value = toml::from_str(&text).expect("the printed configuration is TOML");
    assert_eq!(parsed["kafka"]["partitions"].as_integer(), Some(9));
    assert_eq!(parsed["city"]["name"].as_str(), Some("济南"));
    assert!(!text.contains("hidden"), "the secret is redacted");
}

#[test]
fn check_config_names_an_unknown_key() {
    let dir = std::env::temp_dir().join(format!("qzx-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[api]\nws_qeue = 5\n").unwrap();
    let out = qzx(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("ws_qeue"), "{}", stderr(&out));

    let out = qzx(&["check-config"], &[("QZX_ROUTER__ROAD_FACTR", "1.2")]);
    assert!(!out.status.success());
    assert!(stderr(&out).to_lowercase().contains("road_factr"), "{}", stderr(&out));
}

#[test]
fn token_mints_a_verifiable_jwt() {
    let out = qzx(
        &[
            "token",
            "--role",
            "unit",
            "--unit",
            "quancheng-01",
            "--jurisdiction",
            "quancheng",
            "--ttl",
            "1h",
        ],
        &[("QZX_JWT_SECRET", "cli-secret")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let claims = bus::auth::TokenKeys::new("cli-secret").verify(&token).unwrap();
    assert_eq!(claims.role, bus::model::Role::Unit);
    assert_eq!(claims.unit.as_deref(), Some("quancheng-01"));
    assert_eq!(claims.jurisdictions, vec!["quancheng".to_string()]);
    let ttl = claims.exp - chrono::Utc::now().timestamp();
    assert!((3500..=3600).contains(&ttl), "{ttl}");
}

#[test]
fn token_needs_the_secret_and_a_unit_for_unit_tokens() {
    let out = qzx(&["token", "--role", "operator"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("QZX_JWT_SECRET"), "{}", stderr(&out));

    let out = qzx(&["token", "--role", "unit"], &[("QZX_JWT_SECRET", "s")]);
    assert!(!out.status.success());
}

#[test]
fn single_services_refuse_to_start_without_kafka_or_redis() {
    for service in ["ingest", "router", "api"] {
        let out = qzx(&[service], &[("QZX_JWT_SECRET", "s")]);
        assert!(!out.status.success(), "{service}");
        assert!(
            stderr(&out).contains("QZX_KAFKA_BROKERS"),
            "{service}: {}",
            stderr(&out)
        );

        let out = qzx(
            &[service],
            &[("QZX_JWT_SECRET", "s"), ("QZX_KAFKA_BROKERS", "127.0.0.1:1")],
        );
        assert!(!out.status.success(), "{service}");
        assert!(stderr(&out).contains("QZX_REDIS_URL"), "{service}: {}", stderr(&out));
    }
}

#[test]
fn services_refuse_a_placeholder_or_short_jwt_secret() {
    let env = |secret: &'static str| {
        [
            ("QZX_JWT_SECRET", secret),
            ("QZX_KAFKA_BROKERS", "127.0.0.1:1"),
            ("QZX_REDIS_URL", "redis://127.0.0.1:1/0"),
        ]
    };
    for service in ["ingest", "api"] {
        let out = qzx(&[service], &env("REPLACE-ME-with-48-random-bytes-base64"));
        assert!(!out.status.success(), "{service}");
        assert!(stderr(&out).contains("placeholder"), "{service}: {}", stderr(&out));
        let out = qzx(&[service], &env("s3cret"));
        assert!(!out.status.success(), "{service}");
        assert!(stderr(&out).contains("at least 32"), "{service}: {}", stderr(&out));
    }
}
