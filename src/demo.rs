//! `contactq demo` (being written).

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DemoError(pub String);

pub async fn run() -> Result<(), DemoError> {
    Err(DemoError("the demo is not built yet".into()))
}
