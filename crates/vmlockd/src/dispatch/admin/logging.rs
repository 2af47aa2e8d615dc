//! Logging: the outputs and filters of `crate::logging`, read and changed
//! live. Opening a new file output runs on the blocking pool (the file may
//! be on a slow filesystem).

use vmlock_proto::admin::Ret;
use vmlock_proto::error::{WireError, code, domain};

use super::params::{Failure, check_flags, log_error};

pub(super) fn get_outputs(flags: u32) -> Result<Ret, Failure> {
    check_flags(flags, "adminConnectGetLoggingOutputs")?;
    let (outputs, noutputs) = crate::logging::handle()
        .map_or((String::new(), 0), crate::logging::LogHandle::outputs_text);
    Ok(Ret::LoggingOutputs { outputs, noutputs })
}

pub(super) fn get_filters(flags: u32) -> Result<Ret, Failure> {
    check_flags(flags, "adminConnectGetLoggingFilters")?;
    let (filters, nfilters) =
        crate::logging::handle().map_or((None, 0), crate::logging::LogHandle::filters_text);
    Ok(Ret::LoggingFilters { filters, nfilters })
}

pub(super) async fn set_outputs(outputs: Option<String>, flags: u32) -> Result<Ret, Failure> {
    check_flags(flags, "adminConnectSetLoggingOutputs")?;
    if let Some(h) = crate::logging::handle() {
        // Opening a file output may touch a slow filesystem.
        let text = outputs.clone();
        tokio::task::spawn_blocking(move || h.set_outputs(text.as_deref()))
            .await
            .map_err(|e| {
                Box::new(WireError::new(
                    code::INTERNAL_ERROR,
                    domain::ADMIN,
                    &format!("log output change failed: {e}"),
                ))
            })?
            .map_err(log_error)?;
    }
    tracing::info!(
        outputs = outputs.as_deref().unwrap_or(""),
        "log outputs changed"
    );
    Ok(Ret::Void)
}

pub(super) fn set_filters(filters: Option<String>, flags: u32) -> Result<Ret, Failure> {
    check_flags(flags, "adminConnectSetLoggingFilters")?;
    if let Some(h) = crate::logging::handle() {
        h.set_filters(filters.as_deref()).map_err(log_error)?;
    }
    tracing::info!(
        filters = filters.as_deref().unwrap_or(""),
        "log filters changed"
    );
    Ok(Ret::Void)
}
