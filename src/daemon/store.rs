//! The checkpoint store a daemon's programs share: the SQLite file, or a PostgreSQL database.

use std::sync::Arc;

use super::config::DaemonConfig;
use super::error::DaemonError;
use crate::engine::{PersistError, Persister, SqlitePersister};

/// Opens the configured store for a program in `role` (a worker, the command line), as the
/// program names itself to others that find its processes held.
pub(crate) fn open(config: &DaemonConfig, role: &str) -> Result<Arc<dyn Persister>, DaemonError> {
    let failed = |source: PersistError| DaemonError::Store {
        at: config.store_shown(),
        source,
    };
    match &config.store_url {
        None => Ok(Arc::new(
            SqlitePersister::builder(&config.store)
                .leases(true)
                .owner_name(owner_name(config, role))
                .open()
                .map_err(failed)?,
        )),
        Some(url) => open_postgres(config, url, role).map_err(failed),
    }
}

/// How a program names itself to others that find its processes held.
fn owner_name(config: &DaemonConfig, role: &str) -> String {
    format!(
        "{} {role} on {}, pid {}",
        config.prefix,
        crate::engine::persist::lease::host_name(),
        std::process::id()
    )
}

#[cfg(feature = "postgres")]
fn open_postgres(
    config: &DaemonConfig,
    url: &str,
    role: &str,
) -> Result<Arc<dyn Persister>, PersistError> {
    let store = crate::engine::PostgresPersister::builder(url)
        .schema(config.store_schema.clone())
        .owner_name(owner_name(config, role))
        .connect()?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_: &DaemonConfig, _: &str, _: &str) -> Result<Arc<dyn Persister>, PersistError> {
    Err(PersistError::store_failed(
        "store_url names a PostgreSQL database, but this program was built without the \
         runtime-thread feature `postgres`",
    ))
}
