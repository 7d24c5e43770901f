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
