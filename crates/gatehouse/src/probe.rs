//! `gatehouse probe URL`: an HTTP health check for a container image that has no shell and no
//! curl (the Dockerfile's `HEALTHCHECK`, compose's `healthcheck`). Exits 0 on a 2xx answer
//! within the timeout, 1 otherwise, saying why on stderr.

use std::time::Duration;

use anyhow::{ensure, Context};
use bytes::Bytes;
use http_body_util::Empty;
use hyper::header::HOST;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// GETs `url` (plain `http://`: probes run beside the process, on loopback) and succeeds on a
/// 2xx answer within `timeout`.
pub async fn probe(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let uri: Uri = url
        .parse()
        .with_context(|| format!("{url:?} is not a URL"))?;
    ensure!(
        uri.scheme_str() == Some("http"),
        "{url:?}: only http:// URLs are probed"
    );
    let authority = uri
        .authority()
        .with_context(|| format!("{url:?} names no host"))?
        .clone();
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let target = uri.path_and_query().map_or("/", |target| target.as_str());
    let exchange = async {
        let stream = TcpStream::connect((host, port)).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = Request::get(target)
            .header(HOST, authority.as_str())
            .body(Empty::<Bytes>::new())?;
        anyhow::Ok(sender.send_request(request).await?.status())
    };
    let status = tokio::time::timeout(timeout, exchange)
        .await
        .with_context(|| format!("{url}: no answer within {timeout:?}"))?
        .with_context(|| format!("{url}: no answer"))?;
    ensure!(status.is_success(), "{url} answered {status}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_url_that_is_not_plain_http_is_refused_before_any_connection() {
        for url in [
            "https://127.0.0.1/healthz",
            "127.0.0.1:8001",
            "not a url",
            "http:///x",
        ] {
            assert!(probe(url, Duration::from_secs(1)).await.is_err(), "{url}");
        }
    }

    #[tokio::test]
    async fn nothing_listening_fails() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        drop(listener);
        let error = probe(&format!("http://{address}/healthz"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(format!("{error:#}").contains("no answer"), "{error:#}");
    }
}
