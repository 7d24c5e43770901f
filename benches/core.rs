//! The pure hot spots of one request: SDP check and write, token seal and open, routing.
//! Run: `cargo bench --bench core`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use whipgate::kind::EndpointKind;
use whipgate::routing::{
    BackendId, Matcher, Placement, RequestFacts, Route, RouteTable, StreamName, StreamPattern,
};
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
    c.bench_function(
        "sdp/prepare_offer strict (webrtc-sdp too) chromium simulcast",
        |b| {
            b.iter(|| {
                sdp::prepare_offer_with(
                    EndpointKind::Whip,
                    black_box(&offer),
                    sdp::Validation::Strict,
                )
                .map(|o| o.text())
            })
        },
    );
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
                    .and_then(|o| o.rewrite(&policy).map(|o| o.text()))
            })
        },
    );
    let answer = corpus("janus-whip-answer-simulcast.sdp");
    let prepared = sdp::prepare_offer(EndpointKind::Whip, &offer).expect("offer");
    let no_policy = sdp::Policy::default();
    c.bench_function("sdp/accept_answer janus simulcast (no policy)", |b| {
        b.iter(|| {
            prepared
                .accept_answer(black_box(&answer), &no_policy)
                .map(|a| a.len())
        })
    });
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
        subject: None,
        state: Default::default(),
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
    let route = |i: usize, pattern: StreamPattern, placement: Placement| Route {
        id: format!("r{i}"),
        matcher: Matcher {
            kind: Some(EndpointKind::Whip),
            stream: Some(pattern),
            ..Matcher::default()
        },
        placement,
        overflow: vec![BackendId("overflow".into())],
        sdp: Default::default(),
        auth: None,
        bind_sessions: false,
        ice_servers: Vec::new(),
        ice_policy: whipgate::config::IcePolicy::Backend,
        relay: None,
    };
    let weighted = || {
        Placement::Weighted(vec![
            (BackendId("janus".into()), 90),
            (BackendId("cloudflare".into()), 10),
        ])
    };
    let headers = http::HeaderMap::new();
    let stream = StreamName::new("tenant19-camera".into()).expect("name");
    let facts = RequestFacts {
        kind: EndpointKind::Whip,
        stream: &stream,
        host: None,
        headers: &headers,
        query: None,
        client_ip: None,
        identities: &[],
    };
    let small = RouteTable::new(
        (0..20)
            .map(|i| {
                route(
                    i,
                    StreamPattern::glob(&format!("tenant{i}-*")).expect("glob"),
                    weighted(),
                )
            })
            .collect(),
    );
    c.bench_function(
        "routing/decide 20 glob routes, last matches, weighted",
        |b| b.iter(|| small.decide(black_box(&facts)).map(|d| d.candidates.len())),
    );
    // 10k routes: exact-name globs, the match near the end; the worst case of a linear table.
    let mut routes: Vec<Route> = (0..10_000)
        .map(|i| {
            route(
                i,
                StreamPattern::glob(&format!("stream-{i}")).expect("glob"),
                weighted(),
            )
        })
        .collect();
    routes.push(route(
        10_000,
        StreamPattern::glob("tenant19-*").expect("glob"),
        weighted(),
    ));
    let large = RouteTable::new(routes);
    c.bench_function("routing/decide 10k routes, last matches", |b| {
        b.iter(|| large.decide(black_box(&facts)).map(|d| d.candidates.len()))
    });
    let placement = weighted();
    c.bench_function("routing/rendezvous placement of 2 weighted backends", |b| {
        b.iter(|| placement.order(black_box("tenant19-camera")).len())
    });
}

criterion_group!(benches, sdp_benches, token_benches, routing_benches);
criterion_main!(benches);
