//! Load for the suites: clients, each on its own connection, sending
//! inferences one after another until told to stop, every answer checked
//! against the plaintext model and every failure kept with its status and
//! the time it took. The soak asserts that nothing failed; the fault tests
//! that every request ended, right or with a clear status, within a bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mpcvit_client::{ClientError, RemoteModel};
use tokio::task::JoinSet;
use tonic::Code;

use crate::deploy::Deployment;
use crate::{argmax, max_diff, png, small_model};

/// Images with the plaintext model's logits for each.
pub type Images = Arc<Vec<(Vec<u8>, Vec<f32>)>>;

/// `n` images of 16 to 32 pixels (the model resizes them), from seed
/// `first` on, with their plaintext logits.
pub fn reference_images(n: u64, first: u64) -> Images {
    let model = small_model();
    Arc::new(
        (0..n)
            .map(|i| {
                let bytes = png(16 + 4 * (i as u32 % 5), first + i);
                let plain = model
                    .forward(&model::preprocess(model.config(), &bytes).unwrap())
                    .unwrap();
                (bytes, plain)
            })
            .collect(),
    )
}

/// One request of a [`Load`].
#[derive(Debug)]
pub struct Outcome {
    /// Which client sent it, and its number at that client.
    pub client: u64,
    pub n: u64,
    /// When it was sent, and how long its answer (or error) took.
    pub sent: Instant,
    pub took: Duration,
    /// `Ok` is an answer with the plaintext top-1 and logits within 0.05
    /// (a wrong answer fails the test at once).
    pub result: Result<(), ClientError>,
}

/// Clients sending inferences until [`Load::stop`].
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Vec<Outcome>>,
}

impl Load {
    /// Start `clients` clients against `d`'s parties, cycling through
    /// `images` (each client from another one). A request without an answer
    /// or an error within `answer_within` fails the test (no hang).
    pub async fn start(
        d: &Deployment,
        m: &RemoteModel,
        images: &Images,
        clients: u64,
        answer_within: Duration,
    ) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        let count = images.len() as u64;
        for c in 0..clients {
            let client = d.client().await;
            let (m, images, stop) = (m.clone(), images.clone(), stop.clone());
            tasks.spawn(async move {
                let mut out = Vec::new();
                let mut i = c * count / clients;
                while !stop.load(Ordering::Relaxed) {
                    let (bytes, plain) = &images[(i % count) as usize];
                    let n = out.len() as u64;
                    let sent = Instant::now();
                    let r = tokio::time::timeout(answer_within, client.infer_image(&m, bytes))
                        .await
                        .unwrap_or_else(|_| {
                            panic!("client {c}, request {n}: no answer within {answer_within:?}")
                        });
                    let result = r.map(|r| {
                        let diff = max_diff(plain, &r.logits);
                        assert!(
                            diff < 0.05,
                            "client {c}, answer {n}: logits differ by {diff}"
                        );
                        assert_eq!(argmax(plain), argmax(&r.logits), "client {c}, answer {n}");
                    });
                    let failed = result.is_err();
                    out.push(Outcome {
                        client: c,
                        n,
                        sent,
                        took: sent.elapsed(),
                        result,
                    });
                    i += 1;
                    if failed {
                        // Do not hammer a party that is down.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                out
            });
        }
        Load { stop, tasks }
    }

    /// Send no new request (those in flight go on); [`Load::stop`]
    /// collects them.
    pub fn stop_sending(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Stop sending (the requests in flight finish) and collect every
    /// client's outcomes, in the order each client sent them.
    pub async fn stop(mut self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(j) = self.tasks.join_next().await {
            all.extend(j.expect("a load client panicked"));
        }
        all.sort_by_key(|o| (o.client, o.n));
        all
    }
}

/// A summary of outcomes: answers, failures, the slowest request.
#[derive(Debug, Clone, Copy)]
pub struct Tally {
    pub answers: u64,
    pub failures: u64,
    pub slowest: Duration,
}

/// Count `outcomes`, asserting that each failure has one of `codes` (a
/// clear status rather than, say, UNKNOWN or a transport's INTERNAL) and a
/// message; prints each distinct failure once with its count and slowest
/// time (`what` names the fault).
pub fn tally(outcomes: &[Outcome], codes: &[Code], what: &str) -> Tally {
    let mut t = Tally {
        answers: 0,
        failures: 0,
        slowest: Duration::ZERO,
    };
    // Distinct messages, in order of first appearance: count, slowest.
    let mut seen: Vec<(String, u64, Duration)> = Vec::new();
    for o in outcomes {
        t.slowest = t.slowest.max(o.took);
        match &o.result {
            Ok(()) => t.answers += 1,
            Err(e) => {
                t.failures += 1;
                assert!(
                    e.code().is_some_and(|c| codes.contains(&c)),
                    "{what}: client {} request {}: expected one of {codes:?}: {e}",
                    o.client,
                    o.n
                );
                let msg = e.to_string();
                assert!(!msg.is_empty());
                match seen.iter_mut().find(|(m, ..)| *m == msg) {
                    Some((_, n, slowest)) => {
                        *n += 1;
                        *slowest = (*slowest).max(o.took);
                    }
                    None => seen.push((msg, 1, o.took)),
                }
            }
        }
    }
    for (msg, n, slowest) in seen {
        println!(
            "{what}: {n} × (slowest {:.0} ms) {msg}",
            slowest.as_secs_f64() * 1e3
        );
    }
    t
}
