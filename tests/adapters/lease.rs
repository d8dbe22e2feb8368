//! Leases on DynamoDB Local: one holder at a time, taken over only after the holder stopped renewing for a
//! whole period, handed back at once on a clean stop, and exactly one winner when two race for it.

use std::time::Duration;

use orderflow::lease::Leases;

use crate::support::dynamo;

// Renewals come every third of it: ample margin on a busy machine, where a DynamoDB Local call can take 100s of ms.
const PERIOD: Duration = Duration::from_millis(1500);

async fn two_instances() -> Option<(Leases, Leases)> {
    let (client, tables) = dynamo().await?;
    orderflow::aws::ensure_tables(&client, &[tables.checkpoints_spec()]).await.expect("checkpoints table");
    let lease = |owner: &str| Leases::new(client.clone(), tables.checkpoints.clone(), owner.to_owned(), PERIOD);
    Some((lease("a"), lease("b")))
}

#[tokio::test]
async fn one_holder_at_a_time_and_a_takeover_only_after_a_silent_period() {
    let Some((a, b)) = two_instances().await else { return };
    assert!(a.hold("shard-1").await.expect("a"));
    assert!(!b.hold("shard-1").await.expect("b"), "held by a");
    // a keeps renewing for three periods: b never gets it.
    for _ in 0..9 {
        tokio::time::sleep(PERIOD / 3).await;
        assert!(a.hold("shard-1").await.expect("a renews"));
        assert!(!b.hold("shard-1").await.expect("b"), "a renews, so b must wait");
    }
    // a goes silent: b takes over once it has seen no renewal for a period, not before.
    assert!(!b.hold("shard-1").await.expect("b"));
    tokio::time::sleep(PERIOD + PERIOD / 4).await;
    assert!(b.hold("shard-1").await.expect("b takes over"));
    // a comes back: it lost the lease and cannot renew it.
    tokio::time::sleep(PERIOD / 2).await;
    assert!(!a.hold("shard-1").await.expect("a"), "a lost it to b");
    // Other resources are independent.
    assert!(a.hold("shard-2").await.expect("a holds another shard"));
}

#[tokio::test]
async fn a_released_lease_is_taken_at_once() {
    let Some((a, b)) = two_instances().await else { return };
    assert!(a.hold("shard-1").await.expect("a"));
    assert!(!b.hold("shard-1").await.expect("b"));
    a.release("shard-1").await;
    assert!(b.hold("shard-1").await.expect("b takes the released lease without waiting"));
    // Releasing a lease one does not hold changes nothing.
    a.release("shard-1").await;
    assert!(b.hold("shard-1").await.expect("still b's"));
}

#[tokio::test]
async fn of_two_instances_racing_for_an_expired_lease_exactly_one_wins() {
    let Some((client, tables)) = dynamo().await else { return };
    orderflow::aws::ensure_tables(&client, &[tables.checkpoints_spec()]).await.expect("checkpoints table");
    let lease = |owner: &str| Leases::new(client.clone(), tables.checkpoints.clone(), owner.to_owned(), PERIOD);
    let (dead, b, c) = (lease("dead"), lease("b"), lease("c"));
    assert!(dead.hold("shard-1").await.expect("dead"));
    assert!(!b.hold("shard-1").await.expect("b watches"));
    assert!(!c.hold("shard-1").await.expect("c watches"));
    tokio::time::sleep(PERIOD + PERIOD / 4).await;
    let (rb, rc) = tokio::join!(b.hold("shard-1"), c.hold("shard-1"));
    let (rb, rc) = (rb.expect("b"), rc.expect("c"));
    assert!(rb ^ rc, "exactly one wins: b {rb}, c {rc}");
}
