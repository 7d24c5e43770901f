//! Hot reload: last good table kept, sessions outlive their backend's removal, a hundred
//! rewrites under load lose no request, the ConfigMap symlink swap is noticed, admin API.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{gateway_from, post_offer, send, whip_server, ConfigDir, FakeBackend};

fn table(a: &FakeBackend, b: &FakeBackend, with_a: bool, route_to: &str) -> String {
    let backend = |id: &str, fake: &FakeBackend| {
        format!(
            "[[backend]]\nid = \"{id}\"\nkind = \"whip\"\nwhip_url = \"{}\"\nwhep_url = \"{}\"\n",
            fake.url("/whip/{stream}"),
            fake.url("/whep/{stream}")
        )
    };
    format!(
        "[server]\npublic_url = \"https://gw.example.com\"\nsession_keys = [{{ id = \"k1\", secret_file = \"k1.key\" }}]\n\
         admin_token_file = \"k1.key\"\n{}{}[[route]]\nbackends = [\"{route_to}\"]\n",
        if with_a { backend("a", a) } else { String::new() },
        backend("b", b),
    )
}

const FRAG: &str =
    "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n\
                    a=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n";

#[tokio::test]
async fn invalid_files_are_refused_and_sessions_outlive_their_backend() {
    let a = FakeBackend::start(whip_server()).await;
    let b = FakeBackend::start(whip_server()).await;
    let dir = ConfigDir::new("reload");
    dir.write(&table(&a, &b, true, "a"));
    let gw = gateway_from(&dir).await;
    let on_a = post_offer(gw.local_addr, "/whip/s", &[]).await;
    assert_eq!(on_a.status, 201);

    dir.write(&table(&a, &b, false, "b"));
    assert_eq!(gw.gateway.reload(), Ok(2));
    assert_eq!(post_offer(gw.local_addr, "/whip/t", &[]).await.status, 201);
    assert_eq!(b.count(), 1, "new sessions follow the new table");

    dir.write("[[route]]\nbackends = [\"nowhere\"]\n");
    let error = gw.gateway.reload().expect_err("invalid");
    assert!(error.contains("unknown backend `nowhere`"), "{error}");
    assert_eq!(
        gw.gateway.reload_status().last_error.as_deref(),
        Some(error.as_str())
    );
    assert_eq!(
        post_offer(gw.local_addr, "/whip/u", &[]).await.status,
        201,
        "last good table serves"
    );
    assert_eq!(b.count(), 2);

    // `a` left the table two reloads ago; its session still works.
    let session = on_a.location_path();
    let patched = send(
        gw.local_addr,
        "PATCH",
        &session,
        &[("content-type", "application/trickle-ice-sdpfrag")],
        FRAG,
    )
    .await;
    assert_eq!(patched.status, 204, "{}", patched.body);
    assert_eq!(
        send(gw.local_addr, "DELETE", &session, &[], "")
            .await
            .status,
        200
    );
    assert_eq!(a.count(), 3, "POST, PATCH and DELETE all reached a");
}

#[tokio::test]
async fn a_hundred_rewrites_under_load_lose_no_request() {
    let a = FakeBackend::start(whip_server()).await;
    let b = FakeBackend::start(whip_server()).await;
    let dir = ConfigDir::new("stress");
    dir.write(&table(&a, &b, true, "a"));
    let gw = gateway_from(&dir).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let cycles = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for client in 0..2 {
        let (stop, failures, cycles, addr) = (
            stop.clone(),
            failures.clone(),
            cycles.clone(),
            gw.local_addr,
        );
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let created = post_offer(addr, &format!("/whip/c{client}-{n}"), &[]).await;
                if created.status != 201 {
                    failures.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                let session = created.location_path();
                let patched = send(
                    addr,
                    "PATCH",
                    &session,
                    &[("content-type", "application/trickle-ice-sdpfrag")],
                    FRAG,
                )
                .await;
                let deleted = send(addr, "DELETE", &session, &[], "").await;
                if patched.status != 204 || deleted.status != 200 {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                cycles.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    let (mut applied, mut refused) = (0, 0);
    for version in 0..100 {
        let text = if version % 5 == 4 {
            // Every fifth version is broken in a different way.
            match version % 3 {
                0 => "[[route]]\nbackends = [\"ghost\"]\n".to_owned(),
                1 => table(&a, &b, true, "a").replace("[server]", "[server]\nlisten_typo = 1"),
                _ => "this is not toml = = =".to_owned(),
            }
        } else if version % 2 == 0 {
            table(&a, &b, true, "a")
        } else {
            table(&a, &b, false, "b")
        };
        dir.write(&text);
        match gw.gateway.reload() {
            Ok(_) => applied += 1,
            Err(_) => refused += 1,
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client loop");
    }
    assert_eq!((applied, refused), (80, 20));
    let status = gw.gateway.reload_status();
    assert_eq!(
        (status.generation, status.reloads_ok, status.reloads_failed),
        (81, 80, 20)
    );
    assert_eq!(
        failures.load(Ordering::SeqCst),
        0,
        "no request failed across 100 reloads"
    );
    assert!(
        cycles.load(Ordering::SeqCst) > 20,
        "the client loop really ran"
    );
    assert!(a.count() > 0 && b.count() > 0, "both tables served");
}

/// Kubernetes mounts a ConfigMap as `routes.toml -> ..data/routes.toml`, `..data -> ..TS`;
/// an update writes `..TS2/`, points `..data` at it with a rename, and deletes `..TS`.
#[tokio::test]
async fn a_configmap_symlink_swap_is_noticed() {
    let a = FakeBackend::start(whip_server()).await;
    let b = FakeBackend::start(whip_server()).await;
    let dir = ConfigDir::new("configmap");
    let version = |name: &str, text: &str| {
        let versioned = dir.dir.join(name);
        std::fs::create_dir_all(&versioned).expect("dir");
        std::fs::write(versioned.join("routes.toml"), text).expect("write");
        std::fs::write(
            versioned.join("k1.key"),
            "k1-secret-k1-secret-k1-secret-k1-secret",
        )
        .expect("key");
    };
    let point_data_at = |name: &str| {
        let temp = dir.dir.join("..data_tmp");
        let _ = std::fs::remove_file(&temp);
        std::os::unix::fs::symlink(name, &temp).expect("symlink");
        std::fs::rename(&temp, dir.dir.join("..data")).expect("swap");
    };
    version("..2026_11_24_1", &table(&a, &b, true, "a"));
    point_data_at("..2026_11_24_1");
    let _ = std::fs::remove_file(dir.path());
    std::os::unix::fs::symlink("..data/routes.toml", dir.path()).expect("link");

    let gw = gateway_from(&dir).await;
    let (_watch, mut changed) =
        whipgate::config::watch(&dir.path(), Duration::from_millis(50)).expect("watch");
    let gateway = gw.gateway.clone();
    tokio::spawn(async move {
        while changed.recv().await.is_some() {
            let _ = gateway.reload();
        }
    });

    for (n, route_to) in [(2, "b"), (3, "a")] {
        let name = format!("..2026_11_24_{n}");
        version(&name, &table(&a, &b, true, route_to));
        point_data_at(&name);
        std::fs::remove_dir_all(dir.dir.join(format!("..2026_11_24_{}", n - 1)))
            .expect("old version");
        let mut generation = 0;
        for _ in 0..100 {
            generation = gw.gateway.reload_status().generation;
            if generation == n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            generation,
            n,
            "swap {n} was not picked up: {:?}",
            gw.gateway.reload_status()
        );
    }
    post_offer(gw.local_addr, "/whip/x", &[]).await;
    assert_eq!(
        (a.count(), b.count()),
        (1, 0),
        "the third version routes to a"
    );
}

#[tokio::test]
async fn the_admin_api_reloads_reports_and_explains() {
    let a = FakeBackend::start(whip_server()).await;
    let b = FakeBackend::start(whip_server()).await;
    let dir = ConfigDir::new("admin");
    dir.write(&table(&a, &b, true, "a"));
    let gw = gateway_from(&dir).await;
    let token = "Bearer k1-secret-k1-secret-k1-secret-k1-secret";

    assert_eq!(
        send(gw.local_addr, "POST", "/admin/reload", &[], "")
            .await
            .status,
        401
    );
    assert_eq!(
        send(
            gw.local_addr,
            "POST",
            "/admin/reload",
            &[("authorization", "Bearer wrong")],
            ""
        )
        .await
        .status,
        401
    );
    dir.write(&table(&a, &b, true, "b"));
    let reloaded = send(
        gw.local_addr,
        "POST",
        "/admin/reload",
        &[("authorization", token)],
        "",
    )
    .await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.body);
    assert_eq!(reloaded.body, "{\"generation\":2}");

    dir.write("[[route]]\n");
    let refused = send(
        gw.local_addr,
        "POST",
        "/admin/reload",
        &[("authorization", token)],
        "",
    )
    .await;
    assert_eq!(refused.status, 422);
    let status = send(
        gw.local_addr,
        "GET",
        "/admin/config",
        &[("authorization", token)],
        "",
    )
    .await;
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("json");
    assert_eq!(json["generation"], 2);
    assert!(
        json["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("routes.toml")),
        "{json}"
    );
    assert!(!status.body.contains("k1-secret"));

    let explained = send(
        gw.local_addr,
        "GET",
        "/admin/explain?kind=whip&stream=cam-1",
        &[("authorization", token)],
        "",
    )
    .await;
    assert_eq!(explained.status, 200);
    assert!(
        explained.body.contains("route route-1: MATCH"),
        "{}",
        explained.body
    );
    assert!(
        explained.body.contains("1. b (primary)"),
        "{}",
        explained.body
    );
}

#[tokio::test]
async fn viewers_find_a_publisher_the_previous_table_placed() {
    // `a` has the live publisher; after the reload the table sends the stream to `b`, which
    // has none yet (404): the viewer falls back to the previous table's placement.
    let a = FakeBackend::start(whip_server()).await;
    let b = FakeBackend::start(|_| support::Reply::new(404)).await;
    let dir = ConfigDir::new("previous");
    dir.write(&table(&a, &b, true, "a"));
    let gw = gateway_from(&dir).await;
    dir.write(&table(&a, &b, true, "b"));
    assert_eq!(gw.gateway.reload(), Ok(2));
    let viewer = post_offer(gw.local_addr, "/whep/live", &[]).await;
    assert_eq!(viewer.status, 201, "{}", viewer.body);
    assert_eq!(
        (b.count(), a.count()),
        (1, 1),
        "tried b first, then the previous table's a"
    );
}
