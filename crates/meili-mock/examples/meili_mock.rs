//! The tests' Meilisearch contract mock (this crate) as a process of its own, for
//! `scripts/bench-distributed.sh` on machines where no Meilisearch server can be installed (no registry ships
//! one). It stands in for the search index only so that the distributed profile starts and its write path, bridge,
//! broker and projectors can be measured; figures for searching itself would describe the mock (a linear scan in
//! memory), not Meilisearch.
//!
//! ```sh
//! cargo run --release -p meili-mock --example meili_mock -- [MASTER_KEY]
//! ```
//!
//! Prints `meilisearch mock on http://127.0.0.1:PORT` and serves until killed.

fn main() {
    let key = std::env::args().nth(1);
    let url = meili_mock::start(key.as_deref());
    println!("meilisearch mock on {url}");
    loop {
        std::thread::park();
    }
}
