//! `/status` in a real browser (the same headless Chromium as `/docs`): the page loaded from the
//! admin listener while a stream of requests runs, one instance killed; within a few seconds the
//! page shows that instance ejected and the route's rate above zero, laid out in a laptop's
//! window (1366×768) without scrolling. The screenshot goes to `docs/screenshots/status.png`.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use super::{appear, check, chromium, Driver, Step, FLAGS, HANG_GUARD};
use crate::harness::{Gate, Instance, Load};
use crate::status::pool_config;

/// What the page showed once the instance was out.
struct Watched {
    rate: String,
    screenshot: Vec<u8>,
}

#[tokio::test]
async fn status_shows_a_killed_instance_ejected_and_the_live_rate_of_a_route_under_load() {
    if std::env::var_os("GATEHOUSE_TEST_BROWSER").is_none() {
        println!("SKIPPED: the browser test runs with GATEHOUSE_TEST_BROWSER=1 (and Debian's chromium + chromium-driver)");
        return;
    }
    let binary = chromium().expect("chromium is installed (apt-get install chromium)");
    let a = Instance::start("a").await;
    let mut b = Instance::start("b").await;
    let gate = Gate::start(&pool_config(&a, &b, "")).await;
    // The load: the public route (which the killed instance fails under), and refusals.
    let load = Load::start(format!("{}/api/pool", gate.url), 2);
    let refused = Load::start(format!("{}/api/private", gate.url), 1);
    let driver = Driver::start().await;

    let mut args: Vec<String> = FLAGS.iter().map(|flag| (*flag).to_owned()).collect();
    args.push("--proxy-server=http://127.0.0.1:9".to_owned());
    args.push("--proxy-bypass-list=127.0.0.1".to_owned());
    args.push("--window-size=1366,768".to_owned());
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

    let outcome = tokio::time::timeout(HANG_GUARD, watch(&browser, &gate, &mut b))
        .await
        .unwrap_or_else(|_| Err(format!("watching /status hung for {HANG_GUARD:?}").into()));
    let outcome = match outcome {
        Ok(watched) => Ok(watched),
        Err(failure) => {
            let shot = std::env::temp_dir().join("gatehouse-status-failure.png");
            if let Ok(png) = browser.screenshot().await {
                let _ = std::fs::write(&shot, png);
            }
            Err(format!("{failure} (the page then: {})", shot.display()))
        }
    };
    let _ = browser.close().await;
    drop(driver);
    load.finish().await;
    refused.finish().await;
    let watched = outcome.expect("watching /status");

    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/screenshots/status.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, watched.screenshot).unwrap();
    println!(
        "browser: /status showed the killed instance ejected and /api/pool at {} req/s; screenshot at {}",
        watched.rate,
        path.display()
    );
}

/// Loads `/status`, kills `b`, and waits for the page to say so and to show the route's rate.
async fn watch(browser: &Client, gate: &Gate, b: &mut Instance) -> Step<Watched> {
    browser.goto(&format!("{}/status", gate.admin_url)).await?;
    let b_row = format!("[data-instance=\"{}\"]", b.address);
    let healthy = appear(browser, Locator::Css(&format!("{b_row}[data-state=\"healthy\"]"))).await;
    check(healthy.is_ok(), || format!("{} was not shown healthy first", b.address))?;

    b.kill().await;
    let ejected = appear(browser, Locator::Css(&format!("{b_row}[data-state=\"ejected\"]"))).await?;
    let label = ejected.text().await?;
    check(label.contains("ejected") && label.contains("breaker open"), || {
        format!("the ejected instance reads {label:?}")
    })?;
    let rate_cell = appear(
        browser,
        Locator::Css("tr[data-template=\"/api/pool\"] td.rate:not(.idle)"),
    )
    .await?;
    let rate = rate_cell.text().await?;
    let value: f64 = rate.trim().parse()?;
    check(value > 0.0, || format!("/api/pool's rate reads {rate}"))?;
    let refused = browser
        .find(Locator::Css("tr[data-template=\"/api/private\"] td.refused"))
        .await?
        .text()
        .await?;
    check(refused.trim() != "0", || {
        format!("/api/private's refusals read {refused}")
    })?;
    // The sparkline is drawn.
    browser
        .find(Locator::Css("tr[data-template=\"/api/pool\"] svg.spark polyline.requests"))
        .await?;

    // Everything it loaded came from the admin listener, and it fits the window.
    let loaded = browser
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            Vec::new(),
        )
        .await?;
    for url in loaded.as_array().into_iter().flatten() {
        let url = url.as_str().unwrap_or_default();
        check(url.starts_with(&gate.admin_url), || {
            format!("{url} is not the admin listener's")
        })?;
    }
    let fits = browser
        .execute(
            "const d = document.documentElement; \
             return [d.scrollWidth <= window.innerWidth, d.scrollHeight <= window.innerHeight, \
                     window.innerWidth, window.innerHeight, d.scrollWidth, d.scrollHeight]",
            Vec::new(),
        )
        .await?;
    check(fits[0].as_bool() == Some(true) && fits[1].as_bool() == Some(true), || {
        format!("the page needs scrolling: [fits across, fits down, window w, h, page w, h] = {fits}")
    })?;
    Ok(Watched {
        rate,
        screenshot: browser.screenshot().await?,
    })
}
