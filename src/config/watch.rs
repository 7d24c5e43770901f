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
        // Reading the file (as the task below does after every event) is an event too: counting
        // opens and reads made the watch re-read routes.toml 50 times a second, forever.
        let relevant = event.is_ok_and(|event| {
            !is_read_only(&event.kind)
                && event.paths.iter().any(|p| {
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

fn is_read_only(kind: &notify::EventKind) -> bool {
    use notify::event::{AccessKind, AccessMode, EventKind};
    matches!(
        kind,
        EventKind::Access(
            AccessKind::Read
                | AccessKind::Open(_)
                | AccessKind::Close(AccessMode::Read | AccessMode::Execute)
        )
    )
}

#[cfg(test)]
mod tests {
    use notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, EventKind, ModifyKind, RenameMode,
    };

    #[test]
    fn reads_of_the_file_are_not_changes_but_writes_and_swaps_are() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
        ] {
            assert!(super::is_read_only(&kind), "{kind:?}");
        }
        for kind in [
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::To)),
            EventKind::Create(CreateKind::File),
        ] {
            assert!(!super::is_read_only(&kind), "{kind:?}");
        }
    }
}
