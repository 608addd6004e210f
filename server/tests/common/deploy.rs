//! Three processes on loopback, each given only its own directory from
//! `mpcvit-server certs --per-role` and `mpcvit-server split --per-party`
//! (as the containers are): [`Deployment`] starts them and probes their
//! health ports.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mpcvit_client::{Client, ClientAuth, RemoteModel};
use mpcvit_server::tls::{Role, TlsMaterial};

use super::{argmax, max_diff, png, small_model};

pub const SERVER: &str = env!("CARGO_BIN_EXE_mpcvit-server");
pub const DEALER: &str = env!("CARGO_BIN_EXE_mpcvit-dealer");

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nobody listens on, never handed out twice in this
/// process (the tests run in parallel).
pub fn free_port() -> u16 {
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

pub struct Deployment {
    pub dir: PathBuf,
    // dealer, party 0, party 1, party 1 peer, then the health ports of
    // dealer, party 0, party 1
    pub ports: [u16; 7],
}

pub const HEALTH: usize = 4;

impl Deployment {
    pub fn new(name: &str) -> Self {
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
    pub fn healthy(&self, i: usize, service: &str) -> bool {
        Command::new(SERVER)
            .args(["health", "--addr", &self.addr(HEALTH + i)])
            .args(["--service", service, "--timeout", "2"])
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Wait (at most 30 s) until health port `i` says `want` for `service`.
    pub async fn wait_health(&self, i: usize, service: &str, want: bool) {
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

    pub fn log(&self, name: &str) -> Stdio {
        Stdio::from(std::fs::File::create(self.dir.join(format!("{name}.log"))).unwrap())
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    pub fn dealer(&self) -> Proc {
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

    pub fn party(&self, p: usize, extra: &[&str]) -> Proc {
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
                // The tests' timeouts, unless `extra` sets its own (a flag
                // given twice is refused).
                .args(
                    [
                        ("--join-timeout", "3"),
                        ("--recv-timeout", "5"),
                        ("--pool-wait", "10"),
                    ]
                    .into_iter()
                    .filter(|(flag, _)| !extra.contains(flag))
                    .flat_map(|(flag, value)| [flag, value]),
                )
                .args(extra)
                .env("RUST_LOG", "info")
                .stderr(self.log(&format!("party{p}-{}", next_log())))
                .spawn()
                .unwrap(),
        )
    }

    pub async fn client(&self) -> Client {
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

/// A number for the next log file's name (restarted parties keep their logs).
fn next_log() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Deployment {
    /// Every log so far of the processes whose log names start with `prefix`
    /// (`party0`, `party1`, `dealer`).
    pub fn logs(&self, prefix: &str) -> String {
        let mut out = String::new();
        for e in std::fs::read_dir(&self.dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if name.starts_with(prefix) && name.ends_with(".log") {
                out += &std::fs::read_to_string(e.path()).unwrap();
            }
        }
        out
    }
}

/// Send SIGTERM to `p` (as Kubernetes and compose stop containers).
pub fn sigterm(p: &Proc) {
    let ok = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM failed");
}

/// Wait at most `within` for `p` to exit; its exit status.
pub fn exits_within(p: &mut Proc, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "process {} still running {within:?} after SIGTERM",
            p.0.id()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(c: &mut Command) {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The `small` model once both parties have it ready (at most 60 s).
pub async fn ready(client: &Client) -> RemoteModel {
    client
        .wait_ready("small", Duration::from_secs(60))
        .await
        .unwrap()
}

/// One inference per seed, each checked against the plaintext model
/// (top-1, and logits within 0.05).
pub async fn check_correct(client: &Client, m: &RemoteModel, seeds: std::ops::Range<u64>) {
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

/// Resident memory of `p` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(p: &Proc) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", p.0.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {}", p.0.id()))
}
