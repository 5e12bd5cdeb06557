//! `/docs` in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`),
//! driven over WebDriver, with every address but the gateway's unreachable (a proxy that does
//! not exist, loopback bypassing it). It finds the operation list, authorizes with a bearer
//! token, executes `GET /api/time` from the page and reads the 200 in its response panel, and
//! saves a screenshot of that under the build's target folder (`target/screenshots/docs.png`),
//! so a run never changes the checkout; with `GATEHOUSE_UPDATE_SCREENSHOTS=1` it also copies it
//! over the committed `docs/screenshots/docs.png`, which is how that one is refreshed.
//!
//! Runs only when `GATEHOUSE_TEST_BROWSER` is set (CI installs the browser and sets it); skips
//! with a message otherwise, so `cargo test` passes on a machine without a browser.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{spawn_app, TestApp};

/// `/status` in the same browser: see its own file.
mod status;

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

/// How long one step may take before the test gives up on it: generous, the machine may be
/// loaded; a step that works finishes as soon as its element is there.
const STEP: Duration = Duration::from_secs(60);
/// How long the whole walk may take before the test calls it hung.
const HANG_GUARD: Duration = Duration::from_secs(180);

/// The block of `GET /api/time` in the operation list.
const TIME_OPERATION: &str = "//div[contains(concat(' ', @class, ' '), ' opblock-get ')]\
    [.//*[contains(@class, 'opblock-summary-path') and @data-path='/api/time']]";

fn chromium() -> Option<&'static str> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists())
}

/// Anything that stops the walk through the page: a WebDriver step or a check of what it showed.
type Step<T> = Result<T, Box<dyn std::error::Error>>;

/// What the page showed once the call was made.
struct Walked {
    operations: usize,
    screenshot: Vec<u8>,
}

#[tokio::test]
async fn docs_lists_the_operations_and_tries_one_with_a_bearer_token_offline() {
    let Some(binary) = browser_under_test() else {
        return;
    };
    let app = spawn_app().await;
    let token = app.admin().await;
    let driver = Driver::start().await;
    let browser = offline_browser(&driver, binary, "1280,1400").await;

    let outcome = guarded(&browser, "/docs", walk(&browser, &app, &token)).await;
    // Closed before any assertion, so a failing run leaves no browser behind.
    let _ = browser.close().await;
    drop(driver);
    let walked = outcome.expect("the walk through /docs");

    let path = save_screenshot("docs.png", &walked.screenshot);
    println!(
        "browser: /docs listed {} operations, the call from the page answered 200; screenshot at {}",
        walked.operations,
        path.display()
    );
}

/// A session of headless Chromium (`binary`) in a window of `size` ("width,height"), with the
/// network off: every address but loopback goes to a proxy nothing listens on.
async fn offline_browser(driver: &Driver, binary: &str, size: &str) -> Client {
    let mut args: Vec<String> = FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
    args.push("--proxy-server=http://127.0.0.1:9".to_owned());
    args.push("--proxy-bypass-list=127.0.0.1".to_owned());
    args.push(format!("--window-size={size}"));
    let capabilities = json!({ "goog:chromeOptions": { "binary": binary, "args": args } });
    let Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a browser session")
}

/// `walk` through the page `what`, guarded against a hang (each step waits for its element at
/// most `STEP`; this guards the rest). On failure, what the page showed is saved beside the
/// error, to see which step failed.
async fn guarded<T>(
    browser: &Client,
    what: &str,
    walk: impl std::future::Future<Output = Step<T>>,
) -> Result<T, String> {
    let outcome = tokio::time::timeout(HANG_GUARD, walk)
        .await
        .unwrap_or_else(|_| Err(format!("the walk through {what} hung for {HANG_GUARD:?}").into()));
    match outcome {
        Ok(walked) => Ok(walked),
        Err(failure) => {
            let name = what.trim_start_matches('/').replace('/', "-");
            let shot = std::env::temp_dir().join(format!("gatehouse-{name}-failure.png"));
            if let Ok(png) = browser.screenshot().await {
                let _ = std::fs::write(&shot, png);
            }
            Err(format!("{failure} (the page then: {})", shot.display()))
        }
    }
}

/// Fails unless everything the page loaded came from `origin`.
async fn loaded_only_from(browser: &Client, origin: &str) -> Step<()> {
    let loaded = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            Vec::new(),
        )
        .await?;
    for url in loaded.as_array().into_iter().flatten() {
        let url = url.as_str().unwrap_or_default();
        check(url.starts_with(origin), || {
            format!("{url} is not from {origin}")
        })?;
    }
    Ok(())
}

/// The browser to run, when the browser tests are on (`GATEHOUSE_TEST_BROWSER`); None, having
/// said why the test skips, when they are off.
fn browser_under_test() -> Option<&'static str> {
    if std::env::var_os("GATEHOUSE_TEST_BROWSER").is_none() {
        println!("SKIPPED: the browser test runs with GATEHOUSE_TEST_BROWSER=1 (and Debian's chromium + chromium-driver)");
        return None;
    }
    Some(chromium().expect("chromium is installed (apt-get install chromium)"))
}

/// Writes the screenshot to `target/screenshots/<file>` (the target folder is the parent of
/// Cargo's `CARGO_TARGET_TMPDIR`, wherever `CARGO_TARGET_DIR` puts it) and, asked with
/// `GATEHOUSE_UPDATE_SCREENSHOTS=1`, over the committed `docs/screenshots/<file>` too.
/// Returns where it was written.
fn save_screenshot(file: &str, png: &[u8]) -> std::path::PathBuf {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target folder")
        .join("screenshots")
        .join(file);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, png).unwrap();
    if std::env::var_os("GATEHOUSE_UPDATE_SCREENSHOTS").is_some_and(|value| value == "1") {
        let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/screenshots")
            .join(file);
        std::fs::copy(&target, &committed).unwrap();
        println!("browser: docs/screenshots/{file} updated");
        return committed;
    }
    target
}

/// The element `locator` finds, once the page shows it (at most `STEP`).
async fn appear(browser: &Client, locator: Locator<'_>) -> Step<Element> {
    Ok(browser.wait().at_most(STEP).for_element(locator).await?)
}

/// The text of what `css` finds inside `element`.
async fn text_in(element: &Element, css: &str) -> Step<String> {
    Ok(element.find(Locator::Css(css)).await?.text().await?)
}

/// Fails with `message` unless `condition` holds.
fn check(condition: bool, message: impl FnOnce() -> String) -> Step<()> {
    if condition {
        Ok(())
    } else {
        Err(message().into())
    }
}

/// Loads /docs, authorizes with `token`, executes `GET /api/time` and reads its answer.
async fn walk(browser: &Client, app: &TestApp, token: &str) -> Step<Walked> {
    browser.goto(&app.url("/docs/")).await?;
    appear(browser, Locator::Css(".opblock")).await?;
    let operations = browser.find_all(Locator::Css(".opblock")).await?.len();
    check(operations > 10, || {
        format!("the operation list has {operations} operations")
    })?;

    // Authorize: the bearerAuth section of the dialog.
    browser
        .find(Locator::Css(".btn.authorize"))
        .await?
        .click()
        .await?;
    appear(browser, Locator::Css(".auth-container")).await?;
    let mut authorized = false;
    for section in browser.find_all(Locator::Css(".auth-container")).await? {
        if section.text().await?.contains("bearerAuth") {
            section
                .find(Locator::Css("input"))
                .await?
                .send_keys(token)
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
    check(authorized, || {
        "the Authorize dialog has no bearerAuth section".to_owned()
    })?;
    browser
        .find(Locator::Css(".btn-done"))
        .await?
        .click()
        .await?;

    // GET /api/time, from its own block of the list (scoped, so no other operation's buttons
    // are found). The gateway opens operations in try-it-out mode (`tryItOutEnabled`), so
    // the open block's button reads "Cancel": clicking it regardless, as this test once did,
    // leaves that mode and hides Execute. A person clicks "Try it out" only where it says so.
    let operation = appear(browser, Locator::XPath(TIME_OPERATION)).await?;
    operation
        .find(Locator::Css(".opblock-summary-control"))
        .await?
        .click()
        .await?;
    let try_out = appear(
        browser,
        Locator::XPath(&format!(
            "{TIME_OPERATION}//button[contains(@class, 'try-out__btn')]"
        )),
    )
    .await?;
    if !try_out
        .attr("class")
        .await?
        .unwrap_or_default()
        .contains("cancel")
    {
        try_out.click().await?;
    }
    appear(
        browser,
        Locator::XPath(&format!(
            "{TIME_OPERATION}//button[contains(@class, 'execute')]"
        )),
    )
    .await?
    .click()
    .await?;

    // The response panel: the live answer's row (not the table's "Code" header).
    let status = appear(
        browser,
        Locator::XPath(&format!(
            "{TIME_OPERATION}//table[contains(@class, 'live-responses-table')]\
             //tr[@class='response']/td[contains(@class, 'response-col_status')]"
        )),
    )
    .await?
    .text()
    .await?;
    let request_url = text_in(&operation, ".request-url pre").await?;
    let curl = text_in(&operation, ".curl-command").await?;
    let body = text_in(
        &operation,
        ".live-responses-table .response-col_description pre",
    )
    .await?;
    check(request_url.trim() == app.url("/api/time"), || {
        format!("the page called {request_url}, not the gateway that served it")
    })?;
    check(
        curl.contains(&format!("Authorization: Bearer {token}")),
        || format!("the call did not carry the token from Authorize: {curl}"),
    )?;
    check(status.trim() == "200", || {
        format!("the call from the page answered {status}: {body}")
    })?;
    let time: Value = serde_json::from_str(&body)?;
    check(time["iso"].is_string() && time["unix_ms"].is_u64(), || {
        format!("the panel does not show the clock's answer: {body}")
    })?;

    // Nothing was loaded from anywhere but the gateway.
    loaded_only_from(browser, &app.gateway).await?;

    // The screenshot: the operation, its call and the 200, with the list around it.
    browser
        .execute(
            "arguments[0].scrollIntoView({ block: 'start' })",
            vec![serde_json::to_value(&operation)?],
        )
        .await?;
    let screenshot = browser.screenshot().await?;
    Ok(Walked {
        operations,
        screenshot,
    })
}
