//! The `whipgate` command line: `check` and `serve`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn whipgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_whipgate"))
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("whipgate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
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
    assert!(
        stdout.contains("ok: 1 backend (janus), 1 route"),
        "{stdout}"
    );
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
        stderr.starts_with(&format!("{}:5:1: unknown field `colour`", path.display())),
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
    let mut child = whipgate()
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    // Read the log on a thread so that a missing line fails the test instead of hanging it;
    // the thread keeps draining the pipe so the child never blocks on a full one.
    let (found, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("address=").nth(1) {
                let _ = found.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let address = match address.recv_timeout(Duration::from_secs(10)) {
        Ok(address) => address,
        Err(_) => {
            let _ = child.kill();
            panic!("no startup line with the bound address");
        }
    };
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    use std::io::{Read, Write};
    stream
        .write_all(b"OPTIONS /whip/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("write");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    assert!(reply.starts_with("HTTP/1.1 204"), "{reply}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert!(exit.success(), "{exit:?}");
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
        let output = whipgate()
            .args(["explain", "--config"])
            .arg(&path)
            .args(["--kind", "whip", "--stream", "cam-1"])
            .args(extra)
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let premium = run(&["--header", "x-tier=premium"]);
    assert!(premium.contains("route premium: MATCH"), "{premium}");
    assert!(
        premium.contains("1. vendor (primary)") && premium.contains("2. janus (fallback #1)"),
        "{premium}"
    );
    let rest = run(&[]);
    assert!(
        rest.contains("route premium: no match (header x-tier = \"premium\")"),
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
    let dir = std::env::temp_dir().join(format!("whipgate-cli-hup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("routes.toml");
    std::fs::write(dir.join("admin.token"), "admin-token-admin-token").expect("token");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token_file = \"admin.token\"\n\
         [[backend]]\nid = \"a\"\nkind = \"whip\"\nwhip_url = \"http://127.0.0.1:1/{stream}\"\n\
         [[route]]\nbackends = [\"a\"]\n",
    )
    .expect("write");
    let mut child = whipgate()
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |needle: &str| -> Option<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    let started = wait_for("address=").expect("startup line");
    assert!(started.contains("whipgate serving"));
    let status = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let reloaded = wait_for("routes reloaded");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let reloaded = reloaded.expect("a reload after SIGHUP");
    assert!(reloaded.contains("generation=2"), "{reloaded}");
}
