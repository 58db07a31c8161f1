//! `courier upload` and `courier download`, with progress bars. Both resume:
//! an upload's id is kept in the profile (`uploads/<sha256>`) until it is
//! finished, so running the same upload again sends only the missing parts;
//! a download continues `OUT.part`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use courier_client::media::Upload;
use indicatif::{ProgressBar, ProgressStyle};

use crate::user::{ProfileDir, UserConn, client};

#[derive(Args, Debug)]
pub struct UploadArgs {
    file: PathBuf,
    /// The name it is stored under (default: the file's name).
    #[arg(long)]
    name: Option<String>,
    /// Its MIME type (default: from the extension).
    #[arg(long)]
    mime: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: UserConn,
}

#[derive(Args, Debug)]
pub struct DownloadArgs {
    /// The file id `courier upload` printed.
    file_id: u64,
    /// Where to write it.
    out: PathBuf,
    /// For a file somebody else posted: the chat it was posted in (see
    /// `courier history`), with `--message`.
    #[arg(long, requires = "message")]
    chat: Option<u64>,
    /// The message that carries the file.
    #[arg(long, requires = "chat")]
    message: Option<u64>,
    /// Only an image's preview: `s` (100 px) or `m` (320 px).
    #[arg(long, value_parser = ["s", "m"])]
    thumb: Option<String>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: UserConn,
}

fn bar(len: u64) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}").unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

pub fn file_json(f: &courier_client::pb::File) -> serde_json::Value {
    let thumbs: Vec<_> = f.thumbs.iter().map(|t| serde_json::json!({"kind": t.kind, "width": t.width, "height": t.height, "size": t.size})).collect();
    serde_json::json!({"id": f.id, "size": f.size, "sha256": hex::encode(&f.sha256), "name": f.name, "mime": f.mime, "thumbs": thumbs})
}

pub async fn upload(profile: &ProfileDir, a: UploadArgs) -> Result<()> {
    let (c, _, _) = client(profile, &a.conn, true).await?;
    let f = upload_file(profile, &c, &a.file, a.name, a.mime).await?;
    if a.json {
        println!("{}", file_json(&f));
    } else {
        println!("uploaded {} ({} bytes) as file {}", f.name, f.size, f.id);
    }
    Ok(())
}

/// Uploads a file with a progress bar, resuming an earlier interrupted
/// upload of the same bytes.
pub async fn upload_file(profile: &ProfileDir, c: &courier_client::Client, file: &std::path::Path, name: Option<String>, mime: Option<String>) -> Result<courier_client::pb::File> {
    let path = file.to_path_buf();
    let mut u = tokio::task::spawn_blocking(move || Upload::prepare(&path, 0)).await??;
    // The same bytes again resume the upload that was interrupted.
    let state = profile.path(&format!("uploads/{}", hex::encode(u.sha256)));
    u.upload_id = match std::fs::read_to_string(&state).ok().and_then(|s| s.trim().parse().ok()) {
        Some(id) => id,
        None => {
            let id = rand::random::<u64>() >> 1;
            std::fs::create_dir_all(state.parent().expect("uploads dir")).context("create the profile's uploads directory")?;
            std::fs::write(&state, id.to_string())?;
            id
        }
    };
    if let Some(n) = name {
        u.name = n;
    }
    if let Some(m) = mime {
        u.mime = m;
    }
    let pb = bar(u.size);
    let f = c.upload(&u, |n| pb.set_position(n)).await;
    pb.finish_and_clear();
    let f = f?;
    let _ = std::fs::remove_file(&state);
    Ok(f)
}

pub async fn download(profile: &ProfileDir, a: DownloadArgs) -> Result<()> {
    let (c, _, _) = client(profile, &a.conn, true).await?;
    let pb = bar(0);
    let at = courier_client::FileLocation {
        file_id: a.file_id,
        chat_id: a.chat.unwrap_or(0),
        message_id: a.message.unwrap_or(0),
        thumb: a.thumb.as_deref().and_then(|t| t.chars().next()),
    };
    let f = c
        .download(at, &a.out, |n, size| {
            pb.set_length(size);
            pb.set_position(n);
        })
        .await;
    pb.finish_and_clear();
    let f = f?;
    if a.json {
        println!("{}", file_json(&f));
    } else {
        println!("downloaded file {} ({} bytes) to {}", f.id, f.size, a.out.display());
    }
    Ok(())
}
