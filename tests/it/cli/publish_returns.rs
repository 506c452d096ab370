//! `publish` while its queue goes away: each line that came back is named
//! by its number, and no stored line is. lapin hands a `basic.return` to
//! whichever confirm it resolves next, so the pipelined publish used to
//! count the returned lines right but could not name them.

use std::{collections::BTreeSet, time::Duration};

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::{dlq_tools::copy_returns::Taker, helpers::*};

#[tokio::test]
async fn publish_names_the_lines_that_came_back() {
    let broker = Broker::new("retpub").await;
    broker.declare().await;
    let taker = Taker::start(&broker.queue).await;

    let mut child = tokio::process::Command::new(bin())
        .args(["publish", "--format", "json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "error")
        .envs(broker.vars())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let lines = |range: std::ops::RangeInclusive<u64>| -> Vec<u8> {
        range
            .map(|n| format!("{{\"n\":{n}}}\n"))
            .collect::<String>()
            .into_bytes()
    };
    // Lines 1..=1500 go to the queue; then it is deleted; lines 1501..=2000
    // come back unroutable, some in the same batch as stored ones.
    stdin.write_all(&lines(1..=1500)).await.unwrap();
    stdin.flush().await.unwrap();
    wait_until(
        "the first lines stored",
        Duration::from_secs(30),
        || async { taker.len() >= 1500 },
    )
    .await;
    taker.delete_queue_when_empty(&broker.queue).await;
    stdin.write_all(&lines(1501..=2000)).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["confirmed"], 1500, "{stdout}");
    assert_eq!(report["unconfirmed"], 500);
    let reported: Vec<u64> = report["unconfirmed_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["line"].as_u64().unwrap())
        .collect();
    let returned: Vec<u64> = (1501..=2000).collect();
    assert!(
        reported == returned,
        "reported as not confirmed: {} lines, from {:?} to {:?}; returned: 1501 to 2000",
        reported.len(),
        reported.first(),
        reported.last()
    );
    assert!(stderr.contains("line 1501: not confirmed"), "{stderr}");
    let stored = stored_lines(&taker);
    assert_eq!(stored, (1..=1500).collect::<BTreeSet<_>>());
}

#[tokio::test]
async fn publish_while_the_queue_is_deleted_names_exactly_the_lines_not_stored() {
    let broker = Broker::new("retpubrace").await;
    broker.declare().await;
    let taker = Taker::start(&broker.queue).await;
    let input: String = (1..=20_000).map(|n| format!("{{\"n\":{n}}}\n")).collect();
    let vars = broker.vars();
    let publish = tokio::spawn(async move {
        run_bin(&["publish", "--format", "json"], &vars, input.as_bytes()).await
    });
    // Deleted while lines stream in: returns of later lines overtake the
    // confirms of earlier, stored ones.
    wait_until("some lines stored", Duration::from_secs(30), || async {
        taker.len() >= 2000
    })
    .await;
    taker.delete_queue_when_empty(&broker.queue).await;
    let (code, stdout, _) = publish.await.unwrap();
    assert_eq!(code, 1);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap();
    let reported: BTreeSet<u64> = report["unconfirmed_lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["line"].as_u64().unwrap())
        .collect();
    let stored = stored_lines(&taker);
    assert!(stored.len() < 20_000, "the queue went part way");
    let not_stored: BTreeSet<u64> = (1..=20_000).filter(|n| !stored.contains(n)).collect();
    let confirmed = report["confirmed"].as_u64().unwrap() as usize;
    // Every line reported is one not stored: a stored line reported as
    // returned would be another line's return.
    let wrong: Vec<&u64> = reported.difference(&not_stored).take(5).collect();
    assert!(
        wrong.is_empty(),
        "stored, yet reported not confirmed: {wrong:?}"
    );
    // The lines not stored and not reported are those the broker confirmed
    // into the queue just as it was deleted (see the replay test above).
    assert_eq!(
        not_stored.len() - reported.len(),
        confirmed - stored.len(),
        "lines missing and not reported, other than those confirmed into the queue being deleted"
    );
}

/// The line numbers (`{"n":N}`) of the messages that reached the queue.
fn stored_lines(taker: &Taker) -> BTreeSet<u64> {
    taker
        .taken
        .lock()
        .unwrap()
        .iter()
        .map(|(_, body)| {
            serde_json::from_slice::<Value>(body).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect()
}
