//! Three processes on loopback, each given only its own directory from
//! `mpcvit-server certs --per-role` and `mpcvit-server split --per-party`
//! (as the containers are): [`Deployment`] starts them (with
//! [`crate::procs::launch`], each logging to a file of its own) and probes
//! their health ports.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use mpcvit_client::{Client, ClientAuth, RemoteModel};
use mpcvit_server::tls::{Role, TlsMaterial};

use crate::procs::{Proc, free_port, launch};
use crate::{argmax, max_diff, png, small_model};

/// A binary of this package (`e2e-server` is `mpcvit-server`, `e2e-dealer`
/// is `mpcvit-dealer`): cargo puts it in the directory above the test
/// executable's (`target/<profile>/deps/`), and builds it before any of
/// this package's tests runs.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("a test executable lies in target/<profile>/deps/");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: run the suites with cargo test (which builds it)",
        bin.display()
    );
    bin
}

/// The `mpcvit-server` binary (party, `dealer`, `split`, `certs`, `health`).
pub fn server_bin() -> PathBuf {
    binary("e2e-server")
}

/// The `mpcvit-dealer` binary.
pub fn dealer_bin() -> PathBuf {
    binary("e2e-dealer")
}

/// A deployment's working directory (certificates, shares, logs) and its
/// loopback ports.
#[derive(Debug)]
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
            run(Command::new(server_bin())
                .args(["certs", "--per-role", "--keep-existing", "--out"])
                .arg(dir.join("certs")))
        };
        let split = || {
            run(Command::new(server_bin())
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
                    format!("share-{p}.safetensors"),
                    "split.json".to_string()
                ]
            );
        }
        Deployment {
            dir,
            ports: std::array::from_fn(|_| free_port().expect("a free port")),
        }
    }

    /// `mpcvit-server health` against health port `i` (0 dealer, 1 and 2
    /// the parties): whether `service` is SERVING.
    pub fn healthy(&self, i: usize, service: &str) -> bool {
        Command::new(server_bin())
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

    /// Where the process called `name` logs.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.ports[i])
    }

    /// Party 1's peer listener (party 0's `--peer` unless a test routes the
    /// link elsewhere, through a relay).
    pub fn peer_addr(&self) -> String {
        self.addr(3)
    }

    pub fn dealer(&self) -> Proc {
        let mut cmd = Command::new(dealer_bin());
        cmd.args(["--listen", &self.addr(0), "--certs"])
            .arg(self.dir.join("certs/dealer"))
            .args(["--health-listen", &self.addr(HEALTH)]);
        launch(cmd, &self.log_path(&format!("dealer-{}", next_log()))).expect("start the dealer")
    }

    /// The command line of party `p`: its own directories, this
    /// deployment's ports, the tests' timeouts; `extra` adds flags or
    /// replaces these defaults (a flag given twice is refused).
    pub fn party_command(&self, p: usize, extra: &[&str]) -> Command {
        let (peer_listen, peer) = (self.peer_addr(), self.peer_addr());
        let dealer = self.addr(0);
        let defaults = [
            ("--peer-listen", peer_listen.as_str()),
            ("--peer", peer.as_str()),
            ("--dealer", dealer.as_str()),
            ("--join-timeout", "3"),
            ("--recv-timeout", "5"),
            ("--pool-wait", "10"),
        ];
        let mut cmd = Command::new(server_bin());
        cmd.args(["--party", &p.to_string(), "--model"])
            .arg(self.dir.join(format!("model/party{p}")))
            .arg("--certs")
            .arg(self.dir.join(format!("certs/party{p}")))
            .args(["--listen", &self.addr(1 + p)])
            .args(["--health-listen", &self.addr(HEALTH + 1 + p)])
            .args(
                defaults
                    .into_iter()
                    .filter(|(flag, _)| !extra.contains(flag))
                    .flat_map(|(flag, value)| [flag, value]),
            )
            .args(extra)
            .env("RUST_LOG", "info");
        cmd
    }

    /// Start party `p` (see [`Deployment::party_command`]).
    pub fn party(&self, p: usize, extra: &[&str]) -> Proc {
        self.launch_party(p, self.party_command(p, extra))
    }

    /// Start party `p` with `cmd` (a [`Deployment::party_command`],
    /// perhaps wrapped), logging to a file of its own.
    pub fn launch_party(&self, p: usize, cmd: Command) -> Proc {
        let log = self.log_path(&format!("party{p}-{}", next_log()));
        launch(cmd, &log).unwrap_or_else(|e| panic!("start party {p}: {e}"))
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

impl Deployment {
    /// How long until a fresh client gets a right answer (the plaintext
    /// top-1, logits within 0.05) from the `small` model, trying again every
    /// 100 ms while the parties pair or recover; fails the test if none
    /// comes within `within`.
    pub async fn serves_within(&self, within: Duration) -> Duration {
        let t = Instant::now();
        let model = small_model();
        let bytes = png(16, 4242);
        let plain = model
            .forward(&model::preprocess(model.config(), &bytes).unwrap())
            .unwrap();
        let mut last = String::from("no attempt");
        while t.elapsed() < within {
            let client = self.client().await;
            let left = within.saturating_sub(t.elapsed());
            match client.wait_ready("small", left).await {
                Ok(m) => match client.infer_image(&m, &bytes).await {
                    Ok(r) => {
                        assert!(max_diff(&plain, &r.logits) < 0.05, "a wrong answer");
                        assert_eq!(argmax(&plain), argmax(&r.logits), "a wrong answer");
                        return t.elapsed();
                    }
                    Err(e) => last = e.to_string(),
                },
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no right answer within {within:?}; the last error: {last}")
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

/// Wait at most `within` for `p` to exit (after a SIGTERM); its exit status.
pub fn exits_within(p: &mut Proc, within: Duration) -> ExitStatus {
    p.wait_timeout(within)
        .expect("wait for the process")
        .unwrap_or_else(|| panic!("process {} still running {within:?} after SIGTERM", p.id()))
}

/// `cmd` run under a limit of `nofile` open file descriptors (`ulimit -n`
/// in a shell that then execs it).
pub fn with_fd_limit(cmd: &Command, nofile: u64) -> Command {
    let mut limited = Command::new("bash");
    limited
        .arg("-c")
        .arg(format!("ulimit -n {nofile} && exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => limited.env(k, v),
            None => limited.env_remove(k),
        };
    }
    limited
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

/// Resident memory of `p` in KiB (`VmRSS`).
pub fn rss_kib(p: &Proc) -> u64 {
    crate::procs::rss_kib(p.id()).unwrap_or_else(|e| panic!("RSS of process {}: {e}", p.id()))
}
