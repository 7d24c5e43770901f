//! The SFU's send path: the datagrams one turn of the engine produces (a frame's packets
//! for each of a stream's viewers and relay legs, say) leave in few syscalls. On Linux:
//! - consecutive datagrams to one destination, all of one size but the last, are one
//!   message with UDP GSO (`UDP_SEGMENT`): the kernel cuts it into datagrams, so a video
//!   frame's packets to one viewer cost one trip through the UDP stack;
//! - messages leave by `sendmmsg`, up to [`BATCH`] per call (those of one segment size
//!   share a call, since a call's control message is the same for all).
//!
//! Where the kernel or the device refuses GSO, the outbox says so once and sends each
//! datagram on its own from then on; elsewhere than Linux, one `sendto` each. The datagrams
//! are the engine's own buffers, moved here and handed to the kernel as they are, never
//! copied.

use std::net::SocketAddr;
use std::ops::Range;

/// Messages per `sendmmsg` call (Linux's UIO_MAXIOV is 1024; 64 already makes the syscall
/// cost per datagram small and keeps one call's header array on a few pages).
pub const BATCH: usize = 64;
/// Linux's UDP_MAX_SEGMENTS, and what one UDP message may carry in all.
const MAX_SEGMENTS: usize = 64;
const MAX_GSO_BYTES: usize = 65_000;

pub struct Outbox {
    queue: Vec<(SocketAddr, Vec<u8>)>,
    /// Messages per call, at most [`BATCH`].
    batch: usize,
    /// Whether to send with GSO: asked for, and not refused by the kernel yet.
    gso: bool,
    /// Datagrams and syscalls since the start, for the benchmark.
    pub sent: u64,
    pub calls: u64,
}

impl Default for Outbox {
    fn default() -> Self {
        Self::new(BATCH, true)
    }
}

/// Datagrams of the queue that leave as one message.
struct Message {
    destination: SocketAddr,
    datagrams: Range<usize>,
    /// The segment size when there are several.
    segment: Option<u16>,
}

impl Outbox {
    pub fn new(batch: usize, gso: bool) -> Self {
        Self {
            queue: Vec::new(),
            batch: batch.clamp(1, BATCH),
            gso: gso && cfg!(target_os = "linux"),
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
        let mut messages = group(&self.queue, 0, self.gso);
        let mut next = 0;
        while next < messages.len() {
            let segment = messages[next].segment;
            let end = (next..messages.len())
                .take(self.batch)
                .take_while(|m| messages[*m].segment == segment)
                .last()
                .map_or(next + 1, |last| last + 1);
            self.calls += 1;
            match send_messages(socket, &self.queue, &messages[next..end], segment) {
                Ok(0) | Err(SendError::WouldBlock) => break,
                Ok(sent) => {
                    self.sent += messages[next..next + sent]
                        .iter()
                        .map(|m| m.datagrams.len() as u64)
                        .sum::<u64>();
                    next += sent;
                }
                Err(SendError::NoGso) => {
                    tracing::warn!(
                        "UDP GSO refused by the kernel or the device: the built-in SFU sends \
                         each datagram on its own"
                    );
                    self.gso = false;
                    let from = messages[next].datagrams.start;
                    messages = group(&self.queue, from, false);
                    next = 0;
                }
                // One destination refused (unreachable, say): skip it, send the rest.
                Err(SendError::Other) => next += 1,
            }
        }
        self.queue.clear();
    }
}

/// Groups the queue (from `from` on) into messages: with `gso`, runs to one destination
/// whose datagrams all have the first one's size but the last, which may be shorter.
fn group(queue: &[(SocketAddr, Vec<u8>)], from: usize, gso: bool) -> Vec<Message> {
    let mut messages = Vec::new();
    let mut start = from;
    while start < queue.len() {
        let (destination, size) = (queue[start].0, queue[start].1.len());
        let mut end = start + 1;
        if gso && size > 0 {
            let most = (MAX_GSO_BYTES / size).clamp(1, MAX_SEGMENTS);
            while end < queue.len()
                && end - start < most
                && queue[end].0 == destination
                && queue[end].1.len() <= size
                && queue[end - 1].1.len() == size
            {
                end += 1;
            }
        }
        messages.push(Message {
            destination,
            datagrams: start..end,
            segment: (end - start > 1).then(|| u16::try_from(size).unwrap_or(u16::MAX)),
        });
        start = end;
    }
    messages
}

enum SendError {
    WouldBlock,
    /// The kernel or the device does not segment UDP.
    NoGso,
    Other,
}

#[cfg(target_os = "linux")]
fn send_messages(
    socket: &tokio::net::UdpSocket,
    queue: &[(SocketAddr, Vec<u8>)],
    messages: &[Message],
    segment: Option<u16>,
) -> Result<usize, SendError> {
    use nix::errno::Errno;
    use nix::sys::socket::{sendmmsg, ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage};
    use std::io::IoSlice;
    use std::os::fd::AsRawFd;

    let slices: Vec<Vec<IoSlice<'_>>> = messages
        .iter()
        .map(|m| {
            queue[m.datagrams.clone()]
                .iter()
                .map(|(_, d)| IoSlice::new(d))
                .collect()
        })
        .collect();
    let addresses: Vec<Option<SockaddrStorage>> = messages
        .iter()
        .map(|m| Some(SockaddrStorage::from(m.destination)))
        .collect();
    let result = match &segment {
        Some(size) => {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(
                messages.len(),
                Some(nix::cmsg_space!(u16)),
            );
            let control = [ControlMessage::UdpGsoSegments(size)];
            sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                &addresses,
                control,
                MsgFlags::MSG_DONTWAIT,
            )
            .map(|results| results.count())
        }
        None => {
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(messages.len(), None);
            let no_control: [ControlMessage<'_>; 0] = [];
            sendmmsg(
                socket.as_raw_fd(),
                &mut headers,
                &slices,
                &addresses,
                no_control,
                MsgFlags::MSG_DONTWAIT,
            )
            .map(|results| results.count())
        }
    };
    match result {
        Ok(sent) => Ok(sent),
        Err(Errno::EAGAIN) => Err(SendError::WouldBlock),
        // No GSO in this kernel (EINVAL, ENOPROTOOPT) or on this device (EIO).
        Err(Errno::EIO | Errno::EINVAL | Errno::ENOPROTOOPT | Errno::EOPNOTSUPP)
            if segment.is_some() =>
        {
            Err(SendError::NoGso)
        }
        Err(_) => Err(SendError::Other),
    }
}

#[cfg(not(target_os = "linux"))]
fn send_messages(
    socket: &tokio::net::UdpSocket,
    queue: &[(SocketAddr, Vec<u8>)],
    messages: &[Message],
    _segment: Option<u16>,
) -> Result<usize, SendError> {
    // Without GSO every message is one datagram.
    for (sent, message) in messages.iter().enumerate() {
        let (destination, datagram) = &queue[message.datagrams.start];
        match socket.try_send_to(datagram, *destination) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && sent == 0 => {
                return Err(SendError::WouldBlock)
            }
            Err(_) if sent == 0 => return Err(SendError::Other),
            Err(_) => return Ok(sent),
        }
    }
    Ok(messages.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(sizes: &[(u8, usize)]) -> Vec<(SocketAddr, Vec<u8>)> {
        sizes
            .iter()
            .map(|(to, size)| (SocketAddr::from(([127, 0, 0, *to], 9)), vec![0; *size]))
            .collect()
    }

    fn shapes(messages: &[Message]) -> Vec<(usize, Option<u16>)> {
        messages
            .iter()
            .map(|m| (m.datagrams.len(), m.segment))
            .collect()
    }

    /// A frame's packets to one viewer (equal sizes, a shorter last one) are one message;
    /// a change of destination, a longer datagram or one after a short one starts another.
    #[test]
    fn runs_to_one_destination_become_one_message() {
        let q = queue(&[
            (1, 1200),
            (1, 1200),
            (1, 700),
            (2, 1200),
            (2, 1200),
            (2, 100),
        ]);
        assert_eq!(
            shapes(&group(&q, 0, true)),
            [(3, Some(1200)), (3, Some(1200))]
        );
        let q = queue(&[(1, 700), (1, 1200), (1, 100), (1, 100), (3, 50)]);
        assert_eq!(
            shapes(&group(&q, 0, true)),
            [(1, None), (2, Some(1200)), (1, None), (1, None)]
        );
        // Without GSO, or from a later position, one datagram each.
        assert_eq!(group(&q, 0, false).len(), 5);
        assert_eq!(group(&q, 3, false).len(), 2);
        // At most 64 segments, and at most 65,000 bytes, in one message.
        let q = queue(&[(1, 100); 100]);
        assert_eq!(
            shapes(&group(&q, 0, true)),
            [(64, Some(100)), (36, Some(100))]
        );
        let q = queue(&[(1, 1200); 60]);
        assert_eq!(
            shapes(&group(&q, 0, true)),
            [(54, Some(1200)), (6, Some(1200))]
        );
    }

    /// A GSO message arrives as the datagrams it was made of, in order, from one syscall.
    #[tokio::test]
    async fn a_segmented_message_arrives_as_its_datagrams() {
        let sender = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let receiver = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let to = receiver.local_addr().expect("addr");
        let mut outbox = Outbox::default();
        let sizes = [1000usize, 1000, 1000, 1000, 300];
        for (n, size) in sizes.iter().enumerate() {
            outbox.push(to, vec![n as u8; *size]);
        }
        outbox.flush(&sender);
        assert_eq!(outbox.sent, 5);
        assert_eq!(outbox.calls, 1, "one sendmmsg for the frame");
        let mut buffer = [0u8; 2048];
        for (n, size) in sizes.iter().enumerate() {
            let (length, _) = receiver.recv_from(&mut buffer).await.expect("datagram");
            assert_eq!((length, buffer[0]), (*size, n as u8));
        }
    }

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
