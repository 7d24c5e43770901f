//! Hot reload: parsing and validating a 10k-route table, and the time from writing
//! routes.toml to the new table serving (file watch, debounce, load, swap).
//! Run: `cargo bench --bench reload`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use whipgate::config::{Config, SecretMode, SystemSecrets};
use whipgate::server::{self, Gateway};

fn table(routes: usize, marker: usize) -> String {
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [[backend]]\nid = \"janus\"\nkind = \"whip\"\nwhip_url = \"http://127.0.0.1:7080/whip/{stream}\"\n\
         [[backend]]\nid = \"vendor\"\nkind = \"whip\"\nwhip_url = \"https://vendor.example/{stream}\"\n",
    );
    for n in 0..routes {
        text.push_str(&format!(
            "[[route]]\nid = \"r{n}-{marker}\"\nmatch = {{ stream = \"tenant{n}-*\" }}\n\
             split = [{{ backend = \"janus\", weight = 90 }}, {{ backend = \"vendor\", weight = 10 }}]\n"
        ));
    }
    text
}

fn load_bench(c: &mut Criterion) {
    let text = table(10_000, 0);
    c.bench_function("config/parse+validate 10k routes", |b| {
        b.iter(|| {
            Config::from_toml(
                &text,
                "bench.toml",
                std::path::Path::new("."),
                SecretMode::Resolve,
                &SystemSecrets,
            )
            .map(|c| c.routes.routes().len())
        })
    });
}

fn reload_bench(c: &mut Criterion) {
    for routes in [100, 10_000] {
        reload_bench_with(c, routes);
    }
}

fn reload_bench_with(c: &mut Criterion, routes: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!(
        "whipgate-reload-bench-{}-{routes}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("routes.toml");
    std::fs::write(&path, table(routes, 0)).expect("write");
    let running = runtime.block_on(async {
        let config = Config::load(&path, SecretMode::Resolve).expect("config");
        let gateway = Gateway::new(config)
            .expect("gateway")
            .with_config_path(path.clone());
        server::start(gateway, None).await.expect("start")
    });
    let gateway = running.gateway.clone();
    let _watch = runtime.block_on(async {
        let (watch, mut changed) =
            whipgate::config::watch(&path, Duration::from_millis(20)).expect("watch");
        let gateway = gateway.clone();
        tokio::spawn(async move {
            while changed.recv().await.is_some() {
                let _ = gateway.reload();
            }
        });
        watch
    });
    let mut marker = 0;
    let mut group = c.benchmark_group("reload");
    group.sample_size(10);
    let name = format!("file write to new {routes}-route table serving (20 ms debounce included)");
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                marker += 1;
                let before = gateway.reload_status().generation;
                let text = table(routes, marker);
                let started = Instant::now();
                std::fs::write(&path, &text).expect("write");
                while gateway.reload_status().generation == before {
                    std::thread::sleep(Duration::from_micros(200));
                }
                total += started.elapsed();
            }
            total
        })
    });
    group.finish();
    runtime.block_on(running.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, load_bench, reload_bench);
criterion_main!(benches);
