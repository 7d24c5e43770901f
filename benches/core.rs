//! The pure hot spots of one request: SDP check and write, token seal and open, routing.
//! Run: `cargo bench --bench core`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use whipgate::kind::EndpointKind;
use whipgate::routing::{BackendId, Route, RouteTable, StreamGlob, StreamName};
use whipgate::sdp;
use whipgate::session::{Keyring, SessionClaims};

fn corpus(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/sdp-corpus")
        .join(name);
    std::fs::read_to_string(path).expect("corpus file")
}

fn sdp_benches(c: &mut Criterion) {
    let offer = corpus("chromium-whip-offer-simulcast.sdp");
    c.bench_function("sdp/prepare_offer chromium simulcast (5.8 KB)", |b| {
        b.iter(|| sdp::prepare_offer(EndpointKind::Whip, black_box(&offer)).map(|o| o.text()))
    });
    c.bench_function("sdp/lines parse+write chromium simulcast", |b| {
        b.iter(|| sdp::Lines::parse(black_box(&offer)).map(|l| l.write()))
    });
    let policy: sdp::Policy = toml::from_str(
        "video_codecs = [\"H264\", \"VP8\"]\nsimulcast = \"strip\"\nmax_video_kbps = 2500\n\
         drop_candidates = [\"tcp\"]\nheader_extensions = { deny = [\"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\"] }",
    )
    .expect("policy");
    c.bench_function(
        "sdp/parse+policy+write chromium simulcast (no validation)",
        |b| {
            b.iter(|| {
                let mut lines = sdp::Lines::parse(black_box(&offer)).expect("parses");
                sdp::apply_policy(&mut lines, &policy).map(|()| lines.write())
            })
        },
    );
    c.bench_function(
        "sdp/prepare_offer+rewrite chromium simulcast (full request path)",
        |b| {
            b.iter(|| {
                sdp::prepare_offer(EndpointKind::Whip, black_box(&offer))
                    .and_then(|o| o.rewrite(&policy))
                    .map(|o| o.text())
            })
        },
    );
    let frag = corpus("gstreamer-trickle-1.sdpfrag");
    c.bench_function("sdp/prepare_trickle gstreamer", |b| {
        b.iter(|| sdp::prepare_trickle(black_box(&frag), &[]))
    });
}

fn token_benches(c: &mut Criterion) {
    let keys = Keyring::new([(
        "k1".to_string(),
        "0123456789abcdef0123456789abcdef".as_bytes(),
    )])
    .expect("keys");
    let claims = SessionClaims {
        sid: "00112233445566778899aabb".into(),
        backend: "janus-eu".into(),
        resource: "https://whip.vendor.example/resource/7f3a9c2e-5b1d-4e8f-a6c0-123456789abc"
            .into(),
        kind: EndpointKind::Whip,
        stream: "camera-17".into(),
        route: "default".into(),
        created: 1_764_000_000,
        expires: 1_764_604_800,
    };
    c.bench_function("session/seal", |b| {
        b.iter(|| keys.seal(black_box(&claims), [7; 12]))
    });
    let token = keys.seal(&claims, [7; 12]);
    c.bench_function("session/open", |b| {
        b.iter(|| keys.open(black_box(&token), 1_764_000_100))
    });
}

fn routing_benches(c: &mut Criterion) {
    let routes: Vec<Route> = (0..20)
        .map(|i| Route {
            id: format!("r{i}"),
            kind: Some(EndpointKind::Whip),
            stream: Some(StreamGlob::new(&format!("tenant{i}-*")).expect("glob")),
            backends: vec![BackendId(format!("b{i}"))],
            sdp: Default::default(),
        })
        .collect();
    let table = RouteTable::new(routes);
    let stream = StreamName::new("tenant19-camera".into()).expect("name");
    c.bench_function("routing/select 20 routes, last matches", |b| {
        b.iter(|| {
            table
                .select(EndpointKind::Whip, black_box(&stream))
                .map(|r| r.id.len())
        })
    });
}

criterion_group!(benches, sdp_benches, token_benches, routing_benches);
criterion_main!(benches);
