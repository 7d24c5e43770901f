//! Noticing that routes.toml changed: a watch on its directory (a Kubernetes ConfigMap update
//! swaps the `..data` symlink and deletes the old version, which silently ends a watch on the
//! file itself), debounced, and only when the bytes really changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the watch alive; drop it to stop watching.
pub struct ConfigWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Watches `path`'s directory; `changed` receives one message per settled change of the
/// file's content.
pub fn watch(path: &Path, debounce: Duration) -> notify::Result<(ConfigWatch, mpsc::Receiver<()>)> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let name = path.file_name().map(|n| n.to_os_string());
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Other files in the directory (logs, say) are none of our business.
        let relevant = event.is_ok_and(|event| {
            event.paths.iter().any(|p| {
                let file = p.file_name();
                file == name.as_deref() || file.is_some_and(|f| f == "..data")
            })
        });
        if relevant {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let (changed_tx, changed_rx) = mpsc::channel(1);
    let file = path.to_path_buf();
    // Read now, not in the task: a change between this call and the task's first poll must
    // still count as a change.
    let mut last = std::fs::read(&file).ok();
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Editors and ConfigMap swaps write in several steps: let them settle.
            tokio::time::sleep(debounce).await;
            while raw_rx.try_recv().is_ok() {}
            let now = std::fs::read(&file).ok();
            if now.is_some() && now != last {
                last = now;
                if changed_tx.send(()).await.is_err() {
                    break;
                }
            }
        }
    });
    Ok((ConfigWatch { _watcher: watcher }, changed_rx))
}
