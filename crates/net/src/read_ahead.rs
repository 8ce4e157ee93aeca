//! Reading a socket ahead of TLS (docs/network.md, "Speed: a W-MLP round over loopback
//! against simulation").
//!
//! rustls asks its transport for at most 4 KB at a time (its deframer grows its buffer by
//! 4 KB a read), so an 800 KB model or update arriving over TLS took about 200 `recv`
//! calls, each a system call with its wake-up bookkeeping. [`ReadAhead`] sits between the
//! TCP stream and TLS on both sides of a connection and reads up to [`READ_AHEAD`] bytes
//! per call, handing them to TLS from memory. Its buffer exists only while the peer is
//! sending: it is dropped when it is empty and the socket has nothing more, so an idle
//! connection (a server holding thousands of them) keeps none. That is the difference
//! from `tokio::io::BufReader`, which holds its buffer for the connection's whole life
//! (64 MB for the server's default 1024 connections, idle or not).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the socket at once while the peer is sending.
pub(crate) const READ_AHEAD: usize = 64 * 1024;

/// A stream whose reads go through a buffer of [`READ_AHEAD`] bytes; writes go straight
/// through.
pub(crate) struct ReadAhead<T> {
    inner: T,
    buf: Option<Box<[u8]>>,
    /// `buf[start..end]` has been read from `inner` and not yet by the reader.
    start: usize,
    end: usize,
}

impl<T> ReadAhead<T> {
    pub(crate) fn new(inner: T) -> ReadAhead<T> {
        ReadAhead {
            inner,
            buf: None,
            start: 0,
            end: 0,
        }
    }

    /// Whether a read-ahead buffer is held (tests).
    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.buf.is_some()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadAhead<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.start == this.end {
            if out.remaining() >= READ_AHEAD {
                // A reader with room for as much: straight into its buffer.
                this.buf = None;
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            let buf = this
                .buf
                .get_or_insert_with(|| vec![0u8; READ_AHEAD].into_boxed_slice());
            let mut fill = ReadBuf::new(buf);
            match Pin::new(&mut this.inner).poll_read(cx, &mut fill) {
                Poll::Ready(Ok(())) => {
                    let n = fill.filled().len();
                    (this.start, this.end) = (0, n);
                    if n == 0 {
                        // End of stream: the reader sees it as such.
                        this.buf = None;
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) => {
                    this.buf = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // The peer paused: nothing buffered, so nothing kept.
                    this.buf = None;
                    return Poll::Pending;
                }
            }
        }
        let n = (this.end - this.start).min(out.remaining());
        if let Some(buf) = &this.buf {
            out.put_slice(&buf[this.start..this.start + n]);
        }
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadAhead<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    /// A source that yields `data` in the given chunk sizes, `Pending` between chunks
    /// where `pauses` says so, and counts the reads it served.
    struct Chunks {
        data: Vec<u8>,
        at: usize,
        sizes: Vec<usize>,
        pause_after: Vec<bool>,
        paused: bool,
        reads: usize,
    }

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.paused {
                self.paused = false;
                return Poll::Pending;
            }
            let i = self.reads;
            self.reads += 1;
            let want = self.sizes.get(i).copied().unwrap_or(usize::MAX);
            let n = want.min(out.remaining()).min(self.data.len() - self.at);
            let at = self.at;
            out.put_slice(&self.data[at..at + n]);
            self.at += n;
            self.paused = self.pause_after.get(i).copied().unwrap_or(false);
            Poll::Ready(Ok(()))
        }
    }

    fn read_all(r: &mut ReadAhead<Chunks>, each: usize) -> (Vec<u8>, Vec<bool>) {
        let mut cx = Context::from_waker(Waker::noop());
        let (mut got, mut held_when_pending) = (Vec::new(), Vec::new());
        let mut scratch = vec![0u8; each];
        loop {
            let mut rb = ReadBuf::new(&mut scratch);
            match Pin::new(&mut *r).poll_read(&mut cx, &mut rb) {
                Poll::Ready(Ok(())) if rb.filled().is_empty() => return (got, held_when_pending),
                Poll::Ready(Ok(())) => got.extend_from_slice(rb.filled()),
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => held_when_pending.push(r.holds_buffer()),
            }
        }
    }

    #[test]
    fn small_reads_get_every_byte_in_order_from_few_socket_reads() {
        let data: Vec<u8> = (0..800_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let source = Chunks {
            data: data.clone(),
            at: 0,
            // The kernel hands over what has arrived: uneven pieces, pauses between some.
            sizes: vec![1000, 70_000, 5, 200_000, 65_536, 3],
            pause_after: vec![false, true, false, true, false, true],
            paused: false,
            reads: 0,
        };
        let mut r = ReadAhead::new(source);
        // TLS's reads: 4 KB at a time.
        let (got, held) = read_all(&mut r, 4096);
        assert_eq!(got, data);
        // 800 KB in 64 KB socket reads (plus the short ones above and the end of stream),
        // against ~200 reads of 4 KB without it.
        assert!(r.inner.reads <= 20, "{} socket reads", r.inner.reads);
        // Whenever the source paused, no buffer was kept.
        assert_eq!(held, vec![false, false, false]);
        assert!(!r.holds_buffer());
    }

    #[test]
    fn a_reader_with_room_reads_straight_from_the_socket() {
        let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
        let source = Chunks {
            data: data.clone(),
            at: 0,
            sizes: vec![],
            pause_after: vec![],
            paused: false,
            reads: 0,
        };
        let mut r = ReadAhead::new(source);
        let (got, _) = read_all(&mut r, 2 * READ_AHEAD);
        assert_eq!(got, data);
        assert!(!r.holds_buffer());
    }
}
