//! The `whipgate` command line: `check` and `serve`.

mod support;

use std::process::Command;
use std::time::Duration;

fn whipgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_whipgate"))
}

/// A config file in a directory of its own, removed with it when the test ends (pass or fail),
/// so that test runs do not leave files behind in the temp directory.
struct TempFile(std::path::PathBuf);

impl std::ops::Deref for TempFile {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempFile {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn temp_file(name: &str, text: &str) -> TempFile {
    // One directory per file: tests of one process (cargo test) may run at once.
    let dir = std::env::temp_dir().join(format!("whipgate-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    TempFile(path)
}

#[test]
fn check_accepts_the_shipped_routes_toml() {
    let output = whipgate()
        .args(["check", concat!(env!("CARGO_MANIFEST_DIR"), "/routes.toml")])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("ok: 1 backend (sfu), 1 route"), "{stdout}");
}

#[test]
fn check_names_file_line_and_problem() {
    let path = temp_file(
        "bad.toml",
        "[[backend]]\nid = \"a\"\nkind = \"whip\"\nwhip_url = \"http://h/{stream}\"\ncolour = \"red\"\n\n[[route]]\nbackends = [\"a\"]\n",
    );
    let output = whipgate().arg("check").arg(&path).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!("{}:5:", path.display()))
            && stderr.contains("unknown key `colour` for kind = \"whip\""),
        "{stderr}"
    );

    let path = temp_file(
        "unknown-backend.toml",
        "[[backend]]\nid = \"a\"\nkind = \"whip\"\nwhip_url = \"http://h/{stream}\"\n\n[[route]]\nbackends = [\"a\", \"b\"]\n",
    );
    let output = whipgate().arg("check").arg(&path).output().expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(":7:") && stderr.contains("unknown backend `b`"),
        "{stderr}"
    );
}

#[test]
fn serve_starts_answers_and_stops_on_sigterm() {
    let path = temp_file(
        "serve.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n[[backend]]\nid = \"a\"\nkind = \"whip\"\nwhip_url = \"http://127.0.0.1:1/{stream}\"\n[[route]]\nbackends = [\"a\"]\n",
    );
    let served = support::spawn_serve(&path, &[], &[]);
    let mut stream = std::net::TcpStream::connect(served.address).expect("connect");
    use std::io::{Read, Write};
    stream
        .write_all(b"OPTIONS /whip/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 204"), "{reply}");
    let (exit, _) = served.finish();
    assert!(exit.success(), "{exit:?}");
}

/// `whipgate explain --config PATH ARGS...`, which must succeed; its standard output.
fn explain(path: &std::path::Path, args: &[&str]) -> String {
    let output = whipgate()
        .args(["explain", "--config"])
        .arg(path)
        .args(args)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A route with `relay` says where its publishers' copies go, in the words the README uses.
#[test]
fn explain_shows_a_routes_relay_plan() {
    let path = temp_file(
        "explain-relay.toml",
        "[builtin]\n[[backend]]\nid = \"sfu\"\nkind = \"builtin\"\n\
         [[backend]]\nid = \"b\"\nkind = \"whip\"\nwhip_url = \"http://b/{stream}\"\n\
         [[backend]]\nid = \"c\"\nkind = \"whip\"\nwhip_url = \"http://c/{stream}\"\n\
         [[route]]\nid = \"shows\"\nmatch = { stream = \"show-*\" }\nbackends = [\"sfu\"]\n\
         relay = { to = [\"b\", \"c\"], mode = \"failover\", failback = \"60s\" }\n\
         [[route]]\nid = \"copies\"\nbackends = [\"sfu\"]\nrelay = { to = [\"b\", \"c\"], mode = \"all\" }\n",
    );
    let show = explain(&path, &["--kind", "whip", "--stream", "show-1"]);
    assert!(
        show.contains("relay (publishers on the built-in SFU): one copy, on the first that works of b, c; back to an earlier target once it has rested 60 s"),
        "{show}"
    );
    let other = explain(&path, &["--kind", "whip", "--stream", "cam"]);
    assert!(
        other.contains("relay (publishers on the built-in SFU): a copy on each of b, c"),
        "{other}"
    );
}

#[test]
fn explain_prints_the_route_and_candidate_order() {
    let path = temp_file(
        "explain.toml",
        "[[backend]]\nid = \"janus\"\nkind = \"whip\"\nwhip_url = \"http://h/{stream}\"\nwhep_url = \"http://h/v/{stream}\"\n\
         [[backend]]\nid = \"vendor\"\nkind = \"whip\"\nwhip_url = \"https://v/{stream}\"\nwhep_url = \"https://v/w/{stream}\"\n\
         [[route]]\nid = \"premium\"\nmatch = { headers = { \"x-tier\" = \"premium\" } }\nbackends = [\"vendor\", \"janus\"]\n\
         [[route]]\nid = \"rest\"\nsplit = [{ backend = \"janus\", weight = 90 }, { backend = \"vendor\", weight = 10 }]\noverflow = [\"vendor\"]\n\
         [[route]]\nid = \"never\"\nbackends = [\"janus\"]\n",
    );
    let run = |extra: &[&str]| {
        let args: Vec<&str> = ["--kind", "whip", "--stream", "cam-1"]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        explain(&path, &args)
    };
    let premium = run(&["--header", "x-tier=premium"]);
    assert!(premium.contains("route premium: MATCH"), "{premium}");
    assert_eq!(
        run(&["--header", "x-tier:premium"]),
        premium,
        "name:value, as the admin API takes it, works too"
    );
    assert!(
        premium.contains("1. vendor (primary)") && premium.contains("2. janus (fallback #1)"),
        "{premium}"
    );
    let rest = run(&[]);
    assert!(
        rest.contains(
            "route premium: no match: header x-tier is missing or differs (header x-tier = \"premium\")"
        ),
        "{rest}"
    );
    assert!(rest.contains("route rest: MATCH"), "{rest}");
    assert!(rest.contains("rendezvous score"), "{rest}");
    assert!(
        rest.contains("(overflow)") || rest.matches("vendor").count() == 1,
        "{rest}"
    );

    let check = whipgate()
        .arg("check")
        .arg("--skip-secrets")
        .arg(&path)
        .output()
        .expect("runs");
    assert!(check.status.success());
    let warnings = String::from_utf8_lossy(&check.stderr);
    assert!(
        warnings
            .contains("warning: route `never` can never match: route `rest` before it catches all"),
        "{warnings}"
    );
}

#[test]
fn sighup_reloads_even_an_unchanged_file() {
    let path = temp_file(
        "hup.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[backend]]\nid = \"a\"\nkind = \"whip\"\nwhip_url = \"http://127.0.0.1:1/{stream}\"\n\
         [[route]]\nbackends = [\"a\"]\n",
    );
    let served = support::spawn_serve(&path, &[], &[]);
    served.signal("HUP");
    let reloaded = served.wait_for("routes reloaded", Duration::from_secs(10));
    let (exit, _) = served.finish();
    let reloaded = reloaded.expect("a reload after SIGHUP");
    assert!(reloaded.contains("generation=2"), "{reloaded}");
    assert!(exit.success());
}

#[test]
fn vendor_kinds_are_checked_explained_and_warned_about() {
    let config = "[[backend]]\nid = \"lk\"\nkind = \"livekit\"\nurl = \"https://p.livekit.cloud\"\napi_key = \"APIxxxx\"\napi_secret_env = \"LIVEKIT_API_SECRET\"\n\n[[backend]]\nid = \"ivs\"\nkind = \"ivs\"\nregion = \"us-east-1\"\nstage_arn = \"arn:aws:ivs:us-east-1:123456789012:stage/abcdABCDefgh\"\naccess_key_id_env = \"AWS_ACCESS_KEY_ID\"\nsecret_access_key_env = \"AWS_SECRET_ACCESS_KEY\"\n\n[[route]]\nid = \"studio\"\nbackends = [\"lk\", \"ivs\"]\n";
    let path = temp_file("vendors.toml", config);
    let output = whipgate()
        .args(["check", "--skip-secrets"])
        .arg(&path)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "route `studio` matches WHEP requests, but its backends (livekit, ivs) serve WHIP only"
        ),
        "{stderr}"
    );

    let output = whipgate()
        .args(["explain", "--config"])
        .arg(&path)
        .args(["--kind", "whep", "--stream", "cam"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("1. lk (primary) — livekit: native WHIP"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(skipped: it does not serve whep)"),
        "{stdout}"
    );

    let typo = temp_file("typo.toml", &config.replace("api_key =", "api_kee ="));
    let output = whipgate()
        .args(["check", "--skip-secrets"])
        .arg(&typo)
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr.contains(":5:") && stderr.contains("unknown key `api_kee` for kind = \"livekit\""),
        "{stderr}"
    );
}

#[test]
fn a_missing_file_is_named_without_a_line() {
    let output = whipgate()
        .args(["check", "/nonexistent/routes.toml"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("/nonexistent/routes.toml: cannot read:"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn serve_says_an_invalid_file_once() {
    let path = temp_file("invalid-serve.toml", "[server]\nlisten = \"nowhere\"\n");
    let output = whipgate()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mentions = stderr
        .lines()
        .filter(|l| l.contains("listen is not an address"))
        .count();
    assert_eq!(mentions, 1, "{stderr}");
}

#[test]
fn explain_simulates_a_token_and_names_the_failing_condition() {
    let path = temp_file(
        "explain-token.toml",
        "[client_auth.studio]\nmode = \"bearer\"\ntokens = [{ token_env = \"EXPLAIN_STUDIO_TOKEN\", subject = \"studio\", tier = \"premium\" }]\n\
         [[backend]]\nid = \"vendor\"\nkind = \"whip\"\nwhip_url = \"https://v/{stream}\"\n\
         [[backend]]\nid = \"janus\"\nkind = \"whip\"\nwhip_url = \"http://h/{stream}\"\n\
         [[route]]\nid = \"premium\"\nmatch = { tier = \"premium\" }\nbackends = [\"vendor\"]\n\
         [[route]]\nid = \"rest\"\nbackends = [\"janus\"]\n",
    );
    let run = |extra: &[&str]| {
        let output = whipgate()
            .args(["explain", "--config"])
            .arg(&path)
            .args(["--kind", "whip", "--stream", "cam"])
            .args(extra)
            .env("EXPLAIN_STUDIO_TOKEN", "studio-token-0123456789")
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let anonymous = run(&[]);
    assert!(
        anonymous.contains("route premium: no match: no credential was accepted"),
        "{anonymous}"
    );
    let premium = run(&["--token", "studio-token-0123456789"]);
    assert!(premium.contains("route premium: MATCH"), "{premium}");
    let wrong = run(&["--token", "not-a-token"]);
    assert!(wrong.contains("route premium: no match"), "{wrong}");
}
