//! The log writer: one thread that owns every service's log file.
//!
//! Disk writes never run on the runtime's threads, so a slow or stalled
//! disk cannot delay supervision; the queue to this thread is bounded, so
//! a fast service is slowed (back-pressure) rather than buffered without
//! limit. Each queued batch is at most [`BATCH_BYTES`] plus one line.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::Counters;
use super::file::LogFile;

/// Batches are cut at about this size by the pump.
pub const BATCH_BYTES: usize = 64 * 1024;
/// Batches in flight; with [`BATCH_BYTES`] this bounds the queue's memory.
const QUEUE: usize = 64;

/// Formatted lines of one service, ready to append.
pub struct Batch {
    pub service: Arc<str>,
    pub bytes: Vec<u8>,
    pub lines: u64,
    pub counters: Arc<Counters>,
}

enum Msg {
    Batch(Batch),
    Limits {
        service: Arc<str>,
        max_size: u64,
        max_files: u32,
    },
    Close(Arc<str>),
    Flush(oneshot::Sender<()>),
}

/// Totals across services, for the orchestrator's metrics.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub bytes: AtomicU64,
    pub dropped_lines: AtomicU64,
}

#[derive(Clone)]
pub struct LogWriter {
    tx: mpsc::Sender<Msg>,
    pub stats: Arc<WriterStats>,
}

struct Limits {
    max_size: u64,
    max_files: u32,
}

impl LogWriter {
    /// Starts the writer thread; files go to `dir/NAME.log`.
    pub fn start(dir: PathBuf, max_size: u64, max_files: u32) -> std::io::Result<LogWriter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stats = Arc::new(WriterStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("bh-logwriter".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                run(
                    rx,
                    dir,
                    Limits {
                        max_size,
                        max_files,
                    },
                    thread_stats,
                )
            })?;
        Ok(LogWriter { tx, stats })
    }

    /// Queues a batch, waiting while the queue is full.
    pub async fn send(&self, batch: Batch) {
        if let Err(mpsc::error::SendError(Msg::Batch(b))) = self.tx.send(Msg::Batch(batch)).await {
            b.counters.dropped.fetch_add(b.lines, Ordering::Relaxed);
        }
    }

    pub async fn set_limits(&self, service: &str, max_size: u64, max_files: u32) {
        let _ = self
            .tx
            .send(Msg::Limits {
                service: service.into(),
                max_size,
                max_files,
            })
            .await;
    }

    /// Closes a service's file (the service was removed).
    pub async fn close(&self, service: &str) {
        let _ = self.tx.send(Msg::Close(service.into())).await;
    }

    /// Returns once everything queued before it is written.
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

fn run(mut rx: mpsc::Receiver<Msg>, dir: PathBuf, defaults: Limits, stats: Arc<WriterStats>) {
    let mut files: HashMap<Arc<str>, LogFile> = HashMap::new();
    let mut limits: HashMap<Arc<str>, Limits> = HashMap::new();
    // Per service: when we last warned, and lines dropped since.
    let mut failing: HashMap<Arc<str>, (Instant, u64)> = HashMap::new();
    while let Some(msg) = rx.blocking_recv() {
        match msg {
            Msg::Batch(batch) => {
                let result = match files.get_mut(&batch.service) {
                    Some(f) => f.write_lines(&batch.bytes),
                    None => {
                        let l = limits.get(&batch.service).unwrap_or(&defaults);
                        let path = dir.join(format!("{}.log", batch.service));
                        LogFile::open(path, l.max_size, l.max_files).and_then(|mut f| {
                            let r = f.write_lines(&batch.bytes);
                            files.insert(batch.service.clone(), f);
                            r
                        })
                    }
                };
                match result {
                    Ok(()) => {
                        stats.batches.fetch_add(1, Ordering::Relaxed);
                        stats
                            .bytes
                            .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
                        if let Some((_, lost)) = failing.remove(&batch.service) {
                            tracing::warn!(
                                service = &*batch.service,
                                "log file is writable again; {lost} lines could not be written to it"
                            );
                        }
                    }
                    Err(e) => {
                        batch
                            .counters
                            .dropped
                            .fetch_add(batch.lines, Ordering::Relaxed);
                        stats
                            .dropped_lines
                            .fetch_add(batch.lines, Ordering::Relaxed);
                        let now = Instant::now();
                        let entry = failing
                            .entry(batch.service.clone())
                            .or_insert((now - Duration::from_secs(3600), 0));
                        entry.1 += batch.lines;
                        if now.duration_since(entry.0) >= Duration::from_secs(10) {
                            entry.0 = now;
                            tracing::error!(
                                service = &*batch.service,
                                "cannot write to {}: {e}; {} lines dropped from the file so far \
                                 (they are still in memory and in `logs -f`); free space or fix permissions",
                                dir.join(format!("{}.log", batch.service)).display(),
                                entry.1
                            );
                        }
                        // Reopen on the next batch (the file may be gone).
                        files.remove(&batch.service);
                    }
                }
            }
            Msg::Limits {
                service,
                max_size,
                max_files,
            } => {
                if let Some(f) = files.get_mut(&service) {
                    f.set_limits(max_size, max_files);
                }
                limits.insert(
                    service,
                    Limits {
                        max_size,
                        max_files,
                    },
                );
            }
            Msg::Close(service) => {
                files.remove(&service);
                limits.remove(&service);
            }
            Msg::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}
