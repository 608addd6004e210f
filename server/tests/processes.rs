//! The deployed shape: `mpcvit-dealer`, `mpcvit-server --party 1` and
//! `mpcvit-server --party 0` as three processes on loopback, each given only
//! its own directory from `mpcvit-server certs --per-role` and
//! `mpcvit-server split --per-party` (as the containers are); a client in
//! this process. End to end against the plaintext model, the health ports
//! (`--health-listen`, probed with `mpcvit-server health`), then faults: the
//! peer dies mid-inference and comes back; the dealer dies and the pool
//! drains.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{argmax, max_diff, png, small_model};
use mpcvit_client::{Client, ClientAuth, RemoteModel};
use mpcvit_server::tls::{Role, TlsMaterial};
use tonic::Code;

const SERVER: &str = env!("CARGO_BIN_EXE_mpcvit-server");
const DEALER: &str = env!("CARGO_BIN_EXE_mpcvit-dealer");

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on, never handed out twice in this
/// process (the tests run in parallel).
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let p = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&p) {
            given.push(p);
            return p;
        }
    }
}

struct Deployment {
    dir: PathBuf,
    // dealer, party 0, party 1, party 1 peer, then the health ports of
    // dealer, party 0, party 1
    ports: [u16; 7],
}

const HEALTH: usize = 4;

impl Deployment {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mpcvit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let certs = || {
            run(Command::new(SERVER)
                .args(["certs", "--per-role", "--keep-existing", "--out"])
                .arg(dir.join("certs")))
        };
        let split = || {
            run(Command::new(SERVER)
                .args(["split", "--random", "small", "--seed", "1"])
                .args(["--per-party", "--keep-existing", "--out"])
                .arg(dir.join("model")))
        };
        certs();
        split();
        // Running the one-shot steps again changes nothing.
        let ca = std::fs::read(dir.join("certs/party0/ca.pem")).unwrap();
        let share = std::fs::read(dir.join("model/party1/share-1.safetensors")).unwrap();
        certs();
        split();
        assert_eq!(ca, std::fs::read(dir.join("certs/party0/ca.pem")).unwrap());
        assert_eq!(
            share,
            std::fs::read(dir.join("model/party1/share-1.safetensors")).unwrap()
        );
        // Each holder's directory has what it needs and nothing else.
        for (role, files) in [
            ("dealer", ["ca.pem", "dealer.pem", "dealer.key"]),
            ("party0", ["ca.pem", "party0.pem", "party0.key"]),
            ("party1", ["ca.pem", "party1.pem", "party1.key"]),
            ("client", ["ca.pem", "client.pem", "client.key"]),
        ] {
            let mut have: Vec<String> = std::fs::read_dir(dir.join("certs").join(role))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            have.sort();
            let mut want = files.map(String::from).to_vec();
            want.sort();
            assert_eq!(have, want, "{role}");
        }
        for p in 0..2 {
            let mut have: Vec<String> = std::fs::read_dir(dir.join(format!("model/party{p}")))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            have.sort();
            assert_eq!(
                have,
                [
                    "manifest.json".to_string(),
                    format!("share-{p}.safetensors")
                ]
            );
        }
        Deployment {
            dir,
            ports: std::array::from_fn(|_| free_port()),
        }
    }

    /// `mpcvit-server health` against health port `i` (0 dealer, 1 and 2
    /// the parties): whether `service` is SERVING.
    fn healthy(&self, i: usize, service: &str) -> bool {
        Command::new(SERVER)
            .args(["health", "--addr", &self.addr(HEALTH + i)])
            .args(["--service", service, "--timeout", "2"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Wait (at most 30 s) until health port `i` says `want` for `service`.
    async fn wait_health(&self, i: usize, service: &str, want: bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.healthy(i, service) != want {
            assert!(
                Instant::now() < deadline,
                "health port {i}: {service:?} never became {}",
                if want { "SERVING" } else { "not serving" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self, name: &str) -> Stdio {
        Stdio::from(std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap())
    }

    fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    fn dealer(&self) -> Proc {
        Proc(
            Command::new(DEALER)
                .args(["--listen", &self.addr(0), "--certs"])
                .arg(self.dir.join("certs/dealer"))
                .args(["--health-listen", &self.addr(HEALTH)])
                .stderr(self.log("dealer"))
                .spawn()
                .unwrap(),
        )
    }

    fn party(&self, p: usize, extra: &[&str]) -> Proc {
        Proc(
            Command::new(SERVER)
                .args(["--party", &p.to_string(), "--model"])
                .arg(self.dir.join(format!("model/party{p}")))
                .arg("--certs")
                .arg(self.dir.join(format!("certs/party{p}")))
                .args(["--listen", &self.addr(1 + p)])
                .args(["--health-listen", &self.addr(HEALTH + 1 + p)])
                .args(["--peer-listen", &self.addr(3), "--peer", &self.addr(3)])
                .args(["--dealer", &self.addr(0)])
                .args([
                    "--join-timeout",
                    "3",
                    "--recv-timeout",
                    "5",
                    "--pool-wait",
                    "10",
                ])
                .args(extra)
                .env("RUST_LOG", "info")
                .stderr(self.log(&format!("party{p}-{}", Instant::now().elapsed().as_nanos())))
                .spawn()
                .unwrap(),
        )
    }

    async fn client(&self) -> Client {
        let tls = TlsMaterial::load(&self.dir.join("certs/client"), Role::Client).unwrap();
        let auth = ClientAuth::Cert(tls);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect([&self.addr(1), &self.addr(2)], &auth).await {
                Ok(c) => return c,
                Err(e) if Instant::now() > deadline => panic!("cannot connect: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("logs kept in {}", self.dir.display());
        }
    }
}

fn run(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn ready(client: &Client) -> RemoteModel {
    client
        .wait_ready("small", Duration::from_secs(60))
        .await
        .unwrap()
}

async fn check_correct(client: &Client, m: &RemoteModel, seeds: std::ops::Range<u64>) {
    let model = small_model();
    for seed in seeds {
        let bytes = png(16 + 4 * (seed as u32 % 5), seed);
        let r = client.infer_image(m, &bytes).await.unwrap();
        let plain = model
            .forward(&model::preprocess(model.config(), &bytes).unwrap())
            .unwrap();
        assert!(max_diff(&plain, &r.logits) < 0.05);
        assert_eq!(argmax(&plain), argmax(&r.logits));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_end_to_end_and_peer_death() {
    let d = Deployment::new("e2e");
    let _dealer = d.dealer();
    let _p0 = d.party(0, &[]);
    // Party 0 is alive but not ready until party 1 is there to pair with.
    d.wait_health(1, "", true).await;
    assert!(!d.healthy(1, "mpcvit.v1.Inference"));
    let mut p1 = d.party(1, &[]);
    let client = d.client().await;
    let m = ready(&client).await;
    check_correct(&client, &m, 0..3).await;
    for i in 1..3 {
        d.wait_health(i, "mpcvit.v1.Inference", true).await;
    }
    assert!(d.healthy(0, "mpcvit.v1.Dealer"));
    assert!(!d.healthy(0, "no.such.Service"));

    // Party 1 dies while sessions are in flight.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..4u64 {
        let (client, m) = (client.clone(), m.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            (client.infer_image(&m, &png(16, 50 + i)).await, t.elapsed())
        });
    }
    tokio::time::sleep(Duration::from_millis(40)).await;
    drop(p1);
    let mut failed = 0;
    while let Some(j) = tasks.join_next().await {
        let (r, took) = j.unwrap();
        assert!(took < Duration::from_secs(15), "a session took {took:?}");
        if let Err(e) = r {
            failed += 1;
            let code = e.code();
            assert!(
                matches!(code, Some(Code::Unavailable | Code::Aborted)),
                "unexpected error: {e}"
            );
        }
    }
    assert!(failed > 0, "party 1 died but every session succeeded");
    // Party 0 answers at once that it is not paired.
    let t = Instant::now();
    let e = client.infer_image(&m, &png(16, 9)).await.unwrap_err();
    assert!(
        matches!(e.code(), Some(Code::Unavailable | Code::Aborted)),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    // ...and its readiness says so, while it stays alive.
    d.wait_health(1, "mpcvit.v1.Inference", false).await;
    assert!(d.healthy(1, ""));

    // Party 1 comes back: party 0 pairs again and serves.
    p1 = d.party(1, &[]);
    let m = ready(&client).await;
    check_correct(&client, &m, 10..12).await;
    d.wait_health(1, "mpcvit.v1.Inference", true).await;
    drop(p1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dealer_death_drains_the_pool_then_fails_clearly() {
    let d = Deployment::new("dealer");
    let dealer = d.dealer();
    let _p1 = d.party(1, &["--pool", "2"]);
    let _p0 = d.party(0, &["--pool", "2"]);
    let client = d.client().await;
    ready(&client).await;
    // Wait until both pools are full.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Both parties hold at least two batches.
        let m = client.model(Some("small")).await.unwrap();
        if m.info.pool_available >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "pools never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(dealer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = client.model(Some("small")).await.unwrap();
    check_correct(&client, &m, 20..22).await;
    let t = Instant::now();
    let e = client.infer_image(&m, &png(16, 23)).await.unwrap_err();
    assert_eq!(e.code(), Some(Code::Unavailable), "{e}");
    assert!(e.to_string().contains("dealer"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10));
}
