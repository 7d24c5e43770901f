//! The SFU's send path: the datagrams one turn of the engine produces (a packet for each of
//! a stream's viewers and relay legs, say) leave in few syscalls: `sendmmsg` on Linux, up to
//! [`BATCH`] datagrams to any destinations per call; one `sendto` each elsewhere. The
//! datagrams are the engine's own buffers, moved here, never copied.

use std::net::SocketAddr;

/// Datagrams per `sendmmsg` call (Linux's UIO_MAXIOV is 1024; 64 already makes the syscall
/// cost per datagram small and keeps one call's header array on a few pages).
pub const BATCH: usize = 64;

pub struct Outbox {
    queue: Vec<(SocketAddr, Vec<u8>)>,
    /// Datagrams per call, at most [`BATCH`].
    batch: usize,
    /// Datagrams and syscalls since the start, for the benchmark.
    pub sent: u64,
    pub calls: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::with_batch(BATCH)
    }
}

impl Outbox {
    pub fn with_batch(batch: usize) -> Self {
        Self {
            queue: Vec::new(),
            batch: batch.clamp(1, BATCH),
            sent: 0,
            calls: 0,
        }
    }

    pub fn push(&mut self, destination: SocketAddr, datagram: Vec<u8>) {
        self.queue.push((destination, datagram));
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends everything queued. UDP: what a full send buffer refuses is dropped, and NACK
    /// and RTX repair it, as with any loss.
    pub fn flush(&mut self, socket: &tokio::net::UdpSocket) {
        let mut start = 0;
        while start < self.queue.len() {
            let end = (start + self.batch).min(self.queue.len());
            self.calls += 1;
            match send_batch(socket, &self.queue[start..end]) {
                Ok(0) | Err(SendError::WouldBlock) => break,
                Ok(sent) => {
                    self.sent += sent as u64;
                    start += sent;
                }
                // One destination refused (unreachable, say): skip it, send the rest.
                Err(SendError::Other) => start += 1,
            }
        }
        self.queue.clear();
    }
}

enum SendError {
    WouldBlock,
    Other,
}

#[cfg(target_os = "linux")]
fn send_batch(
    socket: &tokio::net::UdpSocket,
    batch: &[(SocketAddr, Vec<u8>)],
) -> Result<usize, SendError> {
    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|(_, d)| [IoSlice::new(d)]).collect();
    let addresses: Vec<Option<SockaddrStorage>> = batch
        .iter()
        .map(|(address, _)| Some(SockaddrStorage::from(*address)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(batch.len(), None);
    let no_control: [ControlMessage<'_>; 0] = [];
    match sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &slices,
        &addresses,
        no_control,
        MsgFlags::MSG_DONTWAIT,
    ) {
        Ok(results) => Ok(results.count()),
        Err(nix::errno::Errno::EAGAIN) => Err(SendError::WouldBlock),
        Err(_) => Err(SendError::Other),
    }
}

#[cfg(not(target_os = "linux"))]
fn send_batch(
    socket: &tokio::net::UdpSocket,
    batch: &[(SocketAddr, Vec<u8>)],
) -> Result<usize, SendError> {
    for (sent, (destination, datagram)) in batch.iter().enumerate() {
        match socket.try_send_to(datagram, *destination) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && sent == 0 => {
                return Err(SendError::WouldBlock)
            }
            Err(_) if sent == 0 => return Err(SendError::Other),
            Err(_) => return Ok(sent),
        }
    }
    Ok(batch.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything queued reaches its destinations, in batches, and the queue empties.
    #[tokio::test]
    async fn a_batch_reaches_every_destination() {
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receivers: Vec<tokio::net::UdpSocket> = {
            let mut all = Vec::new();
            for _ in 0..3 {
                all.push(
                    tokio::net::UdpSocket::bind("127.0.0.1:0")
                        .await
                        .expect("bind"),
                );
            }
            all
        };
        let mut outbox = Outbox::default();
        for n in 0..150u32 {
            let to = receivers[(n % 3) as usize].local_addr().expect("addr");
            outbox.push(to, n.to_be_bytes().to_vec());
        }
        outbox.flush(&sender);
        assert!(outbox.is_empty());
        assert_eq!(outbox.sent, 150);
        assert!(
            outbox.calls <= 3,
            "{} calls for 150 datagrams",
            outbox.calls
        );
        let mut buffer = [0u8; 16];
        for (index, receiver) in receivers.iter().enumerate() {
            for k in 0..50u32 {
                let (length, _) = receiver.recv_from(&mut buffer).await.expect("datagram");
                assert_eq!(&buffer[..length], &(k * 3 + index as u32).to_be_bytes());
            }
        }
    }
}
