//! Logs at every level (TRACE for every crate, tonic, h2 and rustls
//! included) never contain a share: run an inference with a capturing
//! subscriber and search the output for the shares' words. The status
//! messages of failing requests (shares of the wrong length, holding the
//! real share's words) are searched the same way.

use std::io::Write;
use std::sync::{Arc, Mutex};

use mpc_core::{FixedPoint, Prg, Seed, Share};
use mpcvit_e2e::{cluster, small_model, test_options};

#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn patterns(s: &Share) -> Vec<String> {
    let mut out = Vec::new();
    for w in s.as_slice().iter().take(64) {
        out.push(w.to_string());
        out.push(format!("{w:016x}"));
        let b = w.to_le_bytes();
        out.push(format!(
            "{}, {}, {}, {}, {}, {}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        ));
        out.push(b.iter().map(|x| format!("{x:02x}")).collect::<String>());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_share_in_logs_at_trace_level() {
    let buf = Buf::default();
    let w = buf.clone();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_writer(move || w.clone())
        .init();
    let model = small_model();
    let (c, client, m) = cluster(&model, test_options()).await;
    let fp = FixedPoint::new(m.info.frac_bits);
    let input: Vec<f32> = (0..m.info.input_len)
        .map(|i| (i % 7) as f32 * 0.3 - 1.0)
        .collect();
    let [s0, s1] = model::split_input(&input, fp, &mut Prg::new(&Seed::random()));
    let sid = Seed::random().to_bytes()[..16].to_vec();
    let r = client
        .infer_shares(&m, [s0.clone(), s1.clone()], sid)
        .await
        .unwrap();
    // Failing sessions log too, and their errors reach the client: each
    // party in turn gets a share one element short (its first words are
    // the real share's) while the other gets the whole one.
    let short = |s: &Share| Share::new(s.as_slice()[..s.len() - 1].to_vec());
    let mut errors = Vec::new();
    for (i, shares) in [[short(&s0), s1.clone()], [s0.clone(), short(&s1)]]
        .into_iter()
        .enumerate()
    {
        let e = client
            .infer_shares(&m, shares, vec![7 + i as u8; 16])
            .await
            .unwrap_err();
        errors.push(e.to_string());
    }
    c.shutdown().await;
    assert!(
        errors.iter().all(|e| e.contains("ring elements")),
        "the length errors came back: {errors:?}"
    );
    let logs = String::from_utf8_lossy(&buf.0.lock().unwrap()).to_string();
    assert!(logs.contains("session done"), "the capture works");
    assert_eq!(r.logits.len(), 10);
    for s in [&s0, &s1] {
        for p in patterns(s).into_iter().filter(|p| p.len() >= 12) {
            assert!(!logs.contains(&p), "a share word appears in the logs: {p}");
            for e in &errors {
                assert!(
                    !e.contains(&p),
                    "a share word appears in an error: {p}: {e}"
                );
            }
        }
    }
}
