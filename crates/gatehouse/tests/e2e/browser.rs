//! `/docs` in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver, with every address but the gateway's unreachable (a proxy that does
//! not exist, loopback bypassing it). It finds the operation list, authorizes with a bearer
//! token, tries one call, and saves a screenshot to `docs/screenshots/docs.png`.
//!
//! Runs only when `GATEHOUSE_TEST_BROWSER` is set (CI installs the browser and sets it); skips
//! with a message otherwise, so `cargo test` passes on a machine without a browser.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::spawn_app;

const FLAGS: [&str; 6] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
];

/// chromedriver on a port it chose; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Self {
        let mut child = Command::new("chromedriver")
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium-driver)");
        let stdout = tokio::process::ChildStdout::from_std(child.stdout.take().unwrap()).unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // "ChromeDriver was started successfully on port 41235."
        let port = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                // (Its first line says "… on port 0", the port asked for.)
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    return rest.trim_end_matches('.').trim().parse::<u16>().unwrap();
                }
            }
            panic!("chromedriver exited without saying its port");
        })
        .await
        .expect("chromedriver says its port");
        // Keep reading its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
}

#[tokio::test]
async fn docs_lists_the_operations_and_tries_one_with_a_bearer_token_offline() {
    if std::env::var_os("GATEHOUSE_TEST_BROWSER").is_none() {
        println!("SKIPPED: the browser test runs with GATEHOUSE_TEST_BROWSER=1 (and Debian's chromium + chromium-driver)");
        return;
    }
    let binary = chromium().expect("chromium is installed (apt-get install chromium)");
    let app = spawn_app().await;
    let token = app.admin().await;
    let driver = Driver::start().await;

    let mut args: Vec<String> = FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
    // The network off: every address but loopback goes to a proxy nothing listens on.
    args.push("--proxy-server=http://127.0.0.1:9".to_owned());
    args.push("--proxy-bypass-list=127.0.0.1".to_owned());
    args.push("--window-size=1280,1400".to_owned());
    let capabilities = json!({ "goog:chromeOptions": { "binary": binary, "args": args } });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session");

    let outcome = async {
        browser.goto(&app.url("/docs/")).await?;
        browser
            .wait()
            .at_most(Duration::from_secs(60))
            .for_element(Locator::Css(".opblock"))
            .await?;
        let operations = browser.find_all(Locator::Css(".opblock")).await?;
        assert!(
            operations.len() > 10,
            "the operation list: {} operations",
            operations.len()
        );

        // Authorize: the bearerAuth section of the dialog.
        browser
            .find(Locator::Css(".btn.authorize"))
            .await?
            .click()
            .await?;
        let sections = browser.find_all(Locator::Css(".auth-container")).await?;
        let mut authorized = false;
        for section in sections {
            if section.text().await?.contains("bearerAuth") {
                section
                    .find(Locator::Css("input"))
                    .await?
                    .send_keys(&token)
                    .await?;
                section
                    .find(Locator::Css("button.authorize"))
                    .await?
                    .click()
                    .await?;
                authorized = true;
                break;
            }
        }
        assert!(authorized, "the dialog has a bearerAuth section");
        browser
            .find(Locator::Css(".btn-done"))
            .await?
            .click()
            .await?;

        // Try GET /api/time.
        let time = browser
            .find(Locator::Css(".opblock-summary-path[data-path='/api/time']"))
            .await?;
        time.click().await?;
        // Clicked from the page's script: the operation is still opening (animated), and a
        // WebDriver click can land before the button is where it will be.
        for button in [".try-out__btn", ".btn.execute"] {
            browser
                .wait()
                .at_most(Duration::from_secs(30))
                .for_element(Locator::Css(button))
                .await?;
            browser
                .execute(
                    "document.querySelector(arguments[0]).click()",
                    vec![json!(button)],
                )
                .await?;
        }
        let status = browser
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Css(
                ".live-responses-table .response .response-col_status",
            ))
            .await?
            .text()
            .await?;
        assert_eq!(
            status.trim(),
            "200",
            "the call from the page, with the token"
        );

        // Nothing was loaded from anywhere but the gateway.
        let loaded = browser
            .execute(
                "return performance.getEntriesByType('resource').map(e => e.name)",
                Vec::new(),
            )
            .await?;
        for url in loaded.as_array().unwrap() {
            assert!(
                url.as_str().unwrap().starts_with(&app.gateway),
                "{url} is not the gateway's"
            );
        }

        let png = browser.screenshot().await?;
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/screenshots/docs.png");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, png).unwrap();
        println!(
            "browser: /docs listed the operations, the call answered 200; screenshot at {}",
            path.display()
        );
        Ok::<_, fantoccini::error::CmdError>(())
    }
    .await;
    if outcome.is_err() {
        // What the page showed when a step failed, to see which.
        if let Ok(png) = browser.screenshot().await {
            let _ = std::fs::write(std::env::temp_dir().join("gatehouse-docs-failure.png"), png);
        }
        if let Ok(source) = browser.source().await {
            println!(
                "the page when the step failed:\n{}",
                &source[..source.len().min(4000)]
            );
        }
    }
    let _ = browser.close().await;
    outcome.expect("the browser steps");
}
