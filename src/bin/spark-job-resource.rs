//! `spark-job-resource`: the `Custom::SparkJob` CloudFormation resource as a Lambda function
//! (provided.al2023, the binary packaged as `bootstrap`). Settings come from the environment;
//! each invocation is answered on its `ResponseURL` before the function returns.

use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use spark_activity_worker::cfn::Answerer;
use spark_activity_worker::config::LogFormat;
use spark_activity_worker::resource::{self, Setup};
use spark_activity_worker::telemetry;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let setup = Setup::from_env();
    let filter = std::env::var("SPARK_ACTIVITY_WORKER_LOG_LEVEL").unwrap_or_else(|_| "info".into());
    telemetry::init(LogFormat::Text, &filter);
    if let Some(msg) = setup.error() {
        // Not fatal: every request is answered FAILED with this, so no stack waits an hour.
        tracing::error!(error = %msg, "misconfigured");
    }
    let answerer = Answerer::new()?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        let (setup, answerer) = (&setup, &answerer);
        async move {
            resource::invoked(setup, answerer, event.payload, event.context.deadline).await
        }
    }))
    .await
}
