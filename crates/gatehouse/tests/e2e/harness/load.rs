//! `workers` loops of `GET url` until stopped, and what they saw.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::client;

/// What the stream of requests saw.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: usize,
    /// (status or error, instance) of each request that did not get a 200.
    pub failures: Vec<String>,
    pub by_instance: std::collections::BTreeMap<String, usize>,
    /// The longest time between two successful answers.
    pub longest_silence: Duration,
    last_ok: Option<Instant>,
}

/// `workers` loops of `GET url` until stopped.
pub struct Load {
    stop: watch::Sender<bool>,
    tally: Arc<Mutex<Tally>>,
    workers: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(url: String, workers: usize) -> Self {
        let (stop, stopped) = watch::channel(false);
        let tally = Arc::new(Mutex::new(Tally::default()));
        let http = client();
        let workers = (0..workers)
            .map(|_| {
                let (url, http, tally, stopped) = (
                    url.clone(),
                    http.clone(),
                    Arc::clone(&tally),
                    stopped.clone(),
                );
                tokio::spawn(async move {
                    while !*stopped.borrow() {
                        let outcome = match http.get(&url).send().await {
                            Ok(response) if response.status() == 200 => {
                                match response.json::<Value>().await {
                                    Ok(body) => {
                                        Ok(body["instance"].as_str().unwrap_or("?").to_owned())
                                    }
                                    Err(error) => Err(format!("body: {error}")),
                                }
                            }
                            Ok(response) => Err(format!("status {}", response.status())),
                            Err(error) => Err(format!("error: {error}")),
                        };
                        let mut tally = tally.lock().unwrap();
                        match outcome {
                            Ok(instance) => {
                                tally.ok += 1;
                                let now = Instant::now();
                                if let Some(last) = tally.last_ok {
                                    tally.longest_silence = tally.longest_silence.max(now - last);
                                }
                                tally.last_ok = Some(now);
                                *tally.by_instance.entry(instance).or_default() += 1;
                            }
                            Err(failure) => tally.failures.push(failure),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            tally,
            workers,
        }
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    pub async fn finish(self) -> Tally {
        self.stop.send_replace(true);
        for worker in self.workers {
            worker.await.unwrap();
        }
        let tally = self.tally.lock().unwrap().clone();
        tally
    }
}
