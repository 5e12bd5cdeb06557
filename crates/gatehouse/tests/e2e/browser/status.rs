//! `/status` in a real browser (the same headless Chromium as `/docs`): the page loaded from the
//! admin listener while a stream of requests runs, one instance killed; within a few seconds the
//! page shows that instance ejected and the route's rate above zero, laid out in a laptop's
//! window (1366×768) without scrolling. The screenshot goes to `docs/screenshots/status.png`.

use fantoccini::{Client, Locator};

use super::{
    appear, browser_under_test, check, guarded, loaded_only_from, offline_browser, save_screenshot,
    Driver, Step,
};
use crate::harness::{Gate, Instance, Load};
use crate::status::pool_config;

/// What the page showed once the instance was out.
struct Watched {
    rate: String,
    screenshot: Vec<u8>,
}

#[tokio::test]
async fn status_shows_a_killed_instance_ejected_and_the_live_rate_of_a_route_under_load() {
    let Some(binary) = browser_under_test() else {
        return;
    };
    let a = Instance::start("a").await;
    let mut b = Instance::start("b").await;
    let gate = Gate::start(&pool_config(&a, &b, "")).await;
    // The load: the public route (which the killed instance fails under), and refusals.
    let load = Load::start(format!("{}/api/pool", gate.url), 2);
    let refused = Load::start(format!("{}/api/private", gate.url), 1);
    let driver = Driver::start().await;
    let browser = offline_browser(&driver, binary, "1366,768").await;

    let outcome = guarded(&browser, "/status", watch(&browser, &gate, &mut b)).await;
    // Closed before any assertion, so a failing run leaves no browser behind.
    let _ = browser.close().await;
    drop(driver);
    load.finish().await;
    refused.finish().await;
    let watched = outcome.expect("watching /status");

    let path = save_screenshot("status.png", &watched.screenshot);
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
    let healthy = appear(
        browser,
        Locator::Css(&format!("{b_row}[data-state=\"healthy\"]")),
    )
    .await;
    check(healthy.is_ok(), || {
        format!("{} was not shown healthy first", b.address)
    })?;

    b.kill().await;
    let ejected = appear(
        browser,
        Locator::Css(&format!("{b_row}[data-state=\"ejected\"]")),
    )
    .await?;
    let label = ejected.text().await?;
    check(
        label.contains("ejected") && label.contains("breaker open"),
        || format!("the ejected instance reads {label:?}"),
    )?;
    let rate_cell = appear(
        browser,
        Locator::Css("tr[data-template=\"/api/pool\"] td.rate:not(.idle)"),
    )
    .await?;
    let rate = rate_cell.text().await?;
    let value: f64 = rate.trim().parse()?;
    check(value > 0.0, || format!("/api/pool's rate reads {rate}"))?;
    let refused = browser
        .find(Locator::Css(
            "tr[data-template=\"/api/private\"] td.refused",
        ))
        .await?
        .text()
        .await?;
    check(refused.trim() != "0", || {
        format!("/api/private's refusals read {refused}")
    })?;
    // The sparkline draws the last finished 5-second step (at most one step away).
    appear(
        browser,
        Locator::Css(
            "tr[data-template=\"/api/pool\"] svg.spark:not([data-latest=\"0\"]) polyline.requests",
        ),
    )
    .await?;

    // Everything it loaded came from the admin listener, and it fits the window.
    loaded_only_from(browser, &gate.admin_url).await?;
    let fits = browser
        .execute(
            "const d = document.documentElement; \
             return [d.scrollWidth <= window.innerWidth, d.scrollHeight <= window.innerHeight, \
                     window.innerWidth, window.innerHeight, d.scrollWidth, d.scrollHeight]",
            Vec::new(),
        )
        .await?;
    check(
        fits[0].as_bool() == Some(true) && fits[1].as_bool() == Some(true),
        || {
            format!("the page needs scrolling: [fits across, fits down, window w, h, page w, h] = {fits}")
        },
    )?;
    Ok(Watched {
        rate,
        screenshot: browser.screenshot().await?,
    })
}
