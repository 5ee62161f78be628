//! Refusals berth sends before reading an upload's body must reach the client. A client
//! PATCHing from the wrong offset learns where to resume only from the 416's `Range` header,
//! and one PATCHing into a session berth forgot only from the 404; if berth answers and then
//! drops the connection while the client is still sending, the client sees a broken pipe
//! instead and cannot recover. Go's net/http (Distribution) reads or lingers so the answer
//! arrives; this holds berth to the same. Runs without root, unlike the full-disk variant.
#![allow(clippy::unwrap_used)] // A test: a panic is a failed test, with its message.

use berth_tests::client::Client;
use berth_tests::content;
use berth_tests::process::Berth;
use reqwest::Method;

const BODY: usize = 64 << 20;
const ATTEMPTS: u64 = 32;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn early_refusals_of_large_patches_reach_the_client() {
    let work = tempfile::tempdir().unwrap();
    let berth = Berth::start_on(&work.path().join("root"), work.path());
    let mut failures = Vec::new();
    let mut next_failed = 0;
    let data = content(0x7265_6675, BODY);
    for i in 0..ATTEMPTS {
        let c = Client::new(&berth.base()).unwrap();
        let data = data.clone();
        let (path, expected, range) = if i % 2 == 0 {
            // A chunk that does not start where the session ends: 416 and where it ends.
            let path = c.start_upload("refused/patch").await.unwrap();
            (path, 416, Some("0-0"))
        } else {
            // A session berth never issued: 404.
            let path =
                "/v2/refused/patch/blobs/uploads/00000000-0000-4000-8000-000000000000".to_owned();
            (path, 404, None)
        };
        let end = 5 + BODY as u64 - 1;
        let r = c
            .send(
                Method::PATCH,
                &path,
                &[("content-range", format!("5-{end}"))],
                Some(reqwest::Body::from(data)),
            )
            .await;
        match r {
            Ok(r) if r.status == expected => {
                if let Some(range) = range {
                    assert_eq!(r.h("range"), range, "416 without the Range to resume from");
                }
            }
            Ok(r) => panic!("PATCH {path}: HTTP {} instead of {expected}", r.status),
            Err(e) => failures.push(format!("expected {expected}: {e}")),
        }
        if c.send(Method::GET, "/v2/", &[], None).await.is_err() {
            next_failed += 1;
        }
    }
    println!(
        "early refusals of {} MiB PATCHes: {} of {ATTEMPTS} answered; {next_failed} follow-up \
         requests failed",
        BODY >> 20,
        ATTEMPTS as usize - failures.len()
    );
    assert!(
        failures.is_empty() && next_failed == 0,
        "{} of {ATTEMPTS} clients never got berth's refusal, and {next_failed} follow-up \
         requests on the same client failed:\n{}\nberth log:\n{}",
        failures.len(),
        failures.join("\n"),
        berth.log_tail()
    );
}
