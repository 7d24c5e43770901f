//! Sharing the main listener's connections out between its worker threads.
//!
//! Every worker accepts from the same listening socket, and the kernel wakes whichever is
//! idle: a burst of connections (a load balancer or a load generator opening its pool) then
//! lands on the one worker that happened to be awake, and the others sit idle while it
//! saturates. Measured with `scripts/bench-proxy`: all 32 of wrk's connections on one of two
//! workers in most runs. So a worker that accepts a connection while another serves fewer
//! hands it over; connections are long-lived (keep-alive), so once shared out they stay put
//! and a hand-over costs one cross-thread wake-up per connection, never per request.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus::IntGauge;
use tokio::sync::mpsc;

use crate::metrics::IntGaugeVec;

/// A connection one worker accepted and hands to another.
pub(super) type HandedOver = (std::net::TcpStream, SocketAddr);

/// The worker a connection accepted by worker `me` should be served on: the one serving the
/// fewest connections, `me` when it is among them (no hand-over without a gain).
pub(super) fn least_loaded(loads: &[usize], me: usize) -> usize {
    let fewest = loads.iter().copied().min().unwrap_or(0);
    if loads.get(me).is_some_and(|&own| own == fewest) {
        return me;
    }
    loads.iter().position(|&l| l == fewest).unwrap_or(me)
}

/// The main listener's workers: how many connections each serves and where to hand one.
pub(super) struct Workers {
    loads: Box<[AtomicUsize]>,
    inboxes: Box<[mpsc::UnboundedSender<HandedOver>]>,
    gauges: Box<[IntGauge]>,
}

/// One worker's place among [`Workers`]: its index and the connections handed to it.
pub(super) struct WorkerSeat {
    pub(super) index: usize,
    pub(super) workers: Arc<Workers>,
    pub(super) inbox: mpsc::UnboundedReceiver<HandedOver>,
}

/// Counts one connection against its worker while it is open.
pub(super) struct Load {
    workers: Arc<Workers>,
    index: usize,
}

impl Drop for Load {
    fn drop(&mut self) {
        self.workers.release(self.index);
    }
}

impl Workers {
    /// `count` workers and their seats, in index order.
    pub(super) fn seats(count: usize, gauge: IntGaugeVec) -> Vec<WorkerSeat> {
        let (inboxes, receivers): (Vec<_>, Vec<_>) =
            (0..count).map(|_| mpsc::unbounded_channel()).unzip();
        let workers = Arc::new(Workers {
            loads: (0..count).map(|_| AtomicUsize::new(0)).collect(),
            inboxes: inboxes.into_boxed_slice(),
            gauges: (0..count)
                .map(|index| gauge.with_label_values(&[index.to_string().as_str()]))
                .collect(),
        });
        for index in 0..count {
            workers.gauge_set(index);
        }
        receivers
            .into_iter()
            .enumerate()
            .map(|(index, inbox)| WorkerSeat {
                index,
                workers: workers.clone(),
                inbox,
            })
            .collect()
    }

    fn gauge_set(&self, index: usize) {
        let load = self.loads[index].load(Ordering::Relaxed);
        self.gauges[index].set(i64::try_from(load).unwrap_or(i64::MAX));
    }

    fn reserve(&self, index: usize) {
        self.loads[index].fetch_add(1, Ordering::Relaxed);
        self.gauge_set(index);
    }

    fn release(&self, index: usize) {
        self.loads[index].fetch_sub(1, Ordering::Relaxed);
        self.gauge_set(index);
    }
}

impl WorkerSeat {
    /// Places a connection this worker accepted: `Some` to be served here, `None` when it
    /// was handed to a less busy worker (or lost in the hand-over: the client reconnects).
    /// A worker that has stopped taking connections gives it back, to be served here.
    pub(super) fn place(
        &self,
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
    ) -> Option<(tokio::net::TcpStream, Load)> {
        let loads: Vec<usize> = self
            .workers
            .loads
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .collect();
        let target = least_loaded(&loads, self.index);
        if target == self.index {
            return Some((stream, self.here()));
        }
        // Counted before it is sent, so that the rest of a burst sees the new load; the
        // receiving worker adopts the count.
        self.workers.reserve(target);
        let std = match stream.into_std() {
            Ok(std) => std,
            Err(error) => {
                self.workers.release(target);
                tracing::debug!(%error, %peer, "connection lost handing it to another worker");
                return None;
            }
        };
        match self.workers.inboxes[target].send((std, peer)) {
            Ok(()) => None,
            Err(mpsc::error::SendError((std, _))) => {
                self.workers.release(target);
                match tokio::net::TcpStream::from_std(std) {
                    Ok(stream) => Some((stream, self.here())),
                    Err(error) => {
                        tracing::debug!(%error, %peer, "connection lost taking it back");
                        None
                    }
                }
            }
        }
    }

    /// Counts a connection this worker serves.
    pub(super) fn here(&self) -> Load {
        self.workers.reserve(self.index);
        self.adopt()
    }

    /// The count of a connection another worker handed here (and counted already).
    pub(super) fn adopt(&self) -> Load {
        Load {
            workers: self.workers.clone(),
            index: self.index,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::least_loaded;

    #[test]
    fn a_connection_stays_unless_another_worker_serves_fewer() {
        assert_eq!(least_loaded(&[0, 0], 0), 0);
        assert_eq!(least_loaded(&[0, 0], 1), 1);
        assert_eq!(least_loaded(&[3, 3, 3], 2), 2);
        assert_eq!(least_loaded(&[1, 0], 0), 1);
        assert_eq!(least_loaded(&[5, 2, 2], 0), 1);
        assert_eq!(least_loaded(&[5, 4, 2], 1), 2);
        assert_eq!(least_loaded(&[7], 0), 0);
    }

    #[test]
    fn a_burst_accepted_by_one_worker_ends_evenly_shared() {
        for workers in 1..=8 {
            let mut loads = vec![0usize; workers];
            for _ in 0..100 {
                let target = least_loaded(&loads, 0);
                loads[target] += 1;
            }
            let (min, max) = (loads.iter().min(), loads.iter().max());
            assert!(
                max.zip(min).is_some_and(|(max, min)| max - min <= 1),
                "{loads:?}"
            );
        }
    }
}
