//! The byte streams under the upstream client: a TCP connection to an instance, and
//! [`UpstreamStream`], a plain or TLS connection as one type for code that needs the raw stream
//! (a WebSocket upgrade splices it to the client's).
//!
//! The pool itself never goes through [`UpstreamStream`]: it hands each kind of stream to hyper
//! as it is, so a plain HTTP/1.1 connection pays for no dispatch on every read and write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::uri::Authority;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TCP connection to `authority` (`default_port` when it names none): its address at once
/// when it is one, else each address the name resolves to, in turn. Nagle is off: hyper writes
/// a request whole, and a small one should go out at once.
pub async fn open_tcp(authority: &Authority, default_port: u16) -> io::Result<TcpStream> {
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(default_port);
    // `[::1]` in an authority is the address `::1`.
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let stream = if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
        TcpStream::connect((ip, port)).await?
    } else {
        let mut last = None;
        let mut connected = None;
        for address in tokio::net::lookup_host((host, port)).await? {
            match TcpStream::connect(address).await {
                Ok(stream) => {
                    connected = Some(stream);
                    break;
                }
                Err(error) => last = Some(error),
            }
        }
        match connected {
            Some(stream) => stream,
            None => {
                return Err(last.unwrap_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{host} resolves to no address"),
                    )
                }))
            }
        }
    };
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A connection to an instance, plain or TLS (the TLS one boxed: its buffers are large, and it
/// is the rarer kind).
pub enum UpstreamStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }
}
