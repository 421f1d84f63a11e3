//! Protocol stage: HTTP/1.1 messages, SSE and NDJSON framing, and the per-connection
//! exchange state machine. Bytes in, frames out; no I/O.

pub mod encoding;
pub mod exchange;
pub mod http;
pub mod json;
pub mod ndjson;
pub mod sse;

use bytes::BytesMut;

/// Lets go of the allocation behind bytes already taken from `buf` (`consumed`): frames
/// split from a `BytesMut` keep its whole allocation alive, while its capacity counts only
/// what follows them, so a buffer that is empty is replaced and one holding a remainder
/// (a head or a line in progress) is copied to an allocation of its own. What a connection
/// buffers is then what its buffers' capacities say. The copy is of the remainder only, once
/// per call that took bytes, so it costs no more than the decoding did.
pub(crate) fn compact(buf: &mut BytesMut, consumed: bool) {
    if buf.is_empty() {
        // Even at capacity 0 it may hold the allocation its frames came from.
        *buf = BytesMut::new();
    } else if consumed {
        *buf = BytesMut::from(&buf[..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_lets_go_of_the_allocation_frames_came_from() {
        // A frame split from the buffer shares its allocation until the buffer lets go.
        let mut buf = BytesMut::from(&vec![b'x'; 256 << 10][..]);
        let frame = buf.split_to(buf.len()).freeze();
        assert_eq!(buf.capacity(), 0, "the capacity no longer shows it");
        compact(&mut buf, true);
        let frame = frame
            .try_into_mut()
            .expect("the frame is the allocation's only owner");
        drop(frame);

        // A remainder (a head in progress) gets an allocation of its own.
        let mut buf = BytesMut::from(&vec![b'y'; 256 << 10][..]);
        let frame = buf.split_to((256 << 10) - 10).freeze();
        compact(&mut buf, true);
        assert_eq!(&buf[..], &[b'y'; 10][..]);
        assert!(frame.try_into_mut().is_ok());

        // Nothing taken: nothing copied.
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(b"GET / HT");
        let ptr = buf.as_ptr();
        compact(&mut buf, false);
        assert_eq!(buf.as_ptr(), ptr);
    }
}
