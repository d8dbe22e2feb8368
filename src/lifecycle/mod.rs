//! The data's lifecycle beyond serving: commands that copy, move or check a deployment's data, run from the
//! command line (`src/main.rs`), each in its own module.

pub mod backup;
