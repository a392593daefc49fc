//! The live agent's user-side pipeline (features, verdicts, metrics) with millions of distinct
//! responder hosts: its heap must stop growing once the feature windows are full, however many
//! hosts come.
//!
//! Run: `cargo bench -p sensor --bench pipeline_memory` (part of `cargo xtask bench`). One
//! pipeline takes two million connections of the `pipeline` bench's mix, each to a host of its
//! own, 2 us apart, made and handed over chunk by chunk as a capture loop would (a workload
//! built up front would be most of the heap). A counting global allocator gives the bytes the
//! pipeline holds after the first million and after the second (the events the workload
//! still holds back are left out); their ratio is the figure (1.00 = bounded). The resident set
//! is printed beside them: it also keeps pages the allocator freed but did not hand back, so it
//! overstates what the pipeline holds and is not the measure. Figures also go to
//! `target/bench-pipeline-memory.json`.

mod workload;

use std::{hint::black_box, path::Path, sync::Arc};

use rand::{SeedableRng, rngs::StdRng};
use sensor::{detect::Pipeline, export::Metrics, features::FeatureConfig, flows::ConnectionRecord};
use workload::{EventStream, NoKernel, STREAM_CHUNK, agent_batch, model, record, status_kb};

const HOSTS_PER_STEP: usize = 1_000_000;

fn main() {
    // `cargo bench` passes `--bench`; a filter naming another bench skips this one.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"pipeline_memory".contains(&a))
    {
        return;
    }
    let model = model();
    let metrics = Metrics::new(Arc::new(NoKernel), 1 << 18)
        .expect("fixed metric names and buckets are valid");
    let rss_start_kb = status_kb("VmRSS:");
    let heap_start = heap::live_bytes();
    let mut p = Pipeline::new(Arc::clone(&model), FeatureConfig::default())
        .expect("the default feature config is valid");
    let mut stream = EventStream::default();
    let mut rng = StdRng::seed_from_u64(10);
    let (mut rss_kb, mut heap_bytes) = (Vec::new(), Vec::new());
    for step in 0..2usize {
        for chunk in 0..HOSTS_PER_STEP / STREAM_CHUNK {
            let first = step * HOSTS_PER_STEP + chunk * STREAM_CHUNK;
            let recs: Vec<ConnectionRecord> = (first..first + STREAM_CHUNK)
                .map(|i| record(i, true, &mut rng))
                .collect();
            for batch in stream.push(&recs) {
                black_box(agent_batch(&mut p, &metrics, &batch));
            }
        }
        rss_kb.push(status_kb("VmRSS:"));
        let held_back = stream.heap_bytes();
        heap_bytes.push(
            heap::live_bytes()
                .saturating_sub(heap_start)
                .saturating_sub(held_back),
        );
    }
    let windows = p.engine().stats();
    let ratio = heap_bytes[1] as f64 / heap_bytes[0].max(1) as f64;
    let summary = serde_json::json!({
        "heap_bytes_after_1m_distinct_hosts": heap_bytes[0],
        "heap_bytes_after_2m_distinct_hosts": heap_bytes[1],
        "heap_ratio_2m_over_1m_distinct_hosts": ratio,
        "peak_heap_bytes": heap::peak_bytes(),
        "feature_window_heap_bytes": windows.heap_bytes,
        "feature_window_connections": windows.time_window_connections,
        "rss_kb_at_start": rss_start_kb,
        "rss_kb_after_1m_distinct_hosts": rss_kb[0],
        "rss_kb_after_2m_distinct_hosts": rss_kb[1],
        "peak_rss_kb": status_kb("VmHWM:"),
    });
    println!(
        "pipeline memory: heap {} MB after 1,000,000 distinct hosts, {} MB after 2,000,000 ({ratio:.2}x; feature windows {} MB of it, capped); resident set {} MB at start, {} MB, {} MB",
        heap_bytes[0] >> 20,
        heap_bytes[1] >> 20,
        windows.heap_bytes >> 20,
        rss_start_kb / 1024,
        rss_kb[0] / 1024,
        rss_kb[1] / 1024,
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-pipeline-memory.json");
    if let Err(e) = std::fs::write(&out, summary.to_string()) {
        eprintln!("cannot write {}: {e}", out.display());
    }
}

/// A global allocator that counts the bytes allocated and not yet freed, so the memory part
/// reports the heap the pipeline holds rather than the resident set, which keeps pages the
/// allocator has freed but not returned.
mod heap {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        sync::atomic::{AtomicUsize, Ordering::Relaxed},
    };

    static LIVE: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged; the counters only
    // observe the sizes.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            // SAFETY: the caller's contract for `alloc`, passed on.
            let p = unsafe { System.alloc(l) };
            if !p.is_null() {
                let now = LIVE.fetch_add(l.size(), Relaxed) + l.size();
                PEAK.fetch_max(now, Relaxed);
            }
            p
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: `p` came from `alloc`/`realloc` above with layout `l`.
            unsafe { System.dealloc(p, l) };
            LIVE.fetch_sub(l.size(), Relaxed);
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: the caller's contract for `realloc`, passed on.
            let q = unsafe { System.realloc(p, l, new_size) };
            if !q.is_null() {
                LIVE.fetch_sub(l.size(), Relaxed);
                let now = LIVE.fetch_add(new_size, Relaxed) + new_size;
                PEAK.fetch_max(now, Relaxed);
            }
            q
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    /// Bytes allocated and not freed.
    pub fn live_bytes() -> usize {
        LIVE.load(Relaxed)
    }

    /// The most [`live_bytes`] ever was.
    pub fn peak_bytes() -> usize {
        PEAK.load(Relaxed)
    }
}
