//! What a cluster needs of the real binary: a ConfigMap's symlink swap is reloaded, SIGTERM turns
//! readiness off at once and keeps serving for the shutdown delay before the drain, and the
//! deployment files under deploy/ point at what the binary serves.

use std::path::Path;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::harness::{client, config_head, wait_until, Instance, Replica};

/// A folder laid out as the kubelet mounts a ConfigMap: the file is a symlink through `..data`,
/// itself a symlink to a timestamped folder holding the real file.
struct ConfigMapVolume {
    dir: std::path::PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(dir: &Path, text: &str) -> Self {
        let mut volume = Self {
            dir: dir.to_owned(),
            generation: 0,
        };
        volume.publish(text);
        std::os::unix::fs::symlink("..data/gateway.yaml", dir.join("gateway.yaml")).unwrap();
        volume
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.join("gateway.yaml")
    }

    /// As the kubelet updates a ConfigMap: a new timestamped folder, a new `..data_tmp` link
    /// renamed over `..data` (the one atomic step), the old folder removed. The file's own path
    /// never changes and is never written: a watcher of that file's inode sees nothing.
    fn publish(&mut self, text: &str) {
        self.generation += 1;
        let previous = format!("..2026_11_29_{:02}", self.generation - 1);
        let current = format!("..2026_11_29_{:02}", self.generation);
        std::fs::create_dir(self.dir.join(&current)).unwrap();
        std::fs::write(self.dir.join(&current).join("gateway.yaml"), text).unwrap();
        let staged = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&current, &staged).unwrap();
        std::fs::rename(&staged, self.dir.join("..data")).unwrap();
        if self.generation > 1 {
            std::fs::remove_dir_all(self.dir.join(previous)).unwrap();
        }
    }
}

fn routes_to(upstream: &Instance, paths: &[&str]) -> String {
    let mut text = format!(
        "  pool: {{ upstreams: [\"{}\"] }}\nroutes:\n",
        upstream.url()
    );
    for path in paths {
        text.push_str(&format!(
            "  - {{ path: {path}, methods: [GET], service: pool, to: /work, auth: public }}\n"
        ));
    }
    text
}

#[tokio::test]
async fn a_configmap_update_by_symlink_swap_is_reloaded() {
    let upstream = Instance::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let head = config_head("100ms").replace("${DATA}", &data.display().to_string());
    let mut volume = ConfigMapVolume::new(
        dir.path(),
        &format!("{head}{}", routes_to(&upstream, &["/api/first"])),
    );
    let gateway = Replica::start(&volume.path(), &[]).await;
    let http = client();
    let status = |path: &'static str| {
        let (http, url) = (http.clone(), gateway.url.clone());
        async move {
            http.get(format!("{url}{path}"))
                .send()
                .await
                .map(|response| response.status().as_u16())
                .unwrap_or(0)
        }
    };
    wait_until("the first route to answer", || async {
        status("/api/first").await == 200
    })
    .await;
    assert_eq!(status("/api/second").await, 404);

    volume.publish(&format!(
        "{head}{}",
        routes_to(&upstream, &["/api/first", "/api/second"])
    ));
    wait_until("the swapped-in route to answer", || async {
        status("/api/second").await == 200
    })
    .await;

    // A second swap, after the first folder is gone: the watch follows the link each time.
    volume.publish(&format!("{head}{}", routes_to(&upstream, &["/api/third"])));
    wait_until("the second swap to apply", || async {
        status("/api/third").await == 200 && status("/api/first").await == 404
    })
    .await;
}

/// What one fresh connection to `address` came to: `Some(status)` for an answer, `None` when
/// the connection was refused (nothing listens any more).
async fn on_a_new_connection(http: &reqwest::Client, url: &str, path: &str) -> Option<u16> {
    let address = url.trim_start_matches("http://");
    if let Err(error) = TcpStream::connect(address).await {
        assert_eq!(
            error.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{error}"
        );
        return None;
    }
    let response = http
        .get(format!("{url}{path}"))
        .header("connection", "close")
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

#[tokio::test]
async fn sigterm_turns_readiness_off_at_once_keeps_serving_through_the_delay_then_stops() {
    let upstream = Instance::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Long enough for the test's few requests after the signal; the process exits after it.
    let text = format!(
        "{}{}",
        config_head("off").replace("${DATA}", &data.display().to_string()),
        routes_to(&upstream, &["/api/work"])
    )
    .replace(
        "drain_timeout: 20s\n",
        "drain_timeout: 20s\nshutdown_delay: 4s\n",
    );
    let config = dir.path().join("gateway.yaml");
    std::fs::write(&config, text).unwrap();
    let gateway = Replica::start(&config, &[("RUST_LOG", "info")]).await;
    // A fresh client per request: no pooled connection hides whether the listener accepts.
    let http = || {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    wait_until("the route to answer", || async {
        on_a_new_connection(&http(), &gateway.url, "/api/work").await == Some(200)
    })
    .await;
    assert_eq!(
        on_a_new_connection(&http(), &gateway.url, "/readyz").await,
        Some(200)
    );

    gateway.process.signal("TERM");

    // 1. Not ready at once — while still accepting new connections.
    wait_until("readiness to turn 503", || async {
        on_a_new_connection(&http(), &gateway.url, "/readyz").await == Some(503)
    })
    .await;
    let detail = http()
        .get(format!("{}/readyz", gateway.admin))
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap();
    assert_eq!(detail["checks"]["shutdown"], "failing", "{detail}");
    // 2. Still serving traffic on new connections after readiness went off.
    assert_eq!(
        on_a_new_connection(&http(), &gateway.url, "/api/work").await,
        Some(200),
        "the listener keeps serving during the shutdown delay"
    );
    // 3. Then it stops accepting, drains and exits 0.
    wait_until("the listener to close", || async {
        on_a_new_connection(&http(), &gateway.url, "/api/work")
            .await
            .is_none()
    })
    .await;
    let exit = tokio::time::timeout(Duration::from_secs(60), gateway.process.exit())
        .await
        .expect("the gateway exits after the delay and the drain");
    let log = gateway.process.log();
    assert_eq!(exit.code(), Some(0), "{log}");
    let said = |message: &str| {
        log.find(message)
            .unwrap_or_else(|| panic!("the log says {message:?}:\n{log}"))
    };
    assert!(
        said("shutdown signal received") < said("still serving until the shutdown delay")
            && said("still serving until the shutdown delay") < said("gateway stopped"),
        "signal → delay → stop, in that order:\n{log}"
    );
}
