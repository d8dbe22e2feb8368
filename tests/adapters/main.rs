//! Adapter conformance tests, one binary for the area: each port's embedded and distributed adapters run
//! the same generic test functions. Distributed cases talk to the real services of `scripts/services.sh`
//! (DynamoDB Local at `ORDERFLOW_TEST_DYNAMODB`, default http://127.0.0.1:8000) and are skipped, with a line
//! saying so, when the service is not reachable.

mod audit;
mod dynamo_revenue;
mod dynamo_store;
mod feed;
mod kafka_feed;
mod kinesis_feed;
mod lease;
mod meili_search;
mod support;
