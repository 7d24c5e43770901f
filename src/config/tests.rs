use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use url::Url;

use super::*;

struct FakeSecrets(HashMap<&'static str, &'static str>);

impl SecretSource for FakeSecrets {
    fn env(&self, name: &str) -> Option<String> {
        self.0.get(name).map(|v| v.to_string())
    }

    fn file(&self, path: &Path) -> std::io::Result<String> {
        let key = path.to_string_lossy().into_owned();
        self.0
            .iter()
            .find(|(k, _)| **k == key)
            .map(|(_, v)| v.to_string())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"))
    }
}

fn secrets() -> FakeSecrets {
    FakeSecrets(HashMap::from([
        ("KEY", "0123456789abcdef0123456789abcdef"),
        ("JANUS", "janus-token"),
        ("/etc/wg/token", "file-token\n"),
    ]))
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(
        text,
        "routes.toml",
        Path::new("/etc/wg"),
        SecretMode::Resolve,
        &secrets(),
    )
}

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:9000"
public_url = "https://gw.example.com"
session_keys = [{ id = "k1", secret_env = "KEY" }]
session_ttl = "2d"

[[backend]]
id = "janus"
kind = "whip"
whip_url = "http://10.0.0.5:7080/whip/endpoint/{stream}"
auth = { bearer_env = "JANUS" }

[[backend]]
id = "vendor"
kind = "whip"
whip_url = "https://whip.vendor.example/{stream}"
whep_url = "https://whep.vendor.example/{stream}"
auth = { bearer_file = "token" }
allowed_hosts = ["media.vendor.example"]

[[route]]
match = { kind = "whip", stream = "cam-*" }
backends = ["janus", "vendor"]

[[route]]
id = "viewers"
match = { kind = "whep" }
backends = ["vendor"]
"#;

#[test]
fn loads_a_good_file() {
    let config = load(GOOD).expect("valid");
    assert_eq!(config.server.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(config.server.session_ttl, Duration::from_secs(2 * 86400));
    assert_eq!(config.routes.routes()[0].id, "route-1");
    assert_eq!(config.routes.routes()[1].id, "viewers");
    let vendor = &config.backends[&BackendId("vendor".into())];
    assert_eq!(vendor.kind(), "whip");
    assert!(
        vendor.adapter.describe().contains("bearer"),
        "{}",
        vendor.adapter.describe()
    );
    assert!(vendor.allows_host(&Url::parse("https://media.vendor.example:8443/r").expect("url")));
    assert!(vendor.allows_host(&Url::parse("https://whip.vendor.example/r").expect("url")));
    assert!(!vendor.allows_host(&Url::parse("https://whip.vendor.example:444/r").expect("url")));
    assert!(!vendor.allows_host(&Url::parse("https://evil.example/r").expect("url")));
    assert_eq!(
        config.summary(),
        "2 backends (janus, vendor), 2 routes, listen 127.0.0.1:9000"
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let config = load(GOOD).expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains("janus-token"));
    assert!(!debug.contains("file-token"));
    assert!(!debug.contains("0123456789abcdef"));
}

fn error(text: &str) -> String {
    load(text).expect_err("invalid").to_string()
}

#[test]
fn unknown_keys_are_errors_with_their_line() {
    let text = GOOD.replace("session_ttl = \"2d\"", "session_tll = \"2d\"");
    let message = error(&text);
    assert!(message.starts_with("routes.toml:6:"), "{message}");
    assert!(message.contains("unknown field `session_tll`"), "{message}");
    assert!(!message.contains('\n'));
}

#[test]
fn unknown_backend_in_a_route_is_an_error() {
    let text = GOOD.replace(
        "backends = [\"janus\", \"vendor\"]",
        "backends = [\"janus\", \"nope\"]",
    );
    let message = error(&text);
    assert!(message.starts_with("routes.toml:24:"), "{message}");
    assert!(message.contains("unknown backend `nope`"), "{message}");
}

#[test]
fn other_mistakes_are_located() {
    let cases = [
        (
            GOOD.replace("{ bearer_env = \"JANUS\" }", "{ bearer_env = \"MISSING\" }"),
            "MISSING is not set",
        ),
        (
            GOOD.replace(
                "http://10.0.0.5:7080/whip/endpoint/{stream}",
                "http://{stream}.evil/x",
            ),
            "not in its scheme or host",
        ),
        (
            GOOD.replace(
                "kind = \"whip\"\nwhip_url = \"http",
                "kind = \"mediasoup\"\nwhip_url = \"http",
            ),
            "unknown kind `mediasoup`",
        ),
        (
            GOOD.replace("stream = \"cam-*\"", "stream = \"cam-[\""),
            "bad stream glob",
        ),
        (
            GOOD.replace("listen = \"127.0.0.1:9000\"", "listen = \"nowhere\""),
            "listen is not an address",
        ),
        (
            GOOD.replace(
                "public_url = \"https://gw.example.com\"",
                "public_url = \"https://gw/?a=b\"",
            ),
            "query",
        ),
        (
            GOOD.replace("id = \"vendor\"", "id = \"janus\""),
            "appears twice",
        ),
        (
            GOOD.replace("id = \"viewers\"", "id = \"route-1\""),
            "route id `route-1` appears twice",
        ),
        (
            GOOD.replace("backends = [\"vendor\"]", "backends = []"),
            "lists no backends",
        ),
        (
            GOOD.replace(
                "match = { kind = \"whep\" }\nbackends = [\"vendor\"]",
                "match = { kind = \"whep\" }\nbackends = [\"janus\"]",
            ),
            "none of its backends has a whep_url",
        ),
        (
            GOOD.replace("secret_env = \"KEY\"", "secret_env = \"JANUS\""),
            "at least 32 bytes",
        ),
        (
            GOOD.replace(
                "auth = { bearer_file = \"token\" }",
                "auth = { bearer_file = \"token\", passthrough = true }",
            ),
            "give one of",
        ),
        (
            GOOD.replace("id = \"viewers\"", "id = \"viewers\"\nbind_sessions = true"),
            "bind_sessions needs the route's auth",
        ),
        ("[server]\n".to_owned(), "no [[route]]"),
        ("this is = = not toml".to_owned(), "routes.toml:1:"),
    ];
    for (text, expected) in cases {
        let message = error(&text);
        assert!(
            message.contains(expected),
            "expected {expected:?} in {message:?}"
        );
        assert!(!message.contains('\n'), "{message:?}");
    }
}

#[test]
fn skip_mode_checks_shape_without_secrets() {
    let text = GOOD.replace("{ bearer_env = \"JANUS\" }", "{ bearer_env = \"MISSING\" }");
    let config = Config::from_toml(
        &text,
        "routes.toml",
        Path::new("."),
        SecretMode::Skip,
        &secrets(),
    );
    assert!(config.is_ok());
}

#[test]
fn defaults_are_safe() {
    let config = load(
        "[[backend]]\nid = \"b\"\nkind = \"whip\"\nwhip_url = \"http://127.0.0.1:1/{stream}\"\n\
         [[route]]\nbackends = [\"b\"]\n",
    )
    .expect("valid");
    let server = &config.server;
    assert_eq!(server.listen.to_string(), "0.0.0.0:8080");
    assert!(server.session_keys.is_empty());
    assert_eq!(server.max_body_bytes, 64 * 1024);
    assert!(server.request_timeout > server.upstream_timeout);
    assert_eq!(server.cors_allow_origins, vec!["*".to_string()]);
}

#[test]
fn workers_default_to_the_cores_and_zero_is_refused() {
    let config = load(GOOD).expect("valid");
    assert_eq!(
        config.server.workers,
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    let text = GOOD.replace("session_ttl = \"2d\"", "session_ttl = \"2d\"\nworkers = 3");
    assert_eq!(load(&text).expect("valid").server.workers, 3);
    let text = GOOD.replace("session_ttl = \"2d\"", "session_ttl = \"2d\"\nworkers = 0");
    let message = error(&text);
    assert!(message.contains("workers must be at least 1"), "{message}");
}

const RELAY: &str = r#"
[builtin]
udp_listen = "127.0.0.1:0"

[[backend]]
id = "sfu"
kind = "builtin"

[[backend]]
id = "cdn"
kind = "whip"
whip_url = "https://whip.cdn.example/{stream}"
whep_url = "https://whep.cdn.example/{stream}"

[[backend]]
id = "backup"
kind = "whip"
whip_url = "https://whip.backup.example/{stream}"

[[backend]]
id = "lk"
kind = "livekit"
url = "https://lk.example"
api_key = "key"
api_secret_env = "KEY"
"#;

#[test]
fn a_relay_plan_is_read_with_its_defaults() {
    let config = load(&format!(
        "{RELAY}[[route]]\nbackends = [\"sfu\"]\nrelay = {{ to = [\"cdn\", \"backup\"], failback = \"30s\" }}\n"
    ))
    .expect("valid");
    let plan = config.routes.routes()[0].relay.clone().expect("a plan");
    assert_eq!(
        plan.to,
        vec![BackendId("cdn".into()), BackendId("backup".into())]
    );
    assert_eq!(plan.mode, crate::routing::relay::RelayMode::Failover);
    assert_eq!(plan.failback, Some(Duration::from_secs(30)));
}

#[test]
fn relay_plans_that_cannot_work_are_refused() {
    for (relay, backends, expected) in [
        (
            r#"{ to = ["cdn"] }"#,
            r#"["cdn"]"#,
            "relay needs a builtin backend",
        ),
        (
            r#"{ to = ["nope"] }"#,
            r#"["sfu"]"#,
            "unknown backend `nope`",
        ),
        (
            r#"{ to = ["sfu"] }"#,
            r#"["sfu"]"#,
            "this process's own SFU",
        ),
        (
            r#"{ to = ["cdn", "cdn"] }"#,
            r#"["sfu"]"#,
            "lists `cdn` twice",
        ),
        (r#"{ to = [] }"#, r#"["sfu"]"#, "lists no targets"),
        (
            r#"{ to = ["cdn"], mode = "all", failback = "5s" }"#,
            r#"["sfu"]"#,
            "failback applies",
        ),
        (
            r#"{ to = ["cdn"], mode = "some" }"#,
            r#"["sfu"]"#,
            "unknown variant",
        ),
    ] {
        let text = format!("{RELAY}[[route]]\nbackends = {backends}\nrelay = {relay}\n");
        let message = error(&text);
        assert!(message.contains(expected), "{relay}: {message}");
    }
}

#[test]
fn a_pull_origin_must_be_a_remote_whep_backend() {
    let with = |pull: &str| {
        format!("{RELAY}[[backend]]\nid = \"edge\"\nkind = \"builtin\"\npull = \"{pull}\"\n\n[[route]]\nbackends = [\"edge\"]\n")
    };
    load(&with("cdn")).expect("a WHIP server's WHEP side");
    for (pull, expected) in [
        ("nope", "pulls from unknown backend `nope`"),
        ("sfu", "a builtin backend of this process"),
        ("lk", "takes no WHEP sessions"),
        ("backup", "takes no WHEP sessions"),
    ] {
        let message = error(&with(pull));
        assert!(message.contains(expected), "{pull}: {message}");
        assert!(message.contains("backend `edge`"), "{message}");
    }
}

#[test]
fn sfu_engine_threads_and_gso_are_read_and_bounded() {
    let config = load(&format!("{RELAY}[[route]]\nbackends = [\"sfu\"]\n")).expect("valid");
    let settings = config.builtin.expect("[builtin]");
    assert_eq!(settings.threads, crate::sfu::default_threads());
    assert!(settings.gso);
    let with = |extra: &str| {
        format!(
            "{}[[route]]\nbackends = [\"sfu\"]\n",
            RELAY.replace(
                "udp_listen = \"127.0.0.1:0\"",
                &format!("udp_listen = \"127.0.0.1:0\"\n{extra}")
            )
        )
    };
    let settings = load(&with("threads = 3\ngso = false"))
        .expect("valid")
        .builtin
        .expect("[builtin]");
    assert_eq!((settings.threads, settings.gso), (3, false));
    for bad in ["threads = 0", "threads = 65"] {
        let message = error(&with(bad));
        assert!(message.contains("threads must be 1 to 64"), "{message}");
    }
}
